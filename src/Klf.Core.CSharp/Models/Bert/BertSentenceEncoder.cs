using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Klf.Models.Bert;

/// <summary>How a sentence encoder turns its last hidden states into one embedding (sentence-transformers' <c>Pooling</c>).</summary>
public enum SentencePooling
{
    /// <summary>The mean over the real (unpadded) tokens (all-MiniLM-L6-v2).</summary>
    Mean,
    /// <summary>The first token's state, <c>[CLS]</c> (snowflake-arctic-embed).</summary>
    Cls,
}

/// <summary>
/// A BERT-family encoder used as a sentence encoder (HF <c>BertModel</c> weights; sentence-transformers'
/// pooling and normalisation on top) that classifies by similarity: an input and each of its candidate
/// answers are embedded by the same encoder, and the answer is the most similar candidate. There is no
/// per-task head, so everything a task teaches lives in the shared encoder's parameters. Parameter
/// names are the HF keys (<c>embeddings.word_embeddings.weight</c>, <c>encoder.layer.0.attention.self.query.weight</c>, …).
/// The pooler of BERT checkpoints (<c>pooler.dense</c>) is not part of it: sentence embeddings do not
/// use it, and its keys are ignored on load.
/// </summary>
public sealed class BertSentenceEncoder : nn.Module, ILanguageModel, IChoiceModel
{
    /// <summary>Word, position and token-type embeddings.</summary>
    public readonly BertEmbeddings embeddings;
    /// <summary>The transformer layers.</summary>
    public readonly BertEncoder encoder;

    /// <summary>The config this model was built from.</summary>
    public BertConfig Config { get; }

    /// <summary>How the last hidden states become the sentence embedding (default <see cref="SentencePooling.Mean"/>).</summary>
    public SentencePooling Pooling { get; set; } = SentencePooling.Mean;

    /// <summary>Whether embeddings are scaled to unit length (sentence-transformers' <c>Normalize</c>; default true).</summary>
    public bool Normalize { get; set; } = true;

    /// <summary>
    /// The factor on the cosine similarities that are the logits of <see cref="ComputeLoss"/> (the inverse
    /// temperature; 20 as sentence-transformers' MultipleNegativesRankingLoss). Choosing does not depend on it.
    /// </summary>
    public double SimilarityScale { get; set; } = 20.0;

    /// <summary>
    /// A model with freshly initialised weights on the CPU in float32 (normal(0, initializer_range) for
    /// linear and embedding weights, biases zero, pad embedding row zero, norms one; torch's global
    /// generator: seed it with <c>torch.manual_seed</c>). See <see cref="Create"/>.
    /// </summary>
    public BertSentenceEncoder(BertConfig config) : base(nameof(BertSentenceEncoder))
    {
        Config = config;
        embeddings = new BertEmbeddings(config);
        encoder = new BertEncoder(config);
        RegisterComponents();
        InitWeights();
    }

    /// <summary>Builds a model, then moves it to <paramref name="device"/> and casts it to <paramref name="dtype"/>.</summary>
    public static BertSentenceEncoder Create(BertConfig config, Device? device = null, ScalarType? dtype = null)
    {
        var m = device?.type == DeviceType.META ? LanguageModels.OnMeta(() => new BertSentenceEncoder(config)) : new BertSentenceEncoder(config);
        if (device is not null) m.to(device);
        if (dtype is not null) m.to(dtype.Value);
        return m;
    }

    void InitWeights()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("LayerNorm.weight")) nn.init.ones_(p);
            else if (name.EndsWith(".bias")) nn.init.zeros_(p);
            else nn.init.normal_(p, 0.0, Config.InitializerRange);
        }
        embeddings.word_embeddings.weight![Config.PadTokenId].zero_();
    }

    // ------------------------------------------------------------------ ILanguageModel

    /// <inheritdoc/>
    public ModelFamily Family => ModelFamily.EncoderOnly;
    /// <inheritdoc/>
    public nn.Module Module => this;
    /// <inheritdoc/>
    public string ModelType => BertConfig.ModelTypeName;
    /// <inheritdoc/>
    public JsonObject ConfigJson() => Config.ToJson();
    /// <inheritdoc/>
    public int PadTokenId => Config.PadTokenId;
    /// <summary>The config's <c>sep_token_id</c>, or -1 when it names none: encoder inputs carry their own <c>[SEP]</c> (the tokenizer frames them), so batching never appends one.</summary>
    public int EosTokenId => Config.SepTokenId ?? -1;
    /// <summary>Empty: a sentence encoder ties no weights.</summary>
    public IReadOnlyDictionary<string, string> TiedAliases { get; } = new Dictionary<string, string>();

    // ------------------------------------------------------------------ forward

    /// <summary>
    /// Last hidden states (B, T, C) in the model's dtype, fresh, owned by the caller. <paramref name="inputIds"/>
    /// and <paramref name="attentionMask"/>: (B, T) int64 (mask 1 for real tokens); T at most
    /// <see cref="BertConfig.MaxPositionEmbeddings"/>. Arguments are not disposed.
    /// </summary>
    public Tensor Hidden(Tensor inputIds, Tensor attentionMask)
    {
        if (inputIds.shape[1] > Config.MaxPositionEmbeddings)
            throw new ArgumentException($"an input of {inputIds.shape[1]} tokens is longer than the model's {Config.MaxPositionEmbeddings} positions (max_position_embeddings); cut it first", nameof(inputIds));
        using var scope = torch.NewDisposeScope();
        var x = embeddings.Forward(inputIds);                                          // (B, T, C)
        return encoder.Forward(x, attentionMask).MoveToOuterDisposeScope();             // (B, T, C)
    }

    /// <summary>
    /// Sentence embeddings (B, C) in the model's dtype, fresh, owned by the caller: the hidden states
    /// pooled by <see cref="Pooling"/> (the mean over tokens with mask 1, or the first token) and, with
    /// <see cref="Normalize"/>, scaled to unit length. Arguments as <see cref="Hidden"/>.
    /// </summary>
    public Tensor Embed(Tensor inputIds, Tensor attentionMask)
    {
        using var scope = torch.NewDisposeScope();
        var h = Hidden(inputIds, attentionMask);                                       // (B, T, C)
        Tensor e;
        if (Pooling == SentencePooling.Cls) e = h[.., 0];                               // (B, C)
        else
        {
            var m = attentionMask.unsqueeze(-1).to(h.dtype);                           // (B, T, 1)
            e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9);                             // (B, C)
        }
        if (Normalize) e = F.normalize(e, 2.0, 1, 1e-12);
        return e.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The embeddings of token sequences (each framed by the tokenizer, <c>[CLS] … [SEP]</c>, at most
    /// <see cref="BertConfig.MaxPositionEmbeddings"/> long) as float arrays of length C, under no_grad and
    /// in eval mode (the training mode is restored), batched by <paramref name="batchSize"/>.
    /// </summary>
    public float[][] Encode(IReadOnlyList<int[]> sequences, int batchSize = 32)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "the batch size must be at least 1");
        var result = new float[sequences.Count][];
        EvalMode(() =>
        {
            for (var s = 0; s < sequences.Count; s += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                var rows = sequences.Skip(s).Take(batchSize).ToArray();
                var (ids, mask) = Pad(rows);
                var e = Embed(ids, mask).to(ScalarType.Float32).cpu();                 // (b, C)
                var flat = e.data<float>().ToArray();
                long c = e.shape[1];
                for (var i = 0; i < rows.Length; i++) result[s + i] = flat.AsSpan((int)(i * c), (int)c).ToArray();
            }
        });
        return result;
    }

    /// <summary>
    /// Mean cross-entropy over the batch's examples of the softmax over each example's own choices, the
    /// logits being <see cref="SimilarityScale"/> × the cosine similarity of the input's embedding and each
    /// choice's (choices not the example's are excluded). Needs <see cref="LmBatch.Choices"/>. Fresh scalar
    /// float32 tensor, owned by the caller.
    /// </summary>
    public Tensor ComputeLoss(LmBatch batch)
    {
        var choices = batch.Choices ?? throw new ArgumentException("an encoder-only batch needs its choices (Batching.Build with the EncoderOnly layout)", nameof(batch));
        using var scope = torch.NewDisposeScope();
        var logits = Logits(batch.InputIds, batch.AttentionMask, choices.Ids, choices.Mask).to(ScalarType.Float32);   // (B, C')
        var masked = logits.masked_fill(choices.Allowed.logical_not(), torch.finfo(ScalarType.Float32).min);
        return F.cross_entropy(masked, batch.Labels).MoveToOuterDisposeScope();
    }

    // SimilarityScale · cos(input, choice), (B, C'), fresh.
    Tensor Logits(Tensor ids, Tensor mask, Tensor choiceIds, Tensor choiceMask)
    {
        using var scope = torch.NewDisposeScope();
        var e = F.normalize(Embed(ids, mask), 2.0, 1, 1e-12);                          // (B, C)
        var c = F.normalize(Embed(choiceIds, choiceMask), 2.0, 1, 1e-12);              // (C', C)
        return (e.matmul(c.t()) * SimilarityScale).MoveToOuterDisposeScope();        // (B, C')
    }

    /// <inheritdoc/>
    /// <remarks>Each distinct choice is embedded once per call, however many prompts share it.</remarks>
    public int[] Choose(IReadOnlyList<int[]> prompts, IReadOnlyList<int[][]> choices, int batchSize = 16)
    {
        if (choices.Count != prompts.Count) throw new ArgumentException($"{prompts.Count} prompts but {choices.Count} choice lists", nameof(choices));
        for (var i = 0; i < choices.Count; i++)
            if (choices[i] is not { Length: > 0 }) throw new ArgumentException($"prompt {i} has no choices to choose from", nameof(choices));
        // Choices, embedded once each (a task's labels are shared by all its examples).
        var keys = new Dictionary<string, int>(StringComparer.Ordinal);
        var distinct = new List<int[]>();
        var local = choices.Select(cs => cs.Select(c =>
        {
            var key = string.Join(',', c);
            if (!keys.TryGetValue(key, out var k)) { keys[key] = k = distinct.Count; distinct.Add(c); }
            return k;
        }).ToArray()).ToArray();
        var choiceEmb = Encode(distinct, batchSize);
        var promptEmb = Encode(prompts, batchSize);
        var picks = new int[prompts.Count];
        for (var i = 0; i < prompts.Count; i++)
        {
            double best = double.NegativeInfinity;
            for (var j = 0; j < local[i].Length; j++)
            {
                var score = Cosine(promptEmb[i], choiceEmb[local[i][j]]);
                if (score > best) { best = score; picks[i] = j; }
            }
        }
        return picks;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (var i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return dot / Math.Max(Math.Sqrt(na) * Math.Sqrt(nb), 1e-12);
    }

    /// <summary>Encoder-only models do not generate: always throws <see cref="NotSupportedException"/>.</summary>
    public int[][] GenerateGreedy(IReadOnlyList<int[]> prompts, GenerationOptions options) =>
        throw new NotSupportedException("a BERT sentence encoder does not generate text: it chooses among candidate answers (IChoiceModel.Choose)");

    // Right-padded (N, T) ids and mask on the model's device.
    (Tensor Ids, Tensor Mask) Pad(IReadOnlyList<int[]> rows)
    {
        int n = rows.Count, t = rows.Max(r => r.Length);
        var ids = new long[n * t];
        var mask = new long[n * t];
        Array.Fill(ids, (long)Config.PadTokenId);
        for (var i = 0; i < n; i++)
            for (var j = 0; j < rows[i].Length; j++) { ids[i * t + j] = rows[i][j]; mask[i * t + j] = 1; }
        var device = ParameterDevice();
        return (torch.tensor(ids, new long[] { n, t }, ScalarType.Int64, device), torch.tensor(mask, new long[] { n, t }, ScalarType.Int64, device));
    }

    /// <summary>The device of the parameters (that of the word embeddings).</summary>
    public Device ParameterDevice()
    {
        // Embedding.weight hands out a fresh handle on each get: let a scope dispose it.
        using var scope = torch.NewDisposeScope();
        return embeddings.word_embeddings.weight!.device;
    }

    void EvalMode(Action body)
    {
        var wasTraining = training;
        eval();
        try
        {
            using var _ = torch.no_grad();
            body();
        }
        finally { train(wasTraining); }
    }
}
