using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// A tokenizer plus Hugging Face added tokens: their literal strings are found first (leftmost,
/// longest) and never split; the text between them goes to the inner tokenizer. Ids beyond the inner
/// vocabulary (T5's <c>&lt;extra_id_N&gt;</c>, chat tokens) count in <see cref="TextTokenizer.VocabSize"/>.
/// Create through <see cref="TokenizerLoader"/>.
/// </summary>
/// <remarks>
/// HF's per-token options <c>lstrip</c>, <c>rstrip</c>, <c>single_word</c> and <c>normalized</c> are not
/// applied: every added token matches its exact content anywhere.
/// </remarks>
public sealed class AddedTokensTextTokenizer : TextTokenizer
{
    private readonly ITextTokenizer _inner;
    private readonly Dictionary<int, AddedToken> _byId;
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;
    private readonly HashSet<int> _skipped;

    internal AddedTokensTextTokenizer(ITextTokenizer inner, IReadOnlyList<AddedToken> added, SpecialTokenIds ids)
        : base(inner.Kind, $"{inner.Name} + {added.Count} added tokens, {SizeOf(inner, added)} ids", SizeOf(inner, added), ids)
    {
        _inner = inner;
        _byId = new Dictionary<int, AddedToken>();
        foreach (var t in added) _byId[t.Id] = t;
        AddedTokens = _byId.Values.OrderBy(t => t.Id).ToList();
        // Longest first, so that the first candidate that matches is the longest.
        _byFirstChar = _byId.Values
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        _skipped = new HashSet<int>(_byId.Values.Where(t => t.Special).Select(t => t.Id)) { ids.Eos, ids.Pad };
        if (ids.Bos is int b) _skipped.Add(b);
    }

    private static int SizeOf(ITextTokenizer inner, IReadOnlyList<AddedToken> added) =>
        Math.Max(inner.VocabSize, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);

    /// <summary>The tokenizer that encodes the text between added tokens.</summary>
    public ITextTokenizer Inner => _inner;

    /// <summary>The added tokens, by id.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    private protected override IReadOnlyList<int> EncodeText(string text)
    {
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
        return ids;
    }

    /// <summary>Special added tokens, EOS, pad and BOS are dropped (the unknown piece is the inner tokenizer's to spell).</summary>
    private protected override bool SkippedInDecode(int id) => _skipped.Contains(id);

    /// <summary>Other added tokens decode to their literal text, the runs between them through the inner tokenizer.</summary>
    private protected override string DecodeKept(IReadOnlyList<int> ids)
    {
        var text = new StringBuilder();
        var segment = new List<int>();
        void Flush()
        {
            if (segment.Count > 0) text.Append(_inner.Decode(segment));
            segment.Clear();
        }
        foreach (int id in ids)
        {
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
