using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Models.T5;

/// <summary>
/// Hyper-parameters of a T5 model, read from (and written to) a Hugging Face <c>config.json</c>
/// (<c>model_type</c> "t5"). Defaults are those of Hugging Face's <c>T5Config</c>. Fields of the
/// JSON that this record does not model are kept verbatim in <see cref="ExtraJson"/> so that
/// <see cref="FromJson"/> → <see cref="ToJson"/> round-trips.
/// </summary>
/// <param name="VocabSize"><c>vocab_size</c>: rows of the shared embedding and of the LM head.</param>
/// <param name="DModel"><c>d_model</c>: width of the residual stream.</param>
/// <param name="DKv"><c>d_kv</c>: width of one attention head (need not be d_model / num_heads).</param>
/// <param name="DFf"><c>d_ff</c>: width of the feed-forward hidden layer.</param>
/// <param name="NumLayers"><c>num_layers</c>: encoder blocks.</param>
/// <param name="NumDecoderLayers"><c>num_decoder_layers</c>: decoder blocks (defaults to num_layers).</param>
/// <param name="NumHeads"><c>num_heads</c>: attention heads.</param>
/// <param name="RelativeAttentionNumBuckets"><c>relative_attention_num_buckets</c> (default 32).</param>
/// <param name="RelativeAttentionMaxDistance"><c>relative_attention_max_distance</c> (default 128).</param>
/// <param name="DropoutRate"><c>dropout_rate</c>, applied in training mode only.</param>
/// <param name="LayerNormEpsilon"><c>layer_norm_epsilon</c> of every <see cref="T5LayerNorm"/>.</param>
/// <param name="FeedForwardProj"><c>feed_forward_proj</c>: "relu" (T5 v1.0) or "gated-gelu" (v1.1 / Flan-T5, gelu_new).</param>
/// <param name="TieWordEmbeddings"><c>tie_word_embeddings</c>: the LM head reuses <c>shared.weight</c> (and the decoder output is scaled by d_model^-0.5).</param>
/// <param name="PadTokenId"><c>pad_token_id</c>.</param>
/// <param name="EosTokenId"><c>eos_token_id</c>.</param>
/// <param name="DecoderStartTokenId"><c>decoder_start_token_id</c>: first decoder input.</param>
/// <param name="InitializerFactor"><c>initializer_factor</c>: scales every init standard deviation (1.0).</param>
/// <param name="ExtraJson">The JSON object of the fields this record does not model, as text ("{}" if none).</param>
public sealed record T5Config(
    int VocabSize = 32128,
    int DModel = 512,
    int DKv = 64,
    int DFf = 2048,
    int NumLayers = 6,
    int NumDecoderLayers = 6,
    int NumHeads = 8,
    int RelativeAttentionNumBuckets = 32,
    int RelativeAttentionMaxDistance = 128,
    double DropoutRate = 0.1,
    double LayerNormEpsilon = 1e-6,
    string FeedForwardProj = "relu",
    bool TieWordEmbeddings = true,
    int PadTokenId = 0,
    int EosTokenId = 1,
    int DecoderStartTokenId = 0,
    double InitializerFactor = 1.0,
    string ExtraJson = "{}")
{
    /// <summary>The <c>model_type</c> this config accepts and writes.</summary>
    public const string ModelTypeName = "t5";

    /// <summary>Names of the preset configs known to <see cref="Preset"/>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["t5-tiny", "t5-tiny-gated"];

    private static readonly string[] KnownKeys =
    [
        "model_type", "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
        "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon",
        "feed_forward_proj", "tie_word_embeddings", "pad_token_id", "eos_token_id", "decoder_start_token_id",
        "initializer_factor",
        // Derived by HF from feed_forward_proj; rewritten by ToJson so that they never disagree with it.
        "dense_act_fn", "is_gated_act",
    ];

    /// <summary>True for "gated-…" feed-forward (wi_0, wi_1, wo); false for "relu" (wi, wo).</summary>
    public bool IsGatedAct => FeedForwardProj.StartsWith("gated-", StringComparison.Ordinal);

    /// <summary>The HF activation name: "relu" or "gelu_new" (tanh approximation).</summary>
    public string DenseActFn => IsGatedAct ? "gelu_new" : "relu";

    /// <summary>Attention inner width, num_heads × d_kv.</summary>
    public int InnerDim => NumHeads * DKv;

    /// <summary>Reads a Hugging Face <c>config.json</c>. Errors name the file and the field.</summary>
    public static T5Config FromFile(string path)
    {
        var node = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
            ?? throw new InvalidDataException($"{path}: not a JSON object");
        return FromJson(node, path);
    }

    /// <summary>
    /// Builds a config from a parsed <c>config.json</c> (the object is not modified).
    /// <paramref name="sourceName"/> (a file path or a label) prefixes every error message.
    /// </summary>
    public static T5Config FromJson(JsonObject json, string sourceName)
    {
        string modelType = json["model_type"] is JsonValue mt && mt.TryGetValue<string>(out var s) ? s
            : throw new InvalidDataException($"{sourceName}: field 'model_type' is missing; a T5 config needs \"model_type\": \"t5\"");
        if (modelType != ModelTypeName)
            throw new InvalidDataException($"{sourceName}: field 'model_type' is \"{modelType}\", but T5ForConditionalGeneration needs \"t5\"");

        int Int(string key, int dflt) => json[key] is null ? dflt : Read(() => json[key]!.GetValue<int>(), key, "an integer");
        double Dbl(string key, double dflt) => json[key] is null ? dflt : Read(() => json[key]!.GetValue<double>(), key, "a number");
        bool Bool(string key, bool dflt) => json[key] is null ? dflt : Read(() => json[key]!.GetValue<bool>(), key, "true or false");
        string Str(string key, string dflt) => json[key] is null ? dflt : Read(() => json[key]!.GetValue<string>(), key, "a string");
        T Read<T>(Func<T> get, string key, string what)
        {
            try { return get(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"{sourceName}: field '{key}' must be {what}, found {json[key]!.ToJsonString()}", e);
            }
        }

        var extra = new JsonObject();
        foreach (var (key, value) in json)
            if (!KnownKeys.Contains(key)) extra[key] = value?.DeepClone();

        int numLayers = Int("num_layers", 6);
        var config = new T5Config(
            VocabSize: Int("vocab_size", 32128),
            DModel: Int("d_model", 512),
            DKv: Int("d_kv", 64),
            DFf: Int("d_ff", 2048),
            NumLayers: numLayers,
            NumDecoderLayers: Int("num_decoder_layers", numLayers),
            NumHeads: Int("num_heads", 8),
            RelativeAttentionNumBuckets: Int("relative_attention_num_buckets", 32),
            RelativeAttentionMaxDistance: Int("relative_attention_max_distance", 128),
            DropoutRate: Dbl("dropout_rate", 0.1),
            LayerNormEpsilon: Dbl("layer_norm_epsilon", 1e-6),
            FeedForwardProj: Str("feed_forward_proj", "relu"),
            TieWordEmbeddings: Bool("tie_word_embeddings", true),
            PadTokenId: Int("pad_token_id", 0),
            EosTokenId: Int("eos_token_id", 1),
            DecoderStartTokenId: Int("decoder_start_token_id", 0),
            InitializerFactor: Dbl("initializer_factor", 1.0),
            ExtraJson: extra.ToJsonString());
        config.Validate(sourceName);
        return config;
    }

    /// <summary>
    /// Checks the values this implementation relies on; throws <see cref="InvalidDataException"/>
    /// naming <paramref name="sourceName"/> and the offending field.
    /// </summary>
    public void Validate(string sourceName = "T5Config")
    {
        void Positive(int v, string key)
        {
            if (v <= 0) throw new InvalidDataException($"{sourceName}: field '{key}' must be positive, found {v}");
        }
        Positive(VocabSize, "vocab_size");
        Positive(DModel, "d_model");
        Positive(DKv, "d_kv");
        Positive(DFf, "d_ff");
        Positive(NumLayers, "num_layers");
        Positive(NumDecoderLayers, "num_decoder_layers");
        Positive(NumHeads, "num_heads");
        Positive(RelativeAttentionMaxDistance, "relative_attention_max_distance");
        if (RelativeAttentionNumBuckets < 4)
            throw new InvalidDataException($"{sourceName}: field 'relative_attention_num_buckets' must be at least 4, found {RelativeAttentionNumBuckets}");
        if (FeedForwardProj is not ("relu" or "gated-gelu"))
            throw new InvalidDataException(
                $"{sourceName}: field 'feed_forward_proj' is \"{FeedForwardProj}\"; supported: \"relu\" (T5 v1.0) and \"gated-gelu\" (T5 v1.1 / Flan-T5)");
        if (DropoutRate is < 0 or >= 1)
            throw new InvalidDataException($"{sourceName}: field 'dropout_rate' must lie in [0, 1), found {DropoutRate}");
        if (!(LayerNormEpsilon > 0))
            throw new InvalidDataException($"{sourceName}: field 'layer_norm_epsilon' must be positive, found {LayerNormEpsilon}");
        foreach (var (v, key) in new[] { (PadTokenId, "pad_token_id"), (EosTokenId, "eos_token_id"), (DecoderStartTokenId, "decoder_start_token_id") })
            if (v < 0 || v >= VocabSize)
                throw new InvalidDataException($"{sourceName}: field '{key}' = {v} is outside the vocabulary [0, {VocabSize})");
    }

    /// <summary>
    /// The Hugging Face <c>config.json</c> object (a fresh object): the kept unknown fields, then
    /// every modelled field in HF's snake_case, plus HF's derived <c>dense_act_fn</c> and <c>is_gated_act</c>.
    /// </summary>
    public JsonObject ToJson()
    {
        var json = JsonNode.Parse(ExtraJson) as JsonObject ?? new JsonObject();
        json["model_type"] = ModelTypeName;
        json["vocab_size"] = VocabSize;
        json["d_model"] = DModel;
        json["d_kv"] = DKv;
        json["d_ff"] = DFf;
        json["num_layers"] = NumLayers;
        json["num_decoder_layers"] = NumDecoderLayers;
        json["num_heads"] = NumHeads;
        json["relative_attention_num_buckets"] = RelativeAttentionNumBuckets;
        json["relative_attention_max_distance"] = RelativeAttentionMaxDistance;
        json["dropout_rate"] = DropoutRate;
        json["layer_norm_epsilon"] = LayerNormEpsilon;
        json["feed_forward_proj"] = FeedForwardProj;
        json["dense_act_fn"] = DenseActFn;
        json["is_gated_act"] = IsGatedAct;
        json["tie_word_embeddings"] = TieWordEmbeddings;
        json["pad_token_id"] = PadTokenId;
        json["eos_token_id"] = EosTokenId;
        json["decoder_start_token_id"] = DecoderStartTokenId;
        json["initializer_factor"] = InitializerFactor;
        return json;
    }

    /// <summary>The <see cref="ToJson"/> object as indented text, ready to write as <c>config.json</c>.</summary>
    public string ToJsonString() => ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    /// <summary>
    /// Tiny named configs for tests and experiments, with the vocabulary size of the tokenizer in use:
    /// <list type="bullet">
    /// <item><c>t5-tiny</c>: T5 v1.0 style (relu, tied LM head); d_model 64, 4 heads of 8 (inner 32 ≠ d_model), d_ff 128, 2+2 blocks.</item>
    /// <item><c>t5-tiny-gated</c>: T5 v1.1 / Flan style (gated-gelu, untied lm_head); d_model 64, 4 heads of 16, d_ff 96, 2 encoder + 3 decoder blocks.</item>
    /// </list>
    /// </summary>
    public static T5Config Preset(string name, int vocabSize = 128)
    {
        var extra = new JsonObject
        {
            ["architectures"] = new JsonArray("T5ForConditionalGeneration"),
            ["is_encoder_decoder"] = true,
            ["klf_preset"] = name,
        }.ToJsonString();
        var config = name switch
        {
            "t5-tiny" => new T5Config(VocabSize: vocabSize, DModel: 64, DKv: 8, DFf: 128, NumLayers: 2, NumDecoderLayers: 2,
                NumHeads: 4, FeedForwardProj: "relu", TieWordEmbeddings: true, ExtraJson: extra),
            "t5-tiny-gated" => new T5Config(VocabSize: vocabSize, DModel: 64, DKv: 16, DFf: 96, NumLayers: 2, NumDecoderLayers: 3,
                NumHeads: 4, FeedForwardProj: "gated-gelu", TieWordEmbeddings: false, ExtraJson: extra),
            _ => throw new ArgumentException($"Unknown T5 preset '{name}'; known: {string.Join(", ", PresetNames)}", nameof(name)),
        };
        config.Validate($"preset {name}");
        return config;
    }
}
