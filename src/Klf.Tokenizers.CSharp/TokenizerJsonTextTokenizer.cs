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
/// <c>&lt;|begin_of_text|&gt;</c>) is not applied: pass <c>addBos</c> to <see cref="TextTokenizer.Encode"/>.
/// </remarks>
public sealed class TokenizerJsonTextTokenizer : TextTokenizer
{
    private readonly TokenizerJsonFile.Parsed _parsed;

    internal TokenizerJsonTextTokenizer(TokenizerJsonFile.Parsed parsed, string source, SpecialTokenIds ids)
        : base(KindOf(parsed), $"{KindOf(parsed)} ({source}, {parsed.Encoder.VocabSize} ids)", parsed.Encoder.VocabSize, ids)
    {
        _parsed = parsed;
    }

    private static TokenizerKind KindOf(TokenizerJsonFile.Parsed parsed) =>
        parsed.ByteLevel ? TokenizerKind.ByteLevelBpe : TokenizerKind.SentencePieceBpe;

    /// <summary>
    /// The underlying Microsoft.ML.Tokenizers object, which <see cref="TextTokenizer.Encode"/> feeds one pre-token at
    /// a time. On its own it lacks <c>ignore_merges</c> and <c>byte_fallback</c>; use <see cref="TextTokenizer.Encode"/> for ids.
    /// </summary>
    public Microsoft.ML.Tokenizers.BpeTokenizer Inner => _parsed.Encoder.Inner;

    /// <summary>The pre-tokens encoding runs BPE on, after normalization and before byte mapping (for inspection and tests).</summary>
    /// <param name="text">The text to split.</param>
    public IReadOnlyList<string> PreTokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _parsed.PreTokenize(_parsed.Normalize(text));
    }

    private protected override IReadOnlyList<int> EncodeText(string text)
    {
        var ids = new List<int>();
        foreach (string piece in PreTokenize(text)) _parsed.Encoder.EncodePreToken(piece, ids);
        return ids;
    }

    private protected override string DecodeKept(IReadOnlyList<int> ids)
    {
        string text = _parsed.Encoder.Decode(ids);
        return _parsed.StripLeadingSpace && text.StartsWith(' ') ? text[1..] : text;
    }
}
