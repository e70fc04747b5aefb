using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Models.Llama;

/// <summary>
/// The fields of a Hugging Face LLaMA <c>config.json</c> this implementation uses. Read with
/// <see cref="FromFile"/> / <see cref="FromJson"/>; <see cref="ToJson"/> writes it back, keeping
/// every field of the original JSON it does not model (in <see cref="ExtraFields"/>).
/// Equality compares every field, arrays by content and extra fields by JSON value.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary><c>vocab_size</c>.</summary>
    public required int VocabSize { get; init; }
    /// <summary><c>hidden_size</c> (C).</summary>
    public required int HiddenSize { get; init; }
    /// <summary><c>intermediate_size</c> of the SwiGLU MLP.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary><c>num_hidden_layers</c>.</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary><c>num_attention_heads</c> (H).</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary><c>num_key_value_heads</c> (Hkv; equals H unless grouped-query attention).</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary><c>head_dim</c> (D; defaults to hidden_size / num_attention_heads).</summary>
    public required int HeadDim { get; init; }
    /// <summary><c>rms_norm_eps</c>.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary><c>rope_theta</c> (default 10000).</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary><c>rope_scaling</c>, or null for plain RoPE (as <c>rope_type</c> <c>default</c>).</summary>
    public LlamaRopeScaling? RopeScaling { get; init; }
    /// <summary><c>attention_bias</c>: q/k/v/o projections have a bias (default false).</summary>
    public bool AttentionBias { get; init; }
    /// <summary><c>mlp_bias</c>: gate/up/down projections have a bias (default false).</summary>
    public bool MlpBias { get; init; }
    /// <summary><c>max_position_embeddings</c> (RoPE has no table to overflow; <c>dynamic</c> rope scaling starts beyond it).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary><c>tie_word_embeddings</c>: the LM head reuses the token embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary><c>initializer_range</c>: std of the normal weight init (default 0.02).</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>bos_token_id</c> (nullable).</summary>
    public int? BosTokenId { get; init; }
    /// <summary><c>eos_token_id</c>: all ids when the JSON has an array (never empty).</summary>
    public required int[] EosTokenIds { get; init; }
    /// <summary>The first of <see cref="EosTokenIds"/>.</summary>
    public int EosTokenId => EosTokenIds[0];
    /// <summary><c>pad_token_id</c> (nullable, as in most LLaMA checkpoints).</summary>
    public int? PadTokenId { get; init; }
    /// <summary>
    /// <c>torch_dtype</c> as written in the file (e.g. <c>bfloat16</c>), or null. Newer
    /// transformers write <c>dtype</c> instead: it is read when <c>torch_dtype</c> is absent (and kept as an extra field).
    /// </summary>
    public string? TorchDtype { get; init; }
    /// <summary>Fields of the source JSON this record does not model, kept for <see cref="ToJson"/>.</summary>
    public JsonObject ExtraFields { get; init; } = new();

    static readonly HashSet<string> Known = new()
    {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "max_position_embeddings",
        "tie_word_embeddings", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
        "torch_dtype", "hidden_act", "model_type", "rope_scaling", "attention_bias", "mlp_bias",
    };

    /// <summary>Reads a <c>config.json</c>; errors name the file and the field.</summary>
    public static LlamaConfig FromFile(string path)
    {
        var node = Klf.Formats.StrictJson.ReadFile(path) as JsonObject
            ?? throw new FormatException($"{path}: the top level is not a JSON object");
        return FromJson(node, path);
    }

    /// <summary>
    /// Builds a config from a parsed <c>config.json</c>. <paramref name="sourceName"/> (a file path
    /// or label) names the source in errors. The JSON object is not modified.
    /// </summary>
    public static LlamaConfig FromJson(JsonObject json, string sourceName)
    {
        FormatException Error(string field, string what) => new($"{sourceName}: field '{field}' {what}");

        JsonNode? Get(string field) => json.TryGetPropertyValue(field, out var v) ? v : null;
        int ReqInt(string field) => OptInt(field) ?? throw Error(field, "is required");
        int? OptInt(string field)
        {
            var v = Get(field);
            if (v is null) return null;
            try { return v.GetValue<int>(); }
            catch (Exception) { throw Error(field, $"must be an integer, got {v.ToJsonString()}"); }
        }
        double? OptDouble(string field)
        {
            var v = Get(field);
            if (v is null) return null;
            try { return v.GetValue<double>(); }
            catch (Exception) { throw Error(field, $"must be a number, got {v.ToJsonString()}"); }
        }
        string? OptString(string field)
        {
            var v = Get(field);
            if (v is null) return null;
            try { return v.GetValue<string>(); }
            catch (Exception) { throw Error(field, $"must be a string, got {v.ToJsonString()}"); }
        }

        var modelType = OptString("model_type");
        if (modelType != "llama")
            throw Error("model_type", $"must be \"llama\", got {(modelType is null ? "nothing" : $"\"{modelType}\"")}");
        var act = OptString("hidden_act") ?? "silu";
        if (act != "silu")
            throw Error("hidden_act", $"must be \"silu\", got \"{act}\"");
        LlamaRopeScaling? ropeScaling = Get("rope_scaling") switch
        {
            null => null,
            JsonObject rs => LlamaRopeScaling.FromJson(rs, sourceName),
            var rs => throw Error("rope_scaling", $"must be an object or null, got {rs.ToJsonString()}"),
        };
        bool OptBool(string field) => Get(field) switch
        {
            null => false,
            var b when b.GetValueKind() is JsonValueKind.True or JsonValueKind.False => b.GetValue<bool>(),
            var b => throw Error(field, $"must be true or false, got {b.ToJsonString()}"),
        };

        int Positive(string field, int value) => value > 0 ? value : throw Error(field, $"must be a positive integer, got {value}");
        int? OptPositive(string field) => OptInt(field) is int v ? Positive(field, v) : null;
        double PositiveNumber(string field, double value) =>
            double.IsFinite(value) && value > 0 ? value : throw Error(field, $"must be a finite number above 0, got {value}");

        var heads = Positive("num_attention_heads", ReqInt("num_attention_heads"));
        var hidden = Positive("hidden_size", ReqInt("hidden_size"));
        var vocab = Positive("vocab_size", ReqInt("vocab_size"));
        var kvHeads = OptInt("num_key_value_heads") ?? heads;
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            throw Error("num_key_value_heads", $"({kvHeads}) must be positive and divide num_attention_heads ({heads})");
        var headDim = OptPositive("head_dim");
        if (headDim is null && hidden % heads != 0)
            throw Error("hidden_size", $"({hidden}) is not a multiple of num_attention_heads ({heads}) and head_dim is absent");

        int[] eos;
        var eosNode = Get("eos_token_id");
        if (eosNode is JsonArray arr)
        {
            try { eos = arr.Select(n => n!.GetValue<int>()).ToArray(); }
            catch (Exception) { throw Error("eos_token_id", $"must be an integer or an array of integers, got {arr.ToJsonString()}"); }
            if (eos.Length == 0) throw Error("eos_token_id", "is an empty array");
        }
        else
        {
            eos = new[] { OptInt("eos_token_id") ?? throw Error("eos_token_id", "is required") };
        }

        int? TokenId(string field)
        {
            var id = OptInt(field);
            return id is null || (id >= 0 && id < vocab) ? id : throw Error(field, $"({id}) is not a token id of a vocabulary of {vocab}");
        }
        foreach (var id in eos)
            if (id < 0 || id >= vocab) throw Error("eos_token_id", $"({id}) is not a token id of a vocabulary of {vocab}");
        var initRange = OptDouble("initializer_range") ?? 0.02;
        if (!double.IsFinite(initRange) || initRange < 0) throw Error("initializer_range", $"must be a finite number of at least 0, got {initRange}");

        var extras = new JsonObject();
        foreach (var (key, value) in json)
            if (!Known.Contains(key)) extras[key] = value?.DeepClone();

        return new LlamaConfig
        {
            VocabSize = vocab,
            HiddenSize = hidden,
            IntermediateSize = Positive("intermediate_size", ReqInt("intermediate_size")),
            NumHiddenLayers = Positive("num_hidden_layers", ReqInt("num_hidden_layers")),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim ?? hidden / heads,
            RmsNormEps = PositiveNumber("rms_norm_eps", OptDouble("rms_norm_eps") ?? 1e-6),
            RopeTheta = PositiveNumber("rope_theta", OptDouble("rope_theta") ?? 10000.0),
            MaxPositionEmbeddings = OptPositive("max_position_embeddings") ?? 2048,
            RopeScaling = ropeScaling,
            AttentionBias = OptBool("attention_bias"),
            MlpBias = OptBool("mlp_bias"),
            TieWordEmbeddings = Get("tie_word_embeddings") is JsonNode t && t.GetValueKind() == JsonValueKind.True,
            InitializerRange = initRange,
            BosTokenId = TokenId("bos_token_id"),
            EosTokenIds = eos,
            PadTokenId = TokenId("pad_token_id"),
            TorchDtype = OptString("torch_dtype") ?? OptString("dtype"),
            ExtraFields = extras,
        };
    }

    /// <summary>Writes the config as HF <c>config.json</c> (a fresh object, extra fields included).</summary>
    public JsonObject ToJson()
    {
        var o = (JsonObject)ExtraFields.DeepClone();
        o["model_type"] = "llama";
        o["vocab_size"] = VocabSize;
        o["hidden_size"] = HiddenSize;
        o["intermediate_size"] = IntermediateSize;
        o["num_hidden_layers"] = NumHiddenLayers;
        o["num_attention_heads"] = NumAttentionHeads;
        o["num_key_value_heads"] = NumKeyValueHeads;
        o["head_dim"] = HeadDim;
        o["hidden_act"] = "silu";
        o["rms_norm_eps"] = RmsNormEps;
        o["rope_theta"] = RopeTheta;
        o["rope_scaling"] = RopeScaling?.Json.DeepClone();
        o["attention_bias"] = AttentionBias;
        o["mlp_bias"] = MlpBias;
        o["max_position_embeddings"] = MaxPositionEmbeddings;
        o["tie_word_embeddings"] = TieWordEmbeddings;
        o["initializer_range"] = InitializerRange;
        o["bos_token_id"] = BosTokenId;
        o["eos_token_id"] = EosTokenIds.Length == 1 ? JsonValue.Create(EosTokenIds[0]) : new JsonArray(EosTokenIds.Select(i => (JsonNode)JsonValue.Create(i)).ToArray());
        o["pad_token_id"] = PadTokenId;
        o["torch_dtype"] = TorchDtype;
        return o;
    }

    /// <summary>Field-by-field equality (EOS ids by content, extra fields by JSON value).</summary>
    public bool Equals(LlamaConfig? other) =>
        other is not null
        && VocabSize == other.VocabSize && HiddenSize == other.HiddenSize
        && IntermediateSize == other.IntermediateSize && NumHiddenLayers == other.NumHiddenLayers
        && NumAttentionHeads == other.NumAttentionHeads && NumKeyValueHeads == other.NumKeyValueHeads
        && HeadDim == other.HeadDim && RmsNormEps == other.RmsNormEps && RopeTheta == other.RopeTheta
        && Equals(RopeScaling, other.RopeScaling) && AttentionBias == other.AttentionBias && MlpBias == other.MlpBias
        && MaxPositionEmbeddings == other.MaxPositionEmbeddings && TieWordEmbeddings == other.TieWordEmbeddings
        && InitializerRange == other.InitializerRange && BosTokenId == other.BosTokenId
        && EosTokenIds.SequenceEqual(other.EosTokenIds) && PadTokenId == other.PadTokenId
        && TorchDtype == other.TorchDtype && JsonNode.DeepEquals(ExtraFields, other.ExtraFields);

    /// <summary>Hash of the scalar shape fields (consistent with <see cref="Equals(LlamaConfig?)"/>).</summary>
    public override int GetHashCode() =>
        HashCode.Combine(VocabSize, HiddenSize, IntermediateSize, NumHiddenLayers, NumAttentionHeads, NumKeyValueHeads, HeadDim, TieWordEmbeddings);

    // ---------------------------------------------------------------- presets

    /// <summary>Names accepted by <see cref="Preset"/>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = new[] { "llama-tiny", "llama-tiny-gqa", "llama-tiny-tied", "llama-tiny-bias", "llama-5m", "llama-25m" };

    /// <summary>Every preset with its default vocabulary size (256 for the tiny ones, 4096 for llama-5m and llama-25m).</summary>
    public static IReadOnlyDictionary<string, LlamaConfig> Presets =>
        PresetNames.ToDictionary(n => n, n => Preset(n));

    /// <summary>
    /// A named test preset. <paramref name="vocabSize"/> overrides the default vocabulary (so a
    /// real tokenizer of a few thousand pieces fits). Ids: pad 0, bos 1, eos 2.
    /// <list type="bullet">
    /// <item><c>llama-tiny</c>: hidden 64, 2 layers, 4 heads (D 16), MLP 128 (~115k params at vocab 256).</item>
    /// <item><c>llama-tiny-gqa</c>: as tiny with 2 key/value heads.</item>
    /// <item><c>llama-tiny-tied</c>: as tiny with tied embeddings.</item>
    /// <item><c>llama-tiny-bias</c>: as tiny with attention and MLP biases, llama3 rope scaling (factor 8, original 64).</item>
    /// <item><c>llama-5m</c>: hidden 256, 4 layers, 4 heads, MLP 688, vocab 4096 (~5.3M params).</item>
    /// <item><c>llama-25m</c>: hidden 512, 8 layers, 8 heads (D 64), MLP 1376, vocab 4096 (25.3M weights in the layers, 29.5M in all).</item>
    /// </list>
    /// </summary>
    public static LlamaConfig Preset(string name, int? vocabSize = null)
    {
        var tiny = new LlamaConfig
        {
            VocabSize = vocabSize ?? 256, HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2,
            NumAttentionHeads = 4, NumKeyValueHeads = 4, HeadDim = 16, RmsNormEps = 1e-6,
            MaxPositionEmbeddings = 512, BosTokenId = 1, EosTokenIds = new[] { 2 }, PadTokenId = 0,
            TorchDtype = "float32",
            ExtraFields = new JsonObject { ["architectures"] = new JsonArray("LlamaForCausalLM") },
        };
        return name switch
        {
            "llama-tiny" => tiny,
            "llama-tiny-gqa" => tiny with { NumKeyValueHeads = 2 },
            "llama-tiny-tied" => tiny with { TieWordEmbeddings = true },
            "llama-tiny-bias" => tiny with
            {
                AttentionBias = true, MlpBias = true,
                RopeScaling = LlamaRopeScaling.FromJson(new JsonObject
                {
                    ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0,
                    ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
                }, name),
            },
            "llama-5m" => tiny with
            {
                VocabSize = vocabSize ?? 4096, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 4,
                NumAttentionHeads = 4, NumKeyValueHeads = 4, HeadDim = 64, MaxPositionEmbeddings = 2048,
            },
            "llama-25m" => tiny with
            {
                VocabSize = vocabSize ?? 4096, HiddenSize = 512, IntermediateSize = 1376, NumHiddenLayers = 8,
                NumAttentionHeads = 8, NumKeyValueHeads = 8, HeadDim = 64, MaxPositionEmbeddings = 2048,
            },
            _ => throw new ArgumentException($"unknown LLaMA preset '{name}'; known: {string.Join(", ", PresetNames)}", nameof(name)),
        };
    }
}
