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
public sealed class SentencePieceTextTokenizer : ITextTokenizer
{
    private readonly SentencePieceTokenizer _inner;
    private readonly bool[] _isControl;
    private readonly Func<string, List<int>> _encode;

    internal SentencePieceTextTokenizer(SentencePieceModelFile model, SpecialTokenIds ids)
    {
        using (var stream = new MemoryStream(model.ForLibrary(), writable: false))
        {
            _inner = SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        Kind = model.Model == SentencePieceModelFile.ModelType.Bpe ? TokenizerKind.SentencePieceBpe : TokenizerKind.SentencePieceUnigram;
        _encode = Kind == TokenizerKind.SentencePieceBpe ? new SentencePieceBpeEncoder(model).Encode : new SentencePieceUnigramEncoder(model).Encode;
        Name = $"{Kind} ({Path.GetFileName(Path.GetDirectoryName(model.Path))}/{Path.GetFileName(model.Path)}, {model.Pieces.Count} pieces)";
        VocabSize = model.Pieces.Count;
        _isControl = model.Types.Select(t => t == SentencePieceModelFile.PieceType.Control).ToArray();
        foreach (int? id in new[] { ids.Bos, ids.Eos, ids.Pad })
        {
            if (id is int v && v < VocabSize) _isControl[v] = true;  // ids beyond the pieces are added tokens
        }
        BosId = ids.Bos;
        EosId = ids.Eos;
        PadId = ids.Pad;
        UnkId = ids.Unk;
    }

    /// <inheritdoc/>
    public TokenizerKind Kind { get; }

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
    /// The underlying Microsoft.ML.Tokenizers object, for APIs this wrapper does not expose. Its own
    /// encodings can differ from SentencePiece's (see the remarks); use <see cref="Encode"/> for ids.
    /// </summary>
    public SentencePieceTokenizer Inner => _inner;

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TokenIds.Frame(_encode(text), addBos ? BosOrThrow() : null, addEos ? EosId : null);
    }

    /// <inheritdoc/>
    public string Decode(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = new List<int>(ids.Count);
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {VocabSize}.");
            if (!_isControl[id]) kept.Add(id);
        }
        return _inner.Decode(kept, considerSpecialTokens: false);
    }

    private int BosOrThrow() =>
        BosId ?? throw new InvalidOperationException($"{Name} has no beginning-of-sequence token; encode without addBos.");
}

/// <summary>Small helpers shared by the tokenizer wrappers.</summary>
internal static class TokenIds
{
    /// <summary>Copies <paramref name="body"/> into a fresh array, with optional first and last ids.</summary>
    public static int[] Frame(IReadOnlyList<int> body, int? first, int? last)
    {
        int offset = first is null ? 0 : 1;
        var result = new int[body.Count + offset + (last is null ? 0 : 1)];
        if (first is int f) result[0] = f;
        for (int i = 0; i < body.Count; i++) result[offset + i] = body[i];
        if (last is int l) result[^1] = l;
        return result;
    }
}
