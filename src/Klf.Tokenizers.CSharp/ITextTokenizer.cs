namespace Klf.Tokenizers;

/// <summary>The tokenizer algorithms Klf can load from a model folder.</summary>
public enum TokenizerKind
{
    /// <summary>SentencePiece BPE (<c>tokenizer.model</c>, or a SentencePiece-style <c>tokenizer.json</c>), as LLaMA uses.</summary>
    SentencePieceBpe,
    /// <summary>SentencePiece Unigram (<c>spiece.model</c>), as T5 uses.</summary>
    SentencePieceUnigram,
    /// <summary>GPT-2 style byte-level BPE (<c>vocab.json</c> + <c>merges.txt</c>, or a byte-level <c>tokenizer.json</c>).</summary>
    ByteLevelBpe,
    /// <summary>BERT-family WordPiece (<c>vocab.txt</c>), as BERT, MiniLM and other sentence encoders use.</summary>
    WordPiece,
}

/// <summary>
/// Text to token ids and back, with the special ids a model needs to build batches.
/// Implementations are thin wrappers over Microsoft.ML.Tokenizers; they are immutable and
/// safe to share between threads.
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Which algorithm this is.</summary>
    TokenizerKind Kind { get; }

    /// <summary>A short human-readable description (kind and the file it was loaded from).</summary>
    string Name { get; }

    /// <summary>Number of ids (the embedding rows a model needs at least): all pieces, including special ones.</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or <c>null</c> when the vocabulary has none (T5).</summary>
    int? BosId { get; }

    /// <summary>End-of-sequence id.</summary>
    int EosId { get; }

    /// <summary>
    /// Padding id. Models without a pad piece (LLaMA) get a documented substitute; see
    /// <see cref="TokenizerLoader"/>.
    /// </summary>
    int PadId { get; }

    /// <summary>Id of the unknown piece.</summary>
    int UnkId { get; }

    /// <summary>
    /// Encodes <paramref name="text"/> to ids. Special-token text inside <paramref name="text"/>
    /// (e.g. the literal "&lt;/s&gt;") is treated as ordinary text, as SentencePiece does, unless the
    /// folder declares it as an added token (<see cref="AddedTokensTextTokenizer"/>): then it maps to its id.
    /// </summary>
    /// <param name="text">The text to encode.</param>
    /// <param name="addBos">Prepend <see cref="BosId"/>; throws <see cref="InvalidOperationException"/> if there is none.</param>
    /// <param name="addEos">Append <see cref="EosId"/>.</param>
    /// <returns>A fresh array owned by the caller.</returns>
    int[] Encode(string text, bool addBos = false, bool addEos = false);

    /// <summary>Decodes ids to text, skipping special ids (bos, eos, pad and other control pieces).</summary>
    /// <param name="ids">Token ids; ids outside the vocabulary are an <see cref="ArgumentOutOfRangeException"/>.</param>
    string Decode(IReadOnlyList<int> ids);
}
