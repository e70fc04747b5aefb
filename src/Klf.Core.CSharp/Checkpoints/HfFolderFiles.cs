using Klf.Formats;
using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Models;
using Klf.Tokenizers;

namespace Klf.Checkpoints;

/// <summary>
/// The small JSON files that make a saved model folder a complete Hugging Face folder other tools
/// accept (transformers' <c>from_pretrained</c>, vLLM, llama.cpp's converter): <c>generation_config.json</c>
/// from the model's config, and <c>tokenizer_config.json</c> plus <c>special_tokens_map.json</c> when the
/// tokenizer folder did not bring its own (a bare SentencePiece <c>tokenizer.model</c>, as the project's
/// pretrained models carry).
/// </summary>
public static class HfFolderFiles
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>The file names this class may write, in the order it writes them.</summary>
    public static readonly IReadOnlyList<string> FileNames = ["generation_config.json", "tokenizer_config.json", "special_tokens_map.json"];

    /// <summary>
    /// Writes into <paramref name="folder"/> (atomically, file by file) <c>generation_config.json</c> (not
    /// for encoder-only models), and <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> unless <paramref name="folder"/>
    /// already holds them. Token strings come from the tokenizer files in <paramref name="folder"/>
    /// (<c>tokenizer.model</c>/<c>spiece.model</c>, <c>tokenizer.json</c> or <c>vocab.json</c>); ids from
    /// <paramref name="model"/>'s config, else <paramref name="tokenizer"/>. Returns the names written.
    /// </summary>
    public static IReadOnlyList<string> Write(string folder, ILanguageModel model, ITextTokenizer tokenizer)
    {
        var written = new List<string>();
        var config = model.ConfigJson();
        int? IdOf(string key, int? fallback) => config[key] is JsonValue v && v.TryGetValue<int>(out var n) ? n : fallback;
        var bos = IdOf("bos_token_id", tokenizer.BosId);
        var eos = IdOf("eos_token_id", tokenizer.EosId);
        var pad = IdOf("pad_token_id", null);
        var generation = new JsonObject
        {
            ["_from_model_config"] = true,
            ["bos_token_id"] = bos,
            ["eos_token_id"] = eos,
            ["pad_token_id"] = pad,
        };
        if (model.Family == ModelFamily.EncoderDecoder)
            generation["decoder_start_token_id"] = IdOf("decoder_start_token_id", pad ?? tokenizer.PadId);
        // An encoder-only model does not generate: it gets no generation config.
        if (model.Family != ModelFamily.EncoderOnly)
        {
            AtomicFile.WriteAllText(Path.Combine(folder, "generation_config.json"), generation.ToJsonString(Indented));
            written.Add("generation_config.json");
        }

        var tokenizerConfig = Path.Combine(folder, "tokenizer_config.json");
        var specialMap = Path.Combine(folder, "special_tokens_map.json");
        if (File.Exists(tokenizerConfig) && File.Exists(specialMap)) return written;
        var text = TokenVocabulary.FromFolder(folder);
        string? Token(int? id) => id is { } i && i >= 0 ? text(i) : null;
        var special = new JsonObject();
        void Add(string key, string? token) { if (token is not null) special[key] = token; }
        Add("bos_token", Token(bos));
        Add("eos_token", Token(eos));
        Add("unk_token", Token(tokenizer.UnkId));
        Add("pad_token", Token(pad));
        if (!File.Exists(tokenizerConfig))
        {
            var tc = new JsonObject
            {
                ["tokenizer_class"] = TokenizerClass(folder, model),
                ["model_max_length"] = IdOf("max_position_embeddings", null) ?? IdOf("n_positions", null) ?? 512,
                ["add_bos_token"] = model.Family == ModelFamily.DecoderOnly && bos is not null && File.Exists(Path.Combine(folder, "tokenizer.model")),
                ["add_eos_token"] = model.Family == ModelFamily.EncoderDecoder,
                ["clean_up_tokenization_spaces"] = false,
            };
            foreach (var (k, v) in special) tc[k] = v?.DeepClone();
            AtomicFile.WriteAllText(tokenizerConfig, tc.ToJsonString(Indented));
            written.Add("tokenizer_config.json");
        }
        if (!File.Exists(specialMap))
        {
            AtomicFile.WriteAllText(specialMap, special.ToJsonString(Indented));
            written.Add("special_tokens_map.json");
        }
        return written;
    }

    /// <summary>transformers' tokenizer class for the tokenizer files of a folder.</summary>
    private static string TokenizerClass(string folder, ILanguageModel model)
    {
        if (File.Exists(Path.Combine(folder, "vocab.txt"))) return "BertTokenizer";
        if (File.Exists(Path.Combine(folder, "tokenizer.json"))) return "PreTrainedTokenizerFast";
        if (File.Exists(Path.Combine(folder, "spiece.model")) || model.Family == ModelFamily.EncoderDecoder) return "T5Tokenizer";
        if (File.Exists(Path.Combine(folder, "tokenizer.model"))) return "LlamaTokenizer";
        return "GPT2Tokenizer";
    }
}
