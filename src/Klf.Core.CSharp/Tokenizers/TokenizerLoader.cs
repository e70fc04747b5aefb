using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// Loads the tokenizer stored in a (Hugging Face style) model folder.
/// </summary>
/// <remarks>
/// Files are looked for in this order: <c>tokenizer.model</c> (SentencePiece, LLaMA),
/// <c>spiece.model</c> (SentencePiece, T5), then <c>vocab.json</c> with <c>merges.txt</c>
/// (GPT-2 byte-level BPE).
/// <para>Special ids come from <c>config.json</c> ids, then token strings in
/// <c>special_tokens_map.json</c> / <c>tokenizer_config.json</c>, then the defaults of the kind:</para>
/// <list type="bullet">
/// <item>SentencePiece: the ids stored in the model's trainer spec (T5: pad 0, eos 1, unk 2, no bos;
/// LLaMA: unk 0, bos 1, eos 2, no pad). A model without a pad id pads with its <b>unk</b> id: with
/// byte fallback unk never occurs in real encodings, and unlike eos it cannot be confused with a
/// real end of sequence when labels are masked by pad id.</item>
/// <item>Byte-level BPE: bos = eos = <c>&lt;|endoftext|&gt;</c>; unk = <c>&lt;unk&gt;</c> if present, else eos
/// (byte-level BPE never produces unk); pad = eos, the GPT-2 convention.</item>
/// </list>
/// </remarks>
public static class TokenizerLoader
{
    /// <summary>The files <see cref="FromFolder"/> looks for, in order.</summary>
    public static IReadOnlyList<string> KnownFiles { get; } = ["tokenizer.model", "spiece.model", "vocab.json + merges.txt"];

    /// <summary>Loads the tokenizer in <paramref name="folder"/>.</summary>
    /// <param name="folder">A model folder.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder holds none of <see cref="KnownFiles"/>.</exception>
    /// <exception cref="InvalidDataException">A tokenizer or config file is corrupt; the message names it.</exception>
    public static ITextTokenizer FromFolder(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        string full = Path.GetFullPath(folder);
        if (!Directory.Exists(full))
            throw new DirectoryNotFoundException($"Tokenizer folder '{full}' does not exist (looked for {string.Join(", ", KnownFiles)}).");

        foreach (string name in new[] { "tokenizer.model", "spiece.model" })
        {
            string path = Path.Combine(full, name);
            if (File.Exists(path)) return FromSentencePieceModel(path, SpecialTokenConfig.Read(full));
        }

        string vocab = Path.Combine(full, "vocab.json"), merges = Path.Combine(full, "merges.txt");
        if (File.Exists(vocab) && File.Exists(merges)) return FromByteLevelBpe(vocab, merges, SpecialTokenConfig.Read(full));
        if (File.Exists(vocab) || File.Exists(merges))
            throw new FileNotFoundException($"Tokenizer folder '{full}' has only one of vocab.json and merges.txt; byte-level BPE needs both.");

        throw new FileNotFoundException($"Tokenizer folder '{full}' holds no tokenizer: looked for {string.Join(", ", KnownFiles)}.");
    }

    /// <summary>Loads a SentencePiece <c>.model</c> file on its own (special ids from the model only).</summary>
    /// <param name="path">A SentencePiece model file.</param>
    /// <exception cref="InvalidDataException">The file is not a SentencePiece model; the message names it.</exception>
    public static ITextTokenizer FromSentencePieceFile(string path) =>
        FromSentencePieceModel(Path.GetFullPath(path), new SpecialTokenConfig());

    private static SentencePieceTextTokenizer FromSentencePieceModel(string path, SpecialTokenConfig config)
    {
        var model = SentencePieceModelFile.Parse(File.ReadAllBytes(path), path);
        var pieceIds = new Dictionary<string, int>();
        for (int i = model.Pieces.Count - 1; i >= 0; i--) pieceIds[model.Pieces[i]] = i;
        int? Lookup(string token) => pieceIds.TryGetValue(token, out int id) ? id : null;
        var ids = config.ResolveAll(Lookup, model.Pieces.Count, path,
            bos: model.BosId >= 0 ? model.BosId : null,
            eos: model.EosId >= 0 ? model.EosId : null,
            unk: model.UnkId,
            padFallback: partial => partial.Unk,
            pad: model.PadId >= 0 ? model.PadId : null);
        try
        {
            return new SentencePieceTextTokenizer(model, ids);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IndexOutOfRangeException or FormatException)
        {
            throw new InvalidDataException($"Microsoft.ML.Tokenizers could not load '{path}': {e.Message}", e);
        }
    }

    private static ByteLevelBpeTextTokenizer FromByteLevelBpe(string vocabPath, string mergesPath, SpecialTokenConfig config)
    {
        BpeTokenizer inner;
        try
        {
            inner = BpeTokenizer.Create(new BpeOptions(vocabPath, mergesPath)
            {
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(ByteLevelBpeTextTokenizer.Gpt2Split, specialTokens: null),
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or System.Text.Json.JsonException)
        {
            throw new InvalidDataException($"Could not load byte-level BPE from '{vocabPath}' and '{mergesPath}': {e.Message}", e);
        }
        int? Lookup(string token) => inner.Vocabulary.TryGetValue(token, out int id) ? id : null;
        int vocabSize = inner.Vocabulary.Count == 0 ? 0 : inner.Vocabulary.Values.Max() + 1;
        int? endOfText = Lookup("<|endoftext|>");
        var ids = config.ResolveAll(Lookup, vocabSize, vocabPath,
            bos: endOfText,
            eos: endOfText,
            unk: Lookup("<unk>") ?? config.Resolve("eos", Lookup, endOfText),
            padFallback: partial => partial.Eos,
            pad: null);
        return new ByteLevelBpeTextTokenizer(inner, Path.GetFileName(Path.GetDirectoryName(vocabPath)) + "/vocab.json", ids);
    }
}
