using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// GPT-2 style byte-level BPE (<c>vocab.json</c> + <c>merges.txt</c>) over Microsoft.ML.Tokenizers'
/// <see cref="CodeGenTokenizer"/>, which implements exactly that scheme: GPT-2's pre-tokenizer regex,
/// bytes mapped to printable characters (a space becomes 'Ġ') and rank-ordered merges.
/// No prefix space is added. Create through <see cref="TokenizerLoader"/>.
/// </summary>
public sealed class ByteLevelBpeTextTokenizer : ITextTokenizer
{
    private readonly CodeGenTokenizer _inner;
    private readonly HashSet<int> _special;

    internal ByteLevelBpeTextTokenizer(CodeGenTokenizer inner, string source, SpecialTokenIds ids)
    {
        _inner = inner;
        VocabSize = inner.Vocabulary.Count == 0 ? 0 : inner.Vocabulary.Values.Max() + 1;
        Name = $"{Kind} ({source}, {VocabSize} ids)";
        BosId = ids.Bos;
        EosId = ids.Eos;
        PadId = ids.Pad;
        UnkId = ids.Unk;
        _special = new HashSet<int> { ids.Eos, ids.Pad, ids.Unk };
        if (ids.Bos is int b) _special.Add(b);
    }

    /// <inheritdoc/>
    public TokenizerKind Kind => TokenizerKind.ByteLevelBpe;

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

    /// <summary>The underlying Microsoft.ML.Tokenizers object, for APIs this wrapper does not expose.</summary>
    public CodeGenTokenizer Inner => _inner;

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> body = _inner.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false);
        int? bos = addBos ? BosId ?? throw new InvalidOperationException($"{Name} has no beginning-of-sequence token; encode without addBos.") : null;
        return TokenIds.Frame(body, bos, addEos ? EosId : null);
    }

    /// <inheritdoc/>
    public string Decode(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = new List<int>(ids.Count);
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {VocabSize}.");
            if (!_special.Contains(id)) kept.Add(id);
        }
        return _inner.Decode(kept, hasPrefixSpace: false, considerSpecialTokens: false) ?? "";
    }
}
