using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.T5;

/// <summary>
/// T5 encoder-decoder with a language-model head, numerically following Hugging Face's
/// <c>modeling_t5.T5ForConditionalGeneration</c>. Its parameter names are exactly the HF checkpoint keys
/// (<c>shared.weight</c>, <c>encoder.block.0.layer.0.SelfAttention.q.weight</c>, …, <c>lm_head.weight</c> when
/// untied). HF's <c>encoder.embed_tokens</c> / <c>decoder.embed_tokens</c> are aliases of <c>shared</c> here
/// (see <see cref="TiedAliases"/>), not separate parameters.
/// </summary>
public sealed class T5ForConditionalGeneration : nn.Module, ILanguageModel
{
    /// <summary>
    /// Token embedding shared by encoder and decoder (and by the LM head when tied), weight (V, D).
    /// Note: TorchSharp's <c>Embedding.weight</c> getter returns a new handle to the same storage at every call;
    /// read it inside a dispose scope (or dispose the handle). <c>named_parameters()</c> returns stable objects.
    /// </summary>
    public Embedding shared;
    /// <summary>The encoder stack.</summary>
    public T5Stack encoder;
    /// <summary>The decoder stack.</summary>
    public T5Stack decoder;
    /// <summary>Untied LM head, weight (V, D), no bias; null when <c>tie_word_embeddings</c>.</summary>
    public Linear? lm_head;

    private readonly T5Config config;

    private T5ForConditionalGeneration(T5Config config) : base(nameof(T5ForConditionalGeneration))
    {
        config.Validate();
        this.config = config;
        shared = nn.Embedding(config.VocabSize, config.DModel);
        encoder = new T5Stack(config, isDecoder: false);
        decoder = new T5Stack(config, isDecoder: true);
        if (!config.TieWordEmbeddings)
            lm_head = nn.Linear(config.DModel, config.VocabSize, hasBias: false);
        RegisterComponents();
        var aliases = new Dictionary<string, string>
        {
            ["encoder.embed_tokens.weight"] = "shared.weight",
            ["decoder.embed_tokens.weight"] = "shared.weight",
        };
        if (config.TieWordEmbeddings) aliases["lm_head.weight"] = "shared.weight";
        TiedAliases = aliases;
    }

    /// <summary>
    /// Builds a model with Hugging Face's <c>_init_weights</c> distributions (drawn from torch's global
    /// generator: call <c>torch.manual_seed</c> first for reproducibility; weights are drawn on the CPU in float32
    /// and then moved, so they do not depend on <paramref name="device"/>), on <paramref name="device"/>
    /// (default CPU) in <paramref name="dtype"/> (default float32; bfloat16 works). The caller owns (disposes) the model.
    /// </summary>
    public static T5ForConditionalGeneration Create(T5Config config, Device? device = null, ScalarType? dtype = null)
    {
        var model = device?.type == DeviceType.META ? LanguageModels.OnMeta(() => new T5ForConditionalGeneration(config)) : new T5ForConditionalGeneration(config);
        model.InitWeights();
        if (device is not null && device.type != DeviceType.CPU) model.to(device);
        if (dtype is { } dt && dt != ScalarType.Float32) model.to(dt);
        return model;
    }

    /// <summary>The config this model was built from.</summary>
    public T5Config Config => config;

    /// <inheritdoc/>
    public ModelFamily Family => ModelFamily.EncoderDecoder;

    /// <inheritdoc/>
    public nn.Module Module => this;

    /// <inheritdoc/>
    public string ModelType => T5Config.ModelTypeName;

    /// <inheritdoc/>
    public JsonObject ConfigJson() => config.ToJson();

    /// <inheritdoc/>
    public int PadTokenId => config.PadTokenId;

    /// <inheritdoc/>
    public int EosTokenId => config.EosTokenId;

    /// <summary>
    /// <c>encoder.embed_tokens.weight</c> and <c>decoder.embed_tokens.weight</c> → <c>shared.weight</c>, plus
    /// <c>lm_head.weight</c> → <c>shared.weight</c> when tied.
    /// </summary>
    public IReadOnlyDictionary<string, string> TiedAliases { get; }

    // TorchSharp's Embedding.weight getter returns a fresh handle at each call (Linear.weight does not):
    // read shared.weight only inside a dispose scope; device and dtype come from a norm weight instead.

    /// <summary>Device of the parameters.</summary>
    public Device Device => encoder.final_layer_norm.weight.device;

    /// <summary>Element type of the parameters.</summary>
    public ScalarType DType => encoder.final_layer_norm.weight.dtype;

    /// <summary>
    /// HF's <c>_init_weights</c> with factor f = initializer_factor: shared ~ N(0, f); lm_head (untied) ~ N(0, f);
    /// q ~ N(0, f·(d_model·d_kv)^-½); k, v ~ N(0, f·d_model^-½); o ~ N(0, f·(H·d_kv)^-½);
    /// relative_attention_bias ~ N(0, f·d_model^-½); wi, wi_0, wi_1 ~ N(0, f·d_model^-½); wo ~ N(0, f·d_ff^-½);
    /// layer norms = f. Writes in place under no_grad, from torch's global generator.
    /// </summary>
    public void InitWeights()
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope(); // frees the handles returned by Embedding.weight
        double f = config.InitializerFactor, dModel = config.DModel;
        void Normal(Tensor w, double std) => nn.init.normal_(w, 0.0, std);
        void Ones(T5LayerNorm n) => n.weight.fill_(f);

        Normal(shared.weight!, f);
        if (lm_head is not null) Normal(lm_head.weight!, f);
        void Attention(T5Attention a)
        {
            Normal(a.q.weight!, f * Math.Pow(dModel * config.DKv, -0.5));
            Normal(a.k.weight!, f * Math.Pow(dModel, -0.5));
            Normal(a.v.weight!, f * Math.Pow(dModel, -0.5));
            Normal(a.o.weight!, f * Math.Pow(config.NumHeads * config.DKv, -0.5));
            if (a.relative_attention_bias is not null) Normal(a.relative_attention_bias.weight!, f * Math.Pow(dModel, -0.5));
        }
        foreach (var stack in new[] { encoder, decoder })
        {
            foreach (var b in stack.block)
            {
                Attention(b.SelfAttentionLayer.SelfAttention);
                Ones(b.SelfAttentionLayer.layer_norm);
                if (b.CrossAttentionLayer is { } cross)
                {
                    Attention(cross.EncDecAttention);
                    Ones(cross.layer_norm);
                }
                switch (b.FeedForwardLayer.DenseReluDense)
                {
                    case T5DenseActDense d:
                        Normal(d.wi.weight!, f * Math.Pow(dModel, -0.5));
                        Normal(d.wo.weight!, f * Math.Pow(config.DFf, -0.5));
                        break;
                    case T5DenseGatedActDense g:
                        Normal(g.wi_0.weight!, f * Math.Pow(dModel, -0.5));
                        Normal(g.wi_1.weight!, f * Math.Pow(dModel, -0.5));
                        Normal(g.wo.weight!, f * Math.Pow(config.DFf, -0.5));
                        break;
                }
                Ones(b.FeedForwardLayer.layer_norm);
            }
            Ones(stack.final_layer_norm);
        }
    }

    /// <summary>
    /// Encoder: <paramref name="inputIds"/> (B, S) int64, <paramref name="attentionMask"/> (B, S) 1 = real
    /// (null = all real). Returns fresh (B, S, D) hidden states in the parameter dtype, owned by the caller.
    /// </summary>
    public Tensor Encode(Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = torch.NewDisposeScope();
        var embeds = shared.call(inputIds); // (B, S, D)
        return encoder.forward(embeds, attentionMask, null, null, null).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Decoder + LM head. <paramref name="decoderInputIds"/> (B, T) int64; <paramref name="encoderHidden"/> (B, S, D)
    /// from <see cref="Encode"/>; <paramref name="encoderMask"/> (B, S) (null = all real). Without a cache the T
    /// inputs are positions 0..T-1. With <paramref name="cache"/> they continue at cache.PastLength (usually T = 1),
    /// the cache stores their keys/values and, at its first use, the cross-attention keys/values of
    /// <paramref name="encoderHidden"/> (later calls must pass the same encoder output and mask).
    /// Returns fresh logits (B, T, V) in the parameter dtype, owned by the caller; arguments are not disposed.
    /// </summary>
    public Tensor Decode(Tensor decoderInputIds, Tensor encoderHidden, Tensor? encoderMask, T5KvCache? cache = null)
    {
        using var scope = torch.NewDisposeScope();
        var embeds = shared.call(decoderInputIds); // (B, T, D)
        var hidden = decoder.forward(embeds, null, encoderHidden, encoderMask, cache); // (B, T, D)
        return LmHead(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>Like <see cref="Decode"/>, but the LM head runs on the last position only: fresh logits (B, V).</summary>
    private Tensor DecodeLast(Tensor decoderInputIds, Tensor encoderHidden, Tensor? encoderMask, T5KvCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var embeds = shared.call(decoderInputIds); // (B, T, D)
        var hidden = decoder.forward(embeds, null, encoderHidden, encoderMask, cache); // (B, T, D)
        return LmHead(hidden.select(1, -1)).MoveToOuterDisposeScope(); // (B, V)
    }

    /// <summary>(B, T, D) decoder output → fresh (B, T, V) logits: tied = (h·d_model^-½)·sharedᵀ, untied = lm_head(h).</summary>
    public Tensor LmHead(Tensor decoderHidden)
    {
        if (lm_head is not null) return lm_head.call(decoderHidden);
        using var scope = torch.NewDisposeScope();
        var scaled = decoderHidden * Math.Pow(config.DModel, -0.5); // T5 v1.0 rescale before the tied head
        var w = shared.weight!;
        // A tied embedding held in a low precision (LowPrecisionBase): the head runs in its dtype, the logits come back in h's.
        return (w.dtype == scaled.dtype ? nn.functional.linear(scaled, w) : nn.functional.linear(scaled.to(w.dtype), w).to(scaled.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// HF's <c>_shift_right</c>: (B, L) labels → fresh (B, L) decoder inputs [decoder_start, labels[:, :-1]],
    /// with -100 replaced by pad_token_id.
    /// </summary>
    public Tensor ShiftRight(Tensor labels)
    {
        using var scope = torch.NewDisposeScope();
        long b = labels.shape[0], l = labels.shape[1];
        var start = torch.full(b, 1, config.DecoderStartTokenId, ScalarType.Int64, labels.device); // (B, 1)
        var shifted = torch.cat([start, labels.narrow(1, 0, l - 1).to(ScalarType.Int64)], 1); // (B, L)
        return shifted.masked_fill(shifted.eq(-100), config.PadTokenId).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean float32 cross-entropy over label positions (labels != -100): encoder on InputIds/AttentionMask,
    /// decoder on <see cref="ShiftRight"/>(Labels). Uses the current train/eval mode (dropout in training).
    /// Returns a fresh scalar float32 tensor owned by the caller (NaN if no label position carries loss).
    /// </summary>
    public Tensor ComputeLoss(LmBatch batch)
    {
        using var scope = torch.NewDisposeScope();
        var encoderHidden = Encode(batch.InputIds, batch.AttentionMask); // (B, S, D)
        var decoderInputs = ShiftRight(batch.Labels); // (B, L)
        var logits = Decode(decoderInputs, encoderHidden, batch.AttentionMask); // (B, L, V)
        var flat = logits.to(ScalarType.Float32).view(-1, config.VocabSize); // (B·L, V)
        var loss = nn.functional.cross_entropy(flat, batch.Labels.to(ScalarType.Int64).view(-1), ignore_index: -100);
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Greedy decoding (see <see cref="ILanguageModel.GenerateGreedy"/>). Prompts (non-empty token id arrays,
    /// the encoder input as is, e.g. ending in EOS) are right-padded per batch of options.BatchSize with an
    /// attention mask; the decoder starts from decoder_start_token_id and all rows advance together. A row stops
    /// after emitting any EOS id (default: eos_token_id) or after MaxNewTokens tokens. With UseCache the decoder
    /// feeds one token per step through a <see cref="T5KvCache"/>; without it the whole prefix is recomputed
    /// (same tokens). Runs under no_grad in eval mode (the previous mode is restored), one dispose scope per step.
    /// </summary>
    public int[][] GenerateGreedy(IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSize <= 0) throw new ArgumentException("BatchSize must be positive", nameof(options));
        for (int i = 0; i < prompts.Count; i++)
            if (prompts[i] is null || prompts[i].Length == 0) throw new ArgumentException($"Prompt {i} is empty; T5 needs at least one encoder token", nameof(prompts));

        var eos = new HashSet<long>((options.EosTokenIds ?? [config.EosTokenId]).Select(x => (long)x));
        var results = new int[prompts.Count][];
        bool wasTraining = training;
        eval();
        try
        {
            using var noGrad = torch.no_grad();
            for (int start = 0; start < prompts.Count; start += options.BatchSize)
            {
                int count = Math.Min(options.BatchSize, prompts.Count - start);
                var batchResults = GenerateBatch(prompts.Skip(start).Take(count).ToArray(), options, eos);
                Array.Copy(batchResults, 0, results, start, count);
            }
        }
        finally
        {
            train(wasTraining);
        }
        return results;
    }

    private int[][] GenerateBatch(int[][] prompts, GenerationOptions options, HashSet<long> eos)
    {
        int b = prompts.Length;
        int s = prompts.Max(p => p.Length);
        var device = Device;
        var ids = new long[b * s];
        var mask = new long[b * s];
        for (int r = 0; r < b; r++)
            for (int c = 0; c < s; c++)
            {
                bool real = c < prompts[r].Length;
                ids[r * s + c] = real ? prompts[r][c] : config.PadTokenId;
                mask[r * s + c] = real ? 1 : 0;
            }

        var generated = Enumerable.Range(0, b).Select(_ => new List<int>()).ToArray();
        var finished = new bool[b];
        // Decoder tokens fed so far, per row (start token + every argmax, also after a row finished: rows are independent).
        var history = new List<long>[b];
        for (int r = 0; r < b; r++) history[r] = [config.DecoderStartTokenId];

        using var batchScope = torch.NewDisposeScope(); // owns the encoder inputs and output of this batch
        var inputIds = torch.tensor(ids, [b, s], ScalarType.Int64, device); // (B, S)
        var attentionMask = torch.tensor(mask, [b, s], ScalarType.Int64, device); // (B, S)
        var encoderHidden = Encode(inputIds, attentionMask); // (B, S, D)
        using var cache = options.UseCache ? new T5KvCache(config.NumDecoderLayers, options.MaxNewTokens + 1) : null;

        for (int step = 0; step < options.MaxNewTokens && finished.Contains(false); step++)
        {
            using var stepScope = torch.NewDisposeScope();
            Tensor logits;
            if (cache is not null)
            {
                var last = torch.tensor(history.Select(h => h[^1]).ToArray(), [b, 1], ScalarType.Int64, device); // (B, 1)
                logits = DecodeLast(last, encoderHidden, attentionMask, cache); // (B, V)
            }
            else
            {
                int t = history[0].Count;
                var prefix = torch.tensor(history.SelectMany(h => h).ToArray(), [b, t], ScalarType.Int64, device); // (B, t)
                logits = DecodeLast(prefix, encoderHidden, attentionMask, null); // (B, V)
            }
            var next = logits.argmax(-1).cpu().data<long>().ToArray(); // (B)
            for (int r = 0; r < b; r++)
            {
                history[r].Add(next[r]);
                if (finished[r]) continue;
                if (eos.Contains(next[r])) finished[r] = true;
                else generated[r].Add((int)next[r]);
            }
        }
        return generated.Select(g => g.ToArray()).ToArray();
    }
}
