using System.Text.Json.Nodes;
using Google.Protobuf;
using Klf.Models;
using Klf.Models.Bert;
using Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>The weights of a BERT-family ONNX export, under their Hugging Face names, with the config they imply.</summary>
/// <param name="Config">Shape, activation and norm epsilon read from the graph (dropout is not in an inference graph: BERT's 0.1).</param>
/// <param name="Weights">Hugging Face key → (shape, float32 values, row-major), exactly the keys of a <see cref="BertSentenceEncoder"/> of <paramref name="Config"/>.</param>
/// <param name="HasPooler">Whether the export carries BERT's pooler (not part of a sentence encoder; not imported).</param>
/// <param name="Opset">The graph's default-domain opset version.</param>
public sealed record OnnxBertWeights(BertConfig Config, IReadOnlyDictionary<string, (long[] Shape, float[] Data)> Weights, bool HasPooler, long Opset);

/// <summary>
/// Reads the weights of a BERT-family encoder exported to ONNX by PyTorch (as sentence-transformers
/// models are shipped for ONNX Runtime) and writes them as a Hugging Face model folder Klf loads.
/// </summary>
/// <remarks>
/// <para>The exporter keeps the names of initializers it passes through unchanged: the embeddings, every
/// bias and every LayerNorm carry their Hugging Face keys. The Linear weights become anonymous, transposed
/// initializers of <c>MatMul</c> nodes (<c>x · Wᵀ</c> exported as <c>MatMul(x, W')</c>, W' = Wᵀ); each such
/// MatMul feeds the <c>Add</c> of its bias, so the weight of <c>P.bias</c>'s Add is <c>P.weight</c> = W'ᵀ.
/// Heads are read from the reshape to (B, T, H, D), the norm epsilon from the constant added under the
/// square root (or a <c>LayerNormalization</c> node's attribute), the activation from <c>Erf</c> (exact GELU),
/// a tanh-form GELU or <c>Relu</c>.</para>
/// <para>Every key a <see cref="BertSentenceEncoder"/> of the implied config has must be found exactly once,
/// with its shape; anything else (external data, a non-float weight, a weight found twice or not at all)
/// is an error naming the source.</para>
/// </remarks>
public static class OnnxBertImport
{
    /// <summary>Parses an ONNX model and recovers its BERT weights; <paramref name="source"/> names it in errors.</summary>
    public static OnnxBertWeights Read(byte[] onnx, string source)
    {
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(onnx); }
        catch (InvalidProtocolBufferException e) { throw new InvalidDataException($"{source}: not an ONNX model ({e.Message})", e); }
        var g = model.Graph ?? throw new InvalidDataException($"{source}: the ONNX model has no graph");
        InvalidDataException Bad(string what) => new($"{source}: {what}");
        var initializers = g.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var constants = g.Node.Where(n => n.OpType == "Constant" && n.Output.Count == 1)
            .Select(n => (n.Output[0], n.Attribute.FirstOrDefault(a => a.Name == "value")?.T))
            .Where(x => x.T is not null).ToDictionary(x => x.Item1, x => x.T!, StringComparer.Ordinal);
        TensorProto? ValueOf(string name) => initializers.TryGetValue(name, out var t) ? t : constants.TryGetValue(name, out var c) ? c : null;
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var n in g.Node)
        {
            foreach (var o in n.Output) producer[o] = n;
            foreach (var i in n.Input)
            {
                if (!consumers.TryGetValue(i, out var list)) consumers[i] = list = new();
                list.Add(n);
            }
        }

        var weights = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
        void Add(string key, long[] shape, float[] data)
        {
            if (!weights.TryAdd(key, (shape, data))) throw Bad($"the weight {key} was found twice");
        }
        var hasPooler = false;
        foreach (var (name, t) in initializers)
        {
            if (name.StartsWith("pooler.", StringComparison.Ordinal)) { hasPooler = true; continue; }
            if (name == "embeddings.position_ids" || !name.Contains('.')) continue;   // a buffer; anonymous MatMul weights come below
            Add(name, t.Dims.ToArray(), Floats(t, name, source));
        }
        foreach (var mm in g.Node.Where(n => n.OpType == "MatMul"))
        {
            var w = mm.Input.Select(i => initializers.TryGetValue(i, out var t) ? t : null).LastOrDefault(t => t is not null);
            if (w is null) continue;   // activation × activation (attention scores)
            var add = consumers.GetValueOrDefault(mm.Output[0])?.FirstOrDefault(n => n.OpType == "Add");
            var bias = add?.Input.FirstOrDefault(i => i.EndsWith(".bias", StringComparison.Ordinal) && initializers.ContainsKey(i));
            if (bias is null) throw Bad($"MatMul {mm.Name}: no Add with a named bias follows it, so its weight cannot be named");
            var prefix = bias[..^".bias".Length];
            if (prefix.StartsWith("pooler.", StringComparison.Ordinal)) continue;
            if (w.Dims.Count != 2) throw Bad($"MatMul {mm.Name}: its weight has {w.Dims.Count} dimensions, not 2");
            long rows = w.Dims[0], cols = w.Dims[1];
            Add(prefix + ".weight", [cols, rows], Transpose(Floats(w, w.Name, source), rows, cols));
        }
        foreach (var gemm in g.Node.Where(n => n.OpType == "Gemm"))
        {
            // A Linear exported as Gemm keeps its names (torch exports the pooler this way).
            var named = gemm.Input.Where(i => initializers.ContainsKey(i)).ToArray();
            if (named.Any(n => n.StartsWith("pooler.", StringComparison.Ordinal))) continue;
            if (named.Length > 0 && named.All(n => weights.ContainsKey(n))) continue;
            throw Bad($"Gemm {gemm.Name}: a fused Linear outside the pooler is not supported");
        }

        (long Rows, long Cols) Shape(string key) => weights.TryGetValue(key, out var v) && v.Shape.Length == 2 ? (v.Shape[0], v.Shape[1])
            : throw Bad($"no two-dimensional {key} in the graph");
        var (vocab, hidden) = Shape("embeddings.word_embeddings.weight");
        var (positions, _) = Shape("embeddings.position_embeddings.weight");
        var (types, _) = Shape("embeddings.token_type_embeddings.weight");
        var layers = weights.Keys.Where(k => k.StartsWith("encoder.layer.", StringComparison.Ordinal))
            .Select(k => int.Parse(k.Split('.')[2], System.Globalization.CultureInfo.InvariantCulture)).Distinct().Count();
        var (intermediate, _) = Shape("encoder.layer.0.intermediate.dense.weight");
        var opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 0;
        var config = new BertConfig
        {
            VocabSize = (int)vocab,
            HiddenSize = (int)hidden,
            NumHiddenLayers = layers,
            NumAttentionHeads = Heads(g, ValueOf, producer, hidden) ?? throw Bad($"no reshape of a projection to (B, T, H, D) with H·D = {hidden}: the number of heads is unknown"),
            IntermediateSize = (int)intermediate,
            HiddenAct = Activation(g) ?? throw Bad("no Erf, tanh-form GELU or Relu: the activation is unknown"),
            MaxPositionEmbeddings = (int)positions,
            TypeVocabSize = (int)types,
            // The graph holds float32; its shortest decimal form is the config's value (1e-12, not 9.99999996e-13).
            LayerNormEps = double.Parse((Epsilon(g, ValueOf, producer) ?? throw Bad("no LayerNormalization and no constant under a square root: the norm epsilon is unknown"))
                .ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture),
        };

        // The imported keys must be exactly the model's, with its shapes.
        using (var skeleton = BertSentenceEncoder.Create(config, torch.META))
        {
            var expected = skeleton.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
            var missing = expected.Keys.Where(k => !weights.ContainsKey(k)).ToList();
            var extra = weights.Keys.Where(k => !expected.ContainsKey(k)).ToList();
            var shapes = expected.Where(kv => weights.TryGetValue(kv.Key, out var v) && !v.Shape.SequenceEqual(kv.Value))
                .Select(kv => $"{kv.Key}: graph [{string.Join(", ", weights[kv.Key].Shape)}] vs model [{string.Join(", ", kv.Value)}]").ToList();
            if (missing.Count + extra.Count + shapes.Count > 0)
                throw Bad($"the graph's weights do not match a BERT encoder of the shape they imply (missing: {string.Join(", ", missing)}; unexpected: {string.Join(", ", extra)}; shapes: {string.Join("; ", shapes)})");
        }
        return new OnnxBertWeights(config, weights, hasPooler, opset);
    }

    /// <summary>
    /// Writes <paramref name="w"/> as a Hugging Face folder (atomically, with a Klf manifest whose extra data
    /// is <paramref name="provenance"/>): <c>config.json</c> (pad and sep ids from the vocabulary),
    /// <c>model.safetensors</c>, the WordPiece tokenizer (<c>vocab.txt</c> and its configs) and
    /// sentence-transformers' pooling files. Returns the manifest written.
    /// </summary>
    /// <param name="w">The weights (<see cref="Read"/>).</param>
    /// <param name="vocabulary">The text of <c>vocab.txt</c>.</param>
    /// <param name="lowerCase">The tokenizer's <c>do_lower_case</c>.</param>
    /// <param name="pooling">How the sentence embedding is pooled.</param>
    /// <param name="folder">The folder to write (replaced when it exists).</param>
    /// <param name="provenance">What the weights are and where they came from, for the manifest.</param>
    /// <param name="modelCard">The text of a <c>MODEL_CARD.md</c> to write beside the weights, or null for none.</param>
    public static CheckpointManifest WriteFolder(OnnxBertWeights w, string vocabulary, bool lowerCase, SentencePooling pooling, string folder, JsonObject provenance,
        string? modelCard = null)
    {
        var staging = Directory.CreateTempSubdirectory("klf-onnx-import-");
        try
        {
            var vocabPath = Path.Combine(staging.FullName, "vocab.txt");
            File.WriteAllText(vocabPath, vocabulary);
            var tokens = vocabulary.Replace("\r\n", "\n").Split('\n');
            int IdOf(string t) => Array.IndexOf(tokens, t) is var i and >= 0 ? i : throw new InvalidDataException($"the vocabulary has no {t} token");
            var specials = new JsonObject { ["cls_token"] = "[CLS]", ["sep_token"] = "[SEP]", ["pad_token"] = "[PAD]", ["unk_token"] = "[UNK]", ["mask_token"] = "[MASK]" };
            var tokenizerConfig = new JsonObject
            {
                ["tokenizer_class"] = "BertTokenizer", ["do_lower_case"] = lowerCase, ["strip_accents"] = null, ["tokenize_chinese_chars"] = true,
                ["model_max_length"] = w.Config.MaxPositionEmbeddings, ["clean_up_tokenization_spaces"] = true,
            };
            foreach (var (k, v) in specials) tokenizerConfig[k] = v!.DeepClone();
            var options = new System.Text.Json.JsonSerializerOptions { WriteIndented = true };
            File.WriteAllText(Path.Combine(staging.FullName, "tokenizer_config.json"), tokenizerConfig.ToJsonString(options));
            File.WriteAllText(Path.Combine(staging.FullName, "special_tokens_map.json"), specials.ToJsonString(options));
            var config = w.Config with { PadTokenId = IdOf("[PAD]"), SepTokenId = IdOf("[SEP]") };
            using var model = BertSentenceEncoder.Create(config);
            model.Pooling = pooling;
            model.Normalize = true;
            using (torch.no_grad())
                foreach (var (name, p) in model.named_parameters())
                {
                    var (shape, data) = w.Weights[name];
                    using var t = torch.tensor(data, shape, ScalarType.Float32);
                    p.copy_(t);
                }
            var tokenizer = Klf.Tokenizers.TokenizerLoader.FromFolder(staging.FullName);
            var names = new List<string> { "vocab.txt", "tokenizer_config.json", "special_tokens_map.json" };
            if (modelCard is not null)
            {
                File.WriteAllText(Path.Combine(staging.FullName, "MODEL_CARD.md"), modelCard);
                names.Add("MODEL_CARD.md");
            }
            var files = names.Select(f => Path.Combine(staging.FullName, f));
            return Checkpoint.Save(model, folder, provenance, files, tokenizer: tokenizer);
        }
        finally { staging.Delete(recursive: true); }
    }

    private static float[] Floats(TensorProto t, string name, string source)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External) throw new InvalidDataException($"{source}: {name} is stored outside the file (external data is not supported)");
        if (t.DataType != (int)TensorProto.Types.DataType.Float) throw new InvalidDataException($"{source}: {name} is of ONNX type {(TensorProto.Types.DataType)t.DataType}, not float32");
        long count = t.Dims.Aggregate(1L, (a, b) => a * b);
        float[] data;
        if (!t.RawData.IsEmpty)
        {
            if (t.RawData.Length != count * 4) throw new InvalidDataException($"{source}: {name} holds {t.RawData.Length} bytes for {count} floats");
            data = new float[count];
            var bytes = t.RawData.Span;
            for (var i = 0; i < data.Length; i++) data[i] = BitConverter.ToSingle(bytes.Slice(i * 4, 4));   // ONNX raw data is little-endian
        }
        else
        {
            if (t.FloatData.Count != count) throw new InvalidDataException($"{source}: {name} holds {t.FloatData.Count} floats for a shape of {count}");
            data = t.FloatData.ToArray();
        }
        return data;
    }

    private static float[] Transpose(float[] a, long rows, long cols)
    {
        var t = new float[a.Length];
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
        return t;
    }

    // H from the first reshape of a projection to (B, T, H, D): a constant 4-element shape, or a Concat whose last two parts are constants.
    private static int? Heads(GraphProto g, Func<string, TensorProto?> valueOf, Dictionary<string, NodeProto> producer, long hidden)
    {
        static long[]? Ints(TensorProto? t) => t is null ? null : t.DataType == (int)TensorProto.Types.DataType.Int64
            ? (!t.RawData.IsEmpty ? Enumerable.Range(0, t.RawData.Length / 8).Select(i => BitConverter.ToInt64(t.RawData.Span.Slice(i * 8, 8))).ToArray() : t.Int64Data.ToArray())
            : null;
        foreach (var r in g.Node.Where(n => n.OpType == "Reshape" && n.Input.Count == 2))
        {
            long[]? shape = Ints(valueOf(r.Input[1]));
            if (shape is null && producer.TryGetValue(r.Input[1], out var concat) && concat.OpType == "Concat")
            {
                var parts = concat.Input.Select(i => Ints(valueOf(i))).ToArray();
                if (parts.Length == 4 && parts[2] is [var h] && parts[3] is [var d]) shape = [-1, -1, h, d];
            }
            if (shape is [_, _, var heads, var dim] && heads > 0 && heads * dim == hidden) return (int)heads;
        }
        return null;
    }

    private static float? Epsilon(GraphProto g, Func<string, TensorProto?> valueOf, Dictionary<string, NodeProto> producer)
    {
        if (g.Node.FirstOrDefault(n => n.OpType == "LayerNormalization") is { } ln)
            return ln.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
        foreach (var sqrt in g.Node.Where(n => n.OpType == "Sqrt"))
            if (producer.TryGetValue(sqrt.Input[0], out var add) && add.OpType == "Add")
                foreach (var i in add.Input)
                    if (valueOf(i) is { } c && c.DataType == (int)TensorProto.Types.DataType.Float)
                        return !c.RawData.IsEmpty ? BitConverter.ToSingle(c.RawData.Span[..4]) : c.FloatData[0];
        return null;
    }

    private static string? Activation(GraphProto g)
    {
        var ops = g.Node.Select(n => n.OpType).ToHashSet();
        if (ops.Contains("Erf") || ops.Contains("Gelu")) return "gelu";
        if (ops.Contains("Pow") && ops.Contains("Tanh") && g.Node.Count(n => n.OpType == "Tanh") > 1) return "gelu_new";
        if (ops.Contains("Relu")) return "relu";
        return null;
    }
}
