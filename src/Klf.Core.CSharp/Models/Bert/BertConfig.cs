using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Models.Bert;

/// <summary>
/// The fields of a Hugging Face BERT <c>config.json</c> (<c>model_type</c> "bert": BERT, MiniLM and the
/// sentence encoders built on them) this implementation uses. Defaults are those of Hugging Face's
/// <c>BertConfig</c>. <see cref="ToJson"/> writes it back with every field of the original JSON it
/// does not model (in <see cref="ExtraFields"/>).
/// </summary>
public sealed record BertConfig
{
    /// <summary>The <c>model_type</c> this config accepts and writes.</summary>
    public const string ModelTypeName = "bert";

    /// <summary><c>vocab_size</c> (V).</summary>
    public int VocabSize { get; init; } = 30522;
    /// <summary><c>hidden_size</c> (C).</summary>
    public int HiddenSize { get; init; } = 768;
    /// <summary><c>num_hidden_layers</c>.</summary>
    public int NumHiddenLayers { get; init; } = 12;
    /// <summary><c>num_attention_heads</c> (H; C must be a multiple of it, D = C / H).</summary>
    public int NumAttentionHeads { get; init; } = 12;
    /// <summary><c>intermediate_size</c> (I) of the feed-forward layer.</summary>
    public int IntermediateSize { get; init; } = 3072;
    /// <summary><c>hidden_act</c>: <c>gelu</c> (exact, erf), <c>gelu_new</c> / <c>gelu_pytorch_tanh</c> (tanh approximation) or <c>relu</c>.</summary>
    public string HiddenAct { get; init; } = "gelu";
    /// <summary><c>hidden_dropout_prob</c>: dropout of the embeddings and of each sub-layer's output, in training mode.</summary>
    public double HiddenDropoutProb { get; init; } = 0.1;
    /// <summary><c>attention_probs_dropout_prob</c>: dropout of the attention weights, in training mode.</summary>
    public double AttentionProbsDropoutProb { get; init; } = 0.1;
    /// <summary><c>max_position_embeddings</c>: rows of the position table, the longest input.</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;
    /// <summary><c>type_vocab_size</c>: rows of the segment (token type) table.</summary>
    public int TypeVocabSize { get; init; } = 2;
    /// <summary><c>initializer_range</c>: std of the normal weight init.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>layer_norm_eps</c>.</summary>
    public double LayerNormEps { get; init; } = 1e-12;
    /// <summary><c>pad_token_id</c> (the padding row of the word embeddings).</summary>
    public int PadTokenId { get; init; }
    /// <summary><c>sep_token_id</c> when the config names it (a field of every Hugging Face config; BERT files rarely set it).</summary>
    public int? SepTokenId { get; init; }
    /// <summary><c>torch_dtype</c> as written in the file, or null.</summary>
    public string? TorchDtype { get; init; }
    /// <summary>Fields of the source JSON this record does not model, kept for <see cref="ToJson"/>.</summary>
    public JsonObject ExtraFields { get; init; } = new();

    /// <summary>Width of one attention head (C / H).</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    static readonly HashSet<string> Known = new()
    {
        "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
        "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size", "initializer_range",
        "layer_norm_eps", "pad_token_id", "sep_token_id", "torch_dtype", "position_embedding_type",
    };

    static readonly string[] Activations = ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

    /// <summary>Reads a <c>config.json</c>; errors name the file and the field.</summary>
    public static BertConfig FromFile(string path) =>
        FromJson(Klf.Formats.StrictJson.ReadFile(path) as JsonObject ?? throw new FormatException($"{path}: the top level is not a JSON object"), path);

    /// <summary>
    /// Builds a config from a parsed <c>config.json</c>; <paramref name="sourceName"/> names the source in
    /// errors. Only absolute position embeddings are supported. The JSON object is not modified.
    /// </summary>
    public static BertConfig FromJson(JsonObject json, string sourceName)
    {
        FormatException Error(string field, string what) => new($"{sourceName}: field '{field}' {what}");
        JsonNode? Get(string field) => json.TryGetPropertyValue(field, out var v) ? v : null;
        int? Int(string field)
        {
            var v = Get(field);
            if (v is null) return null;
            try { return v.GetValue<int>(); }
            catch (Exception) { throw Error(field, $"must be an integer, got {v.ToJsonString()}"); }
        }
        double? Number(string field)
        {
            var v = Get(field);
            if (v is null) return null;
            try { return v.GetValue<double>(); }
            catch (Exception) { throw Error(field, $"must be a number, got {v.ToJsonString()}"); }
        }
        string? Text(string field)
        {
            var v = Get(field);
            if (v is null) return null;
            try { return v.GetValue<string>(); }
            catch (Exception) { throw Error(field, $"must be a string, got {v.ToJsonString()}"); }
        }
        int Positive(string field, int fallback) => Int(field) is int v ? (v > 0 ? v : throw Error(field, $"must be a positive integer, got {v}")) : fallback;
        double Probability(string field, double fallback) =>
            Number(field) is double p ? (p >= 0 && p < 1 ? p : throw Error(field, $"must lie in [0, 1), got {p}")) : fallback;

        var d = new BertConfig();
        var type = Text("model_type");
        if (type != ModelTypeName) throw Error("model_type", $"must be \"{ModelTypeName}\", got {(type is null ? "nothing" : $"\"{type}\"")}");
        var position = Text("position_embedding_type") ?? "absolute";
        if (position != "absolute") throw Error("position_embedding_type", $"must be \"absolute\" (the only kind implemented), got \"{position}\"");
        var act = Text("hidden_act") ?? d.HiddenAct;
        if (!Activations.Contains(act)) throw Error("hidden_act", $"must be one of {string.Join(", ", Activations)}, got \"{act}\"");
        var hidden = Positive("hidden_size", d.HiddenSize);
        var heads = Positive("num_attention_heads", d.NumAttentionHeads);
        if (hidden % heads != 0) throw Error("hidden_size", $"({hidden}) is not a multiple of num_attention_heads ({heads})");
        var vocab = Positive("vocab_size", d.VocabSize);
        int? TokenId(string field) => Int(field) is int id ? (id >= 0 && id < vocab ? id : throw Error(field, $"({id}) is not a token id of a vocabulary of {vocab}")) : null;
        var eps = Number("layer_norm_eps") ?? d.LayerNormEps;
        if (!double.IsFinite(eps) || eps <= 0) throw Error("layer_norm_eps", $"must be a finite number above 0, got {eps}");
        var init = Number("initializer_range") ?? d.InitializerRange;
        if (!double.IsFinite(init) || init < 0) throw Error("initializer_range", $"must be a finite number of at least 0, got {init}");
        var extras = new JsonObject();
        foreach (var (key, value) in json)
            if (!Known.Contains(key)) extras[key] = value?.DeepClone();
        return new BertConfig
        {
            VocabSize = vocab,
            HiddenSize = hidden,
            NumHiddenLayers = Positive("num_hidden_layers", d.NumHiddenLayers),
            NumAttentionHeads = heads,
            IntermediateSize = Positive("intermediate_size", d.IntermediateSize),
            HiddenAct = act,
            HiddenDropoutProb = Probability("hidden_dropout_prob", d.HiddenDropoutProb),
            AttentionProbsDropoutProb = Probability("attention_probs_dropout_prob", d.AttentionProbsDropoutProb),
            MaxPositionEmbeddings = Positive("max_position_embeddings", d.MaxPositionEmbeddings),
            TypeVocabSize = Positive("type_vocab_size", d.TypeVocabSize),
            InitializerRange = init,
            LayerNormEps = eps,
            PadTokenId = TokenId("pad_token_id") ?? 0,
            SepTokenId = TokenId("sep_token_id"),
            TorchDtype = Text("torch_dtype") ?? Text("dtype"),
            ExtraFields = extras,
        };
    }

    /// <summary>Writes the config as Hugging Face <c>config.json</c> (a fresh object, extra fields included).</summary>
    public JsonObject ToJson()
    {
        var o = (JsonObject)ExtraFields.DeepClone();
        o["model_type"] = ModelTypeName;
        o["vocab_size"] = VocabSize;
        o["hidden_size"] = HiddenSize;
        o["num_hidden_layers"] = NumHiddenLayers;
        o["num_attention_heads"] = NumAttentionHeads;
        o["intermediate_size"] = IntermediateSize;
        o["hidden_act"] = HiddenAct;
        o["hidden_dropout_prob"] = HiddenDropoutProb;
        o["attention_probs_dropout_prob"] = AttentionProbsDropoutProb;
        o["max_position_embeddings"] = MaxPositionEmbeddings;
        o["type_vocab_size"] = TypeVocabSize;
        o["initializer_range"] = InitializerRange;
        o["layer_norm_eps"] = LayerNormEps;
        o["position_embedding_type"] = "absolute";
        o["pad_token_id"] = PadTokenId;
        if (SepTokenId is int sep) o["sep_token_id"] = sep;
        if (TorchDtype is not null) o["torch_dtype"] = TorchDtype;
        return o;
    }

    /// <summary>Field-by-field equality (extra fields by JSON value).</summary>
    public bool Equals(BertConfig? other) =>
        other is not null && VocabSize == other.VocabSize && HiddenSize == other.HiddenSize && NumHiddenLayers == other.NumHiddenLayers
        && NumAttentionHeads == other.NumAttentionHeads && IntermediateSize == other.IntermediateSize && HiddenAct == other.HiddenAct
        && HiddenDropoutProb == other.HiddenDropoutProb && AttentionProbsDropoutProb == other.AttentionProbsDropoutProb
        && MaxPositionEmbeddings == other.MaxPositionEmbeddings && TypeVocabSize == other.TypeVocabSize
        && InitializerRange == other.InitializerRange && LayerNormEps == other.LayerNormEps && PadTokenId == other.PadTokenId
        && SepTokenId == other.SepTokenId && TorchDtype == other.TorchDtype && JsonNode.DeepEquals(ExtraFields, other.ExtraFields);

    /// <summary>Hash of the shape fields (consistent with <see cref="Equals(BertConfig?)"/>).</summary>
    public override int GetHashCode() => HashCode.Combine(VocabSize, HiddenSize, NumHiddenLayers, NumAttentionHeads, IntermediateSize, MaxPositionEmbeddings);

    // ---------------------------------------------------------------- presets

    /// <summary>Names accepted by <see cref="Preset"/>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["bert-tiny", "minilm-l6"];

    /// <summary>
    /// A named preset (randomly initialised when built). <paramref name="vocabSize"/> overrides the
    /// vocabulary (the BERT uncased vocabulary of the sentence encoders has 30,522 ids).
    /// <list type="bullet">
    /// <item><c>bert-tiny</c>: hidden 64, 2 layers, 4 heads (D 16), feed-forward 128, 128 positions, vocabulary 30,522.</item>
    /// <item><c>minilm-l6</c>: the shape of all-MiniLM-L6-v2: hidden 384, 6 layers, 12 heads (D 32), feed-forward 1536, 512 positions, vocabulary 30,522 (22.7M parameters).</item>
    /// </list>
    /// </summary>
    public static BertConfig Preset(string name, int? vocabSize = null)
    {
        var c = name switch
        {
            "bert-tiny" => new BertConfig { HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 128, MaxPositionEmbeddings = 128 },
            "minilm-l6" => new BertConfig { HiddenSize = 384, NumHiddenLayers = 6, NumAttentionHeads = 12, IntermediateSize = 1536 },
            _ => throw new ArgumentException($"unknown BERT preset \"{name}\" (known: {string.Join(", ", PresetNames)})", nameof(name)),
        };
        return vocabSize is int v ? c with { VocabSize = v } : c;
    }
}
