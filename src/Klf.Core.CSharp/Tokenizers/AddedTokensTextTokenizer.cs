using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// A tokenizer plus Hugging Face added tokens: their literal strings are found first (leftmost,
/// longest) and never split; the text between them goes to the inner tokenizer. Ids beyond the inner
/// vocabulary (T5's <c>&lt;extra_id_N&gt;</c>, chat tokens) count in <see cref="VocabSize"/>.
/// Create through <see cref="TokenizerLoader"/>.
/// </summary>
/// <remarks>
/// HF's per-token options <c>lstrip</c>, <c>rstrip</c>, <c>single_word</c> and <c>normalized</c> are not
/// applied: every added token matches its exact content anywhere.
/// </remarks>
public sealed class AddedTokensTextTokenizer : ITextTokenizer
{
    private readonly ITextTokenizer _inner;
    private readonly Dictionary<int, AddedToken> _byId = new();
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;
    private readonly HashSet<int> _skipped;

    internal AddedTokensTextTokenizer(ITextTokenizer inner, IReadOnlyList<AddedToken> added, SpecialTokenIds ids)
    {
        _inner = inner;
        foreach (var t in added) _byId[t.Id] = t;
        AddedTokens = _byId.Values.OrderBy(t => t.Id).ToList();
        // Longest first, so that the first candidate that matches is the longest.
        _byFirstChar = _byId.Values
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        VocabSize = Math.Max(inner.VocabSize, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);
        Name = $"{inner.Name} + {added.Count} added tokens, {VocabSize} ids";
        BosId = ids.Bos;
        EosId = ids.Eos;
        PadId = ids.Pad;
        UnkId = ids.Unk;
        _skipped = new HashSet<int>(_byId.Values.Where(t => t.Special).Select(t => t.Id)) { ids.Eos, ids.Pad };
        if (ids.Bos is int b) _skipped.Add(b);
    }

    /// <inheritdoc/>
    public TokenizerKind Kind => _inner.Kind;

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int EosId { get; }

    /// <inheritdoc/>
    public int PadId { get; }

    /// <inheritdoc/>
    public int UnkId { get; }

    /// <summary>The tokenizer that encodes the text between added tokens.</summary>
    public ITextTokenizer Inner => _inner;

    /// <summary>The added tokens, by id.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        int gapStart = 0;
        for (int pos = 0; pos < text.Length;)
        {
            if (MatchAt(text, pos) is AddedToken token)
            {
                if (pos > gapStart) ids.AddRange(_inner.Encode(text[gapStart..pos]));
                ids.Add(token.Id);
                pos += token.Content.Length;
                gapStart = pos;
            }
            else
            {
                pos++;
            }
        }
        if (gapStart < text.Length) ids.AddRange(_inner.Encode(gapStart == 0 ? text : text[gapStart..]));
        int? bos = addBos ? BosId ?? throw new InvalidOperationException($"{Name} has no beginning-of-sequence token; encode without addBos.") : null;
        return TokenIds.Frame(ids, bos, addEos ? EosId : null);
    }

    /// <inheritdoc/>
    /// <remarks>Special added tokens are skipped; other added tokens decode to their literal text.</remarks>
    public string Decode(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var text = new StringBuilder();
        var segment = new List<int>();
        void Flush()
        {
            if (segment.Count > 0) text.Append(_inner.Decode(segment));
            segment.Clear();
        }
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {VocabSize}.");
            if (_skipped.Contains(id)) continue;
            if (_byId.TryGetValue(id, out var token))
            {
                Flush();
                text.Append(token.Content);
            }
            else if (id < _inner.VocabSize)
            {
                segment.Add(id);
            }
            // An id between the inner vocabulary and the highest added id that names no token decodes to nothing.
        }
        Flush();
        return text.ToString();
    }

    private AddedToken? MatchAt(string text, int pos)
    {
        if (!_byFirstChar.TryGetValue(text[pos], out var candidates)) return null;
        foreach (var t in candidates)
        {
            if (text.AsSpan(pos).StartsWith(t.Content, StringComparison.Ordinal)) return t;
        }
        return null;
    }
}
