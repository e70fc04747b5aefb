using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// Loads the tokenizer stored in a (Hugging Face style) model folder.
/// </summary>
/// <remarks>
/// Files are looked for in this order: <c>tokenizer.model</c> (SentencePiece, LLaMA),
/// <c>spiece.model</c> (SentencePiece, T5), <c>vocab.txt</c> (WordPiece, BERT family: see
/// <see cref="WordPieceTextTokenizer"/>; a <c>tokenizer.json</c> beside it is not read), <c>tokenizer.json</c> (Hugging Face BPE, byte-level as
/// GPT-2, Llama 3, Qwen, SmolLM or SentencePiece-style as Llama 2), then <c>vocab.json</c> with
/// <c>merges.txt</c> (GPT-2 byte-level BPE). A SentencePiece model wins over a <c>tokenizer.json</c>
/// beside it (Llama 2 and T5 folders ship both; the <c>.model</c> is the reference, and T5's
/// <c>tokenizer.json</c> is Unigram, which is not supported in JSON); the <c>tokenizer.json</c> then
/// contributes only its added tokens. Unsupported <c>tokenizer.json</c> components are an error naming them.
/// <para>Added tokens (<c>tokenizer.json</c>'s <c>added_tokens</c>, <c>added_tokens.json</c>,
/// <c>tokenizer_config.json</c>'s <c>added_tokens_decoder</c>, T5's <c>&lt;extra_id_N&gt;</c>) wrap the
/// tokenizer in an <see cref="AddedTokensTextTokenizer"/>; see <see cref="AddedTokens"/>.</para>
/// <para>Special ids come from <c>config.json</c> ids, then token strings in
/// <c>special_tokens_map.json</c> / <c>tokenizer_config.json</c> (looked up among added tokens, then the
/// model's vocabulary), then the defaults of the kind:</para>
/// <list type="bullet">
/// <item>SentencePiece: the ids stored in the model's trainer spec (T5: pad 0, eos 1, unk 2, no bos;
/// LLaMA: unk 0, bos 1, eos 2, no pad). A model without a pad id pads with its <b>unk</b> id: with
/// byte fallback unk never occurs in real encodings, and unlike eos it cannot be confused with a
/// real end of sequence when labels are masked by pad id.</item>
/// <item>Byte-level BPE: eos = <c>&lt;|endoftext|&gt;</c> (for <c>tokenizer.json</c> also
/// <c>&lt;|end_of_text|&gt;</c> or <c>&lt;/s&gt;</c>); bos = eos (for <c>tokenizer.json</c>
/// <c>&lt;|begin_of_text|&gt;</c> or <c>&lt;s&gt;</c> first); unk = the model's <c>unk_token</c> or
/// <c>&lt;unk&gt;</c> if present, else eos (byte-level BPE never produces unk); pad = eos, the GPT-2 convention.</item>
/// </list>
/// </remarks>
public static class TokenizerLoader
{
    /// <summary>The files <see cref="FromFolder"/> looks for, in order.</summary>
    public static IReadOnlyList<string> KnownFiles { get; } = ["tokenizer.model", "spiece.model", "vocab.txt", "tokenizer.json", "vocab.json + merges.txt"];

    /// <summary>The names of the files that make up a tokenizer in a model folder (vocabularies and their configs).</summary>
    public static IReadOnlyList<string> FileNames { get; } =
        ["tokenizer.model", "spiece.model", "vocab.txt", "tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer_config.json", "special_tokens_map.json"];

    /// <summary>
    /// The tokenizer files <paramref name="folder"/> holds (full paths, in <see cref="FileNames"/> order):
    /// what to copy beside saved weights so the saved folder tokenizes as this one.
    /// </summary>
    public static IReadOnlyList<string> FilesIn(string folder) =>
        FileNames.Select(f => Path.Combine(folder, f)).Where(File.Exists).ToArray();

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
            if (File.Exists(path)) return FromSentencePieceModel(path, SpecialTokenConfig.Read(full), full);
        }

        string wordPiece = Path.Combine(full, "vocab.txt");
        if (File.Exists(wordPiece)) return FromWordPiece(wordPiece, full);

        string json = Path.Combine(full, "tokenizer.json");
        if (File.Exists(json)) return FromTokenizerJson(json, SpecialTokenConfig.Read(full), full);

        string vocab = Path.Combine(full, "vocab.json"), merges = Path.Combine(full, "merges.txt");
        if (File.Exists(vocab) && File.Exists(merges)) return FromByteLevelBpe(vocab, merges, SpecialTokenConfig.Read(full), full);
        if (File.Exists(vocab) || File.Exists(merges))
            throw new FileNotFoundException($"Tokenizer folder '{full}' has only one of vocab.json and merges.txt; byte-level BPE needs both.");

        throw new FileNotFoundException($"Tokenizer folder '{full}' holds no tokenizer: looked for {string.Join(", ", KnownFiles)}.");
    }

    /// <summary>Loads a SentencePiece <c>.model</c> file on its own (special ids from the model only).</summary>
    /// <param name="path">A SentencePiece model file.</param>
    /// <exception cref="InvalidDataException">The file is not a SentencePiece model; the message names it.</exception>
    public static ITextTokenizer FromSentencePieceFile(string path) =>
        FromSentencePieceModel(Path.GetFullPath(path), new SpecialTokenConfig(), folder: null);

    private static ITextTokenizer FromSentencePieceModel(string path, SpecialTokenConfig config, string? folder)
    {
        var model = SentencePieceModelFile.Parse(File.ReadAllBytes(path), path);
        var pieceIds = new Dictionary<string, int>();
        for (int i = model.Pieces.Count - 1; i >= 0; i--) pieceIds[model.Pieces[i]] = i;
        // tokenizer.json beside a .model contributes only its added tokens.
        var added = folder is null ? []
            : AddedTokens.Read(folder, AddedTokens.LoadJson(folder, "tokenizer.json"), model.Pieces.Count, isSentencePiece: true);
        var lookup = WithAdded(added, t => pieceIds.TryGetValue(t, out int id) ? id : null);
        var ids = config.ResolveAll(lookup, VocabSize(model.Pieces.Count, added), path,
            bos: model.BosId >= 0 ? model.BosId : null,
            eos: model.EosId >= 0 ? model.EosId : null,
            unk: model.UnkId,
            padFallback: partial => partial.Unk,
            pad: model.PadId >= 0 ? model.PadId : null);
        try
        {
            return WithAdded(new SentencePieceTextTokenizer(model, ids), added, ids);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IndexOutOfRangeException or FormatException)
        {
            throw new InvalidDataException($"Microsoft.ML.Tokenizers could not load '{path}': {e.Message}", e);
        }
    }

    private static ITextTokenizer FromWordPiece(string vocabPath, string folder)
    {
        var inner = WordPieceTextTokenizer.Load(vocabPath, folder);
        // BERT's own special tokens are matched inside the tokenizer; added tokens the folder declares beyond them wrap it.
        var specials = new HashSet<int> { inner.EosId, inner.PadId, inner.UnkId, inner.MaskId };
        if (inner.BosId is int cls) specials.Add(cls);
        var added = AddedTokens.Read(folder, null, inner.VocabSize, isSentencePiece: false).Where(t => !specials.Contains(t.Id)).ToList();
        var ids = new SpecialTokenIds(inner.BosId, inner.EosId, inner.PadId, inner.UnkId);
        return WithAdded(inner, added, ids);
    }

    private static ITextTokenizer FromByteLevelBpe(string vocabPath, string mergesPath, SpecialTokenConfig config, string folder)
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
        int vocabSize = inner.Vocabulary.Count == 0 ? 0 : inner.Vocabulary.Values.Max() + 1;
        var added = AddedTokens.Read(folder, null, vocabSize, isSentencePiece: false);
        var lookup = WithAdded(added, t => inner.Vocabulary.TryGetValue(t, out int id) ? id : null);
        int? endOfText = lookup("<|endoftext|>");
        var ids = config.ResolveAll(lookup, VocabSize(vocabSize, added), vocabPath,
            bos: endOfText,
            eos: endOfText,
            unk: lookup("<unk>") ?? config.Resolve("eos", lookup, endOfText),
            padFallback: partial => partial.Eos,
            pad: null);
        return WithAdded(new ByteLevelBpeTextTokenizer(inner, Path.GetFileName(Path.GetDirectoryName(vocabPath)) + "/vocab.json", ids), added, ids);
    }

    private static ITextTokenizer FromTokenizerJson(string path, SpecialTokenConfig config, string folder)
    {
        var root = AddedTokens.LoadJson(folder, "tokenizer.json") ?? throw new InvalidDataException($"'{path}' holds JSON null.");
        var parsed = TokenizerJsonFile.Parse(root, path);
        var added = AddedTokens.Read(folder, root, parsed.Encoder.VocabSize, isSentencePiece: false);
        var lookup = WithAdded(added, parsed.Encoder.Lookup);
        int? endOfText = lookup("<|endoftext|>") ?? lookup("<|end_of_text|>") ?? lookup("</s>");
        int? eos = config.Resolve("eos", lookup, endOfText);
        var ids = config.ResolveAll(lookup, VocabSize(parsed.Encoder.VocabSize, added), path,
            bos: lookup("<|begin_of_text|>") ?? lookup("<s>") ?? endOfText,
            eos: endOfText,
            unk: parsed.UnkId ?? lookup("<unk>") ?? eos,
            // As for the .model files: SentencePiece-style files pad with unk, byte-level ones with eos.
            padFallback: partial => parsed.ByteLevel ? partial.Eos : partial.Unk,
            pad: null);
        string source = Path.GetFileName(folder) + "/tokenizer.json";
        return WithAdded(new TokenizerJsonTextTokenizer(parsed, source, ids), added, ids);
    }

    /// <summary>A token lookup that tries the added tokens (by content) before <paramref name="vocab"/>.</summary>
    private static Func<string, int?> WithAdded(IReadOnlyList<AddedToken> added, Func<string, int?> vocab)
    {
        var byContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in added) byContent.TryAdd(t.Content, t.Id);
        return token => byContent.TryGetValue(token, out int id) ? id : vocab(token);
    }

    private static int VocabSize(int modelSize, IReadOnlyList<AddedToken> added) =>
        Math.Max(modelSize, added.Count == 0 ? 0 : added.Max(t => t.Id) + 1);

    private static ITextTokenizer WithAdded(ITextTokenizer inner, IReadOnlyList<AddedToken> added, SpecialTokenIds ids) =>
        added.Count == 0 ? inner : new AddedTokensTextTokenizer(inner, added, ids);
}
