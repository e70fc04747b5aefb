using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// A SentencePiece model (BPE as in LLaMA, Unigram as in T5). Encodings equal
/// <c>spm_encode --output_format=id</c>. Create through <see cref="TokenizerLoader"/>.
/// </summary>
/// <remarks>
/// Decoding is Microsoft.ML.Tokenizers' <see cref="SentencePieceTokenizer"/>. Encoding is not:
/// tested against <c>spm_encode</c> on real text, the library (2.0.1, and still 3.0.0: see
/// docs/tokenizers.md) departs from SentencePiece in
/// ways that change ids, so encoding follows SentencePiece's own algorithms here
/// (<c>SentencePieceTextNormalization</c>, <c>SentencePieceBpeEncoder</c>,
/// <c>SentencePieceUnigramEncoder</c>, each documenting the departure it corrects):
/// <list type="bullet">
/// <item>BPE: normalization skips the model's character map and drops one-character input;
/// merge ties go to the rightmost pair instead of the leftmost.</item>
/// <item>Unigram: exact ties between segmentations are settled differently; a run of unknown
/// characters gives one unknown id per character instead of one.</item>
/// <item>Models without a BOS piece (T5) crash the library's Unigram constructor; the bytes it is
/// given name a present control piece instead (see <c>SentencePieceModelFile.ForLibrary</c>).</item>
/// </list>
/// </remarks>
public sealed class SentencePieceTextTokenizer : TextTokenizer
{
    private readonly SentencePieceTokenizer _inner;
    private readonly bool[] _isControl;
    private readonly SentencePieceEncoder _encoder;

    internal SentencePieceTextTokenizer(SentencePieceModelFile model, SpecialTokenIds ids)
        : base(KindOf(model), $"{KindOf(model)} ({Path.GetFileName(Path.GetDirectoryName(model.Path))}/{Path.GetFileName(model.Path)}, {model.Pieces.Count} pieces)",
               model.Pieces.Count, ids)
    {
        using (var stream = new MemoryStream(model.ForLibrary(), writable: false))
        {
            _inner = SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        _encoder = Kind == TokenizerKind.SentencePieceBpe ? new SentencePieceBpeEncoder(model) : new SentencePieceUnigramEncoder(model);
        _isControl = model.Types.Select(t => t == SentencePieceModelFile.PieceType.Control).ToArray();
        foreach (int? id in new[] { ids.Bos, ids.Eos, ids.Pad })
        {
            if (id is int v && v < VocabSize) _isControl[v] = true;  // ids beyond the pieces are added tokens
        }
    }

    private static TokenizerKind KindOf(SentencePieceModelFile model) =>
        model.Model == SentencePieceModelFile.ModelType.Bpe ? TokenizerKind.SentencePieceBpe : TokenizerKind.SentencePieceUnigram;

    /// <summary>
    /// The underlying Microsoft.ML.Tokenizers object, for APIs this wrapper does not expose. Its own
    /// encodings can differ from SentencePiece's (see the remarks); use <see cref="TextTokenizer.Encode"/> for ids.
    /// </summary>
    public SentencePieceTokenizer Inner => _inner;

    private protected override IReadOnlyList<int> EncodeText(string text) => _encoder.Encode(text);

    /// <summary>Control pieces (and the configured BOS, EOS and pad) are dropped; the unknown piece decodes as the library spells it.</summary>
    private protected override bool SkippedInDecode(int id) => _isControl[id];

    private protected override string DecodeKept(IReadOnlyList<int> ids) => _inner.Decode(ids, considerSpecialTokens: false);
}
