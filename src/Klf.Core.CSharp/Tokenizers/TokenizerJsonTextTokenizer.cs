namespace Klf.Tokenizers;

/// <summary>
/// A BPE <c>tokenizer.json</c>, byte-level (GPT-2, Llama 3, Qwen, SmolLM style) or
/// SentencePiece-style (Llama 2, TinyLlama): normalizer, the file's pre-tokenizers (Split regex read
/// from the file, ByteLevel, Metaspace), then BPE. Added tokens are
/// matched by <see cref="AddedTokensTextTokenizer"/> around it. Create through <see cref="TokenizerLoader"/>.
/// </summary>
/// <remarks>
/// Encoded and decoded by Microsoft.ML.Tokenizers' <c>BpeTokenizer</c>, one pre-token at a time;
/// Klf normalizes, pre-tokenizes and applies <c>ignore_merges</c> and <c>byte_fallback</c>, which the
/// library lacks (see docs/tokenizers.md). The post-processor (e.g. Llama 3's template adding
/// <c>&lt;|begin_of_text|&gt;</c>) is not applied: pass <c>addBos</c> to <see cref="Encode"/>.
/// </remarks>
public sealed class TokenizerJsonTextTokenizer : ITextTokenizer
{
    private readonly TokenizerJsonFile.Parsed _parsed;
    private readonly HashSet<int> _special;

    internal TokenizerJsonTextTokenizer(TokenizerJsonFile.Parsed parsed, string source, SpecialTokenIds ids)
    {
        _parsed = parsed;
        VocabSize = parsed.Encoder.VocabSize;
        Name = $"{Kind} ({source}, {VocabSize} ids)";
        BosId = ids.Bos;
        EosId = ids.Eos;
        PadId = ids.Pad;
        UnkId = ids.Unk;
        _special = new HashSet<int> { ids.Eos, ids.Pad, ids.Unk };
        if (ids.Bos is int b) _special.Add(b);
    }

    /// <inheritdoc/>
    public TokenizerKind Kind => _parsed.ByteLevel ? TokenizerKind.ByteLevelBpe : TokenizerKind.SentencePieceBpe;

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

    /// <summary>
    /// The underlying Microsoft.ML.Tokenizers object, which <see cref="Encode"/> feeds one pre-token at
    /// a time. On its own it lacks <c>ignore_merges</c> and <c>byte_fallback</c>; use <see cref="Encode"/> for ids.
    /// </summary>
    public Microsoft.ML.Tokenizers.BpeTokenizer Inner => _parsed.Encoder.Inner;

    /// <summary>The pre-tokens <see cref="Encode"/> runs BPE on, after normalization and before byte mapping (for inspection and tests).</summary>
    /// <param name="text">The text to split.</param>
    public IReadOnlyList<string> PreTokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _parsed.PreTokenize(_parsed.Normalize(text));
    }

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        foreach (string piece in PreTokenize(text)) _parsed.Encoder.EncodePreToken(piece, ids);
        int? bos = addBos ? BosId ?? throw new InvalidOperationException($"{Name} has no beginning-of-sequence token; encode without addBos.") : null;
        return TokenIds.Frame(ids, bos, addEos ? EosId : null);
    }

    /// <inheritdoc/>
    public string Decode(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {VocabSize}.");
        }
        string text = _parsed.Encoder.Decode(ids.Where(id => !_special.Contains(id)));
        return _parsed.StripLeadingSpace && text.StartsWith(' ') ? text[1..] : text;
    }
}
