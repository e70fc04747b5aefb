using System.Text.Json.Nodes;
using Klf.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Klf.Models.Llama;

// LLaMA, as Hugging Face's modeling_llama, top to bottom: attention, MLP, decoder layer, the
// stack, the causal LM (forward, loss). RoPE and rope_scaling: LlamaRotary.cs; greedy
// generation: LlamaGeneration.cs.
// Shapes: B batch, T new tokens, S = past + T key positions, C hidden, H query heads,
// Hkv key/value heads, D head dim, V vocabulary. Field names are the HF checkpoint keys.

/// <summary>Multi-head attention with grouped-query key/value heads and RoPE (HF <c>LlamaAttention</c>).</summary>
public sealed class LlamaAttention : nn.Module
{
    /// <summary>(H*D, C) query projection; bias iff <c>attention_bias</c>.</summary>
    public readonly Linear q_proj;
    /// <summary>(Hkv*D, C) key projection; bias iff <c>attention_bias</c>.</summary>
    public readonly Linear k_proj;
    /// <summary>(Hkv*D, C) value projection; bias iff <c>attention_bias</c>.</summary>
    public readonly Linear v_proj;
    /// <summary>(C, H*D) output projection; bias iff <c>attention_bias</c>.</summary>
    public readonly Linear o_proj;

    readonly int nHead, nKvHead, headDim;

    /// <summary>Creates the projections from <paramref name="config"/>.</summary>
    public LlamaAttention(LlamaConfig config) : base(nameof(LlamaAttention))
    {
        nHead = config.NumAttentionHeads;
        nKvHead = config.NumKeyValueHeads;
        headDim = config.HeadDim;
        var bias = config.AttentionBias;
        q_proj = nn.Linear(config.HiddenSize, nHead * headDim, hasBias: bias);
        k_proj = nn.Linear(config.HiddenSize, nKvHead * headDim, hasBias: bias);
        v_proj = nn.Linear(config.HiddenSize, nKvHead * headDim, hasBias: bias);
        o_proj = nn.Linear(nHead * headDim, config.HiddenSize, hasBias: bias);
        RegisterComponents();
    }

    /// <summary>
    /// x (B, T, C); cos/sin (B, T, D); mask (B, 1, T, S) additive float in x's dtype (0 or the
    /// dtype's minimum); returns (B, T, C). With a cache, this layer's keys/values are appended.
    /// </summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, LlamaKvCache? cache, int layerIndex)
    {
        using var scope = torch.NewDisposeScope();
        long B = x.shape[0], T = x.shape[1];
        var q = q_proj.call(x).view(B, T, nHead, headDim).transpose(1, 2);     // (B, H, T, D)
        var k = k_proj.call(x).view(B, T, nKvHead, headDim).transpose(1, 2);   // (B, Hkv, T, D)
        var v = v_proj.call(x).view(B, T, nKvHead, headDim).transpose(1, 2);   // (B, Hkv, T, D)
        q = LlamaRotary.Apply(q, cos, sin);
        k = LlamaRotary.Apply(k, cos, sin);
        if (cache is not null) (k, v) = cache.Update(layerIndex, k, v);            // (B, Hkv, S, D)
        k = RepeatKv(k, nHead / nKvHead);                                          // (B, H, S, D)
        v = RepeatKv(v, nHead / nKvHead);                                          // (B, H, S, D)
        // softmax(q k^T / sqrt(D) + mask) v; the additive mask keeps fully masked rows (query on a
        // left pad) finite: they attend uniformly and their outputs are never used.
        var y = F.scaled_dot_product_attention(q, k, v, mask);                    // (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, nHead * headDim);           // (B, T, H*D)
        return o_proj.call(y).MoveToOuterDisposeScope();                        // (B, T, C)
    }

    /// <summary>(B, Hkv, S, D) → (B, Hkv*nRep, S, D), each key/value head repeated nRep times in a row (HF repeat_kv).</summary>
    public static Tensor RepeatKv(Tensor x, int nRep)
    {
        if (nRep == 1) return x.alias();
        long B = x.shape[0], Hkv = x.shape[1], S = x.shape[2], D = x.shape[3];
        using var expanded = x.unsqueeze(2).expand(B, Hkv, nRep, S, D);           // (B, Hkv, nRep, S, D)
        return expanded.reshape(B, Hkv * nRep, S, D);                              // (B, H, S, D)
    }
}

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) * up(x)) (HF <c>LlamaMLP</c>).</summary>
public sealed class LlamaMLP : nn.Module<Tensor, Tensor>
{
    /// <summary>(I, C) gate projection; bias iff <c>mlp_bias</c>.</summary>
    public readonly Linear gate_proj;
    /// <summary>(I, C) up projection; bias iff <c>mlp_bias</c>.</summary>
    public readonly Linear up_proj;
    /// <summary>(C, I) down projection; bias iff <c>mlp_bias</c>.</summary>
    public readonly Linear down_proj;

    /// <summary>Creates the projections from <paramref name="config"/>.</summary>
    public LlamaMLP(LlamaConfig config) : base(nameof(LlamaMLP))
    {
        gate_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias);
        up_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: config.MlpBias);
        down_proj = nn.Linear(config.IntermediateSize, config.HiddenSize, hasBias: config.MlpBias);
        RegisterComponents();
    }

    /// <summary>x (B, T, C) → fresh (B, T, C).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = F.silu(gate_proj.call(x)) * up_proj.call(x);   // (B, T, I)
        return down_proj.call(h).MoveToOuterDisposeScope();       // (B, T, C)
    }
}

/// <summary>Pre-norm transformer block (HF <c>LlamaDecoderLayer</c>).</summary>
public sealed class LlamaDecoderLayer : nn.Module
{
    /// <summary>Attention.</summary>
    public readonly LlamaAttention self_attn;
    /// <summary>SwiGLU MLP.</summary>
    public readonly LlamaMLP mlp;
    /// <summary>Norm before attention.</summary>
    public readonly RmsNorm input_layernorm;
    /// <summary>Norm before the MLP.</summary>
    public readonly RmsNorm post_attention_layernorm;

    readonly int layerIndex;

    /// <summary>Creates layer number <paramref name="layerIndex"/> (its slot in a KV cache).</summary>
    public LlamaDecoderLayer(LlamaConfig config, int layerIndex) : base(nameof(LlamaDecoderLayer))
    {
        this.layerIndex = layerIndex;
        self_attn = new LlamaAttention(config);
        mlp = new LlamaMLP(config);
        input_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps);
        post_attention_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    /// <summary>x (B, T, C) → fresh (B, T, C); see <see cref="LlamaAttention.Forward"/> for the other arguments.</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor mask, LlamaKvCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var h = x + self_attn.Forward(input_layernorm.forward(x), cos, sin, mask, cache, layerIndex);   // (B, T, C)
        var o = h + mlp.forward(post_attention_layernorm.forward(h));                                   // (B, T, C)
        return o.MoveToOuterDisposeScope();
    }
}

/// <summary>Embedding, the decoder layers and the final norm (HF <c>LlamaModel</c>).</summary>
public sealed class LlamaModel : nn.Module
{
    /// <summary>(V, C) token embedding.</summary>
    public readonly Embedding embed_tokens;
    /// <summary>The decoder layers.</summary>
    public readonly ModuleList<LlamaDecoderLayer> layers;
    /// <summary>Final norm.</summary>
    public readonly RmsNorm norm;

    readonly LlamaConfig config;

    /// <summary>Creates the stack from <paramref name="config"/> (the pad row of the embedding is a padding_idx, as in HF).</summary>
    public LlamaModel(LlamaConfig config) : base(nameof(LlamaModel))
    {
        this.config = config;
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, padding_idx: config.PadTokenId);
        layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i)).ToArray());
        norm = new RmsNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    /// <summary>
    /// Hidden states (B, T, C) after the final norm, fresh, owned by the caller.
    /// <paramref name="inputIds"/> (B, T) int64; <paramref name="attentionMask"/> (B, S) int64 1/0
    /// over past and new positions; <paramref name="positionIds"/> (B, T) int64.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor positionIds, LlamaKvCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var x = embed_tokens.call(inputIds);                                             // (B, T, C)
        // RoPE angles once per forward, shared by every layer. Only dynamic NTK scaling depends on
        // the sequence: it reads the largest position id (one device-to-host sync).
        var maxPos = config.RopeScaling?.RopeType == "dynamic" ? positionIds.max().item<long>() : 0;
        var (cos, sin) = LlamaRotary.CosSin(positionIds, LlamaRotary.InvFreq(config, maxPos), x.dtype);  // (B, T, D)
        var mask = BuildMask(attentionMask, inputIds.shape[1], x.dtype);                  // (B, 1, T, S)
        for (var i = 0; i < layers.Count; i++)
            x = layers[i].Forward(x, cos, sin, mask, cache);
        return norm.forward(x).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Additive attention mask (B, 1, T, S) in <paramref name="dtype"/>: 0 where query i (at
    /// sequence slot S-T+i) may see key j — j ≤ S-T+i and attentionMask[b, j] = 1 — else the dtype's minimum.
    /// </summary>
    public static Tensor BuildMask(Tensor attentionMask, long T, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var device = attentionMask.device;
        long S = attentionMask.shape[1];
        var queryPos = torch.arange(S - T, S, ScalarType.Int64, device).view(T, 1);     // (T, 1)
        var keyPos = torch.arange(0, S, ScalarType.Int64, device).view(1, S);           // (1, S)
        var causal = keyPos.le(queryPos).view(1, 1, T, S);                                // (1, 1, T, S)
        var padding = attentionMask.ne(0).view(attentionMask.shape[0], 1, 1, S);         // (B, 1, 1, S)
        var allowed = causal.logical_and(padding);                                        // (B, 1, T, S)
        var zero = torch.zeros(1, dtype, device);
        var min = torch.full(1, torch.finfo(dtype).min, dtype, device);
        return torch.where(allowed, zero, min).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// LLaMA causal language model (HF <c>LlamaForCausalLM</c>). Parameter names are the HF keys
/// (<c>model.embed_tokens.weight</c>, <c>model.layers.0.self_attn.q_proj.weight</c>, …,
/// <c>model.norm.weight</c>, <c>lm_head.weight</c>). With tied embeddings there is no
/// <c>lm_head</c> module: logits use <c>model.embed_tokens.weight</c>.
/// </summary>
public sealed partial class LlamaForCausalLM : nn.Module, ILanguageModel
{
    /// <summary>The transformer stack.</summary>
    public readonly LlamaModel model;
    /// <summary>(V, C) output projection, no bias; null when embeddings are tied.</summary>
    public readonly Linear? lm_head;

    /// <summary>The config this model was built from.</summary>
    public LlamaConfig Config { get; }

    /// <summary>
    /// A model with freshly initialised weights on the CPU in float32 (normal(0, initializer_range)
    /// for linear and embedding weights, biases zero, pad embedding row zero, norms one; the generator is
    /// torch's global one, seed it with <c>torch.manual_seed</c>). See <see cref="Create"/>.
    /// </summary>
    public LlamaForCausalLM(LlamaConfig config) : base(nameof(LlamaForCausalLM))
    {
        Config = config;
        model = new LlamaModel(config);
        if (!config.TieWordEmbeddings)
            lm_head = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        TiedAliases = config.TieWordEmbeddings
            ? new Dictionary<string, string> { ["lm_head.weight"] = "model.embed_tokens.weight" }
            : new Dictionary<string, string>();
        RegisterComponents();
        InitWeights();
    }

    /// <summary>Builds a model, then moves it to <paramref name="device"/> and casts it to <paramref name="dtype"/> (e.g. BFloat16).</summary>
    public static LlamaForCausalLM Create(LlamaConfig config, Device? device = null, ScalarType? dtype = null)
    {
        var m = device?.type == DeviceType.META ? LanguageModels.OnMeta(() => new LlamaForCausalLM(config)) : new LlamaForCausalLM(config);
        if (device is not null) m.to(device);
        if (dtype is not null) m.to(dtype.Value);
        return m;
    }

    /// <summary>The device of the parameters (that of the token embedding).</summary>
    public Device ParameterDevice()
    {
        // Embedding.weight hands out a fresh handle on each get: let a scope dispose it.
        using var scope = torch.NewDisposeScope();
        return model.embed_tokens.weight!.device;
    }

    void InitWeights()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight")) nn.init.ones_(p);
            else if (name.EndsWith(".bias")) nn.init.zeros_(p);
            else nn.init.normal_(p, 0.0, Config.InitializerRange);
        }
        if (Config.PadTokenId is int pad)
            model.embed_tokens.weight![pad].zero_();
    }

    // ------------------------------------------------------------------ ILanguageModel

    /// <inheritdoc/>
    public ModelFamily Family => ModelFamily.DecoderOnly;
    /// <inheritdoc/>
    public nn.Module Module => this;
    /// <inheritdoc/>
    public string ModelType => "llama";
    /// <inheritdoc/>
    public JsonObject ConfigJson() => Config.ToJson();
    /// <summary>The config's <c>pad_token_id</c>, or the EOS id when the config has none.</summary>
    public int PadTokenId => Config.PadTokenId ?? Config.EosTokenId;
    /// <inheritdoc/>
    public int EosTokenId => Config.EosTokenId;
    /// <summary>{"lm_head.weight" → "model.embed_tokens.weight"} when embeddings are tied, else empty.</summary>
    public IReadOnlyDictionary<string, string> TiedAliases { get; }

    // ------------------------------------------------------------------ forward and loss

    /// <summary>
    /// Logits (B, T, V) in the model's dtype, fresh, owned by the caller.
    /// <paramref name="inputIds"/>: (B, T) int64.
    /// <paramref name="attentionMask"/>: (B, past + T) int64 1/0, default all ones.
    /// <paramref name="positionIds"/>: (B, T) int64, default past .. past+T-1 for every row (as HF);
    /// pass <see cref="PositionIdsFromMask"/> with left padding.
    /// <paramref name="cache"/>: keys/values of the past positions, updated in place.
    /// Arguments are not disposed.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, LlamaKvCache? cache = null)
    {
        using var scope = torch.NewDisposeScope();
        var h = Hidden(inputIds, attentionMask, positionIds, cache);                    // (B, T, C)
        return LmHead(h).MoveToOuterDisposeScope();                                     // (B, T, V)
    }

    /// <summary>Final hidden states (B, T, C), fresh; arguments and defaults as <see cref="Forward"/>.</summary>
    Tensor Hidden(Tensor inputIds, Tensor? attentionMask, Tensor? positionIds, LlamaKvCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        long B = inputIds.shape[0], T = inputIds.shape[1];
        long past = cache?.Length ?? 0;
        var device = inputIds.device;
        attentionMask ??= torch.ones(B, past + T, ScalarType.Int64, device);
        positionIds ??= torch.arange(past, past + T, ScalarType.Int64, device).unsqueeze(0).expand(B, T);   // (B, T)
        if (attentionMask.shape[1] != past + T)
            throw new ArgumentException($"attention mask covers {attentionMask.shape[1]} positions, expected past {past} + new {T}");
        return model.Forward(inputIds, attentionMask, positionIds, cache).MoveToOuterDisposeScope();   // (B, T, C)
    }

    /// <summary>Logits (..., V) of hidden states (..., C): lm_head, or the embedding matrix when tied. Fresh tensor.</summary>
    Tensor LmHead(Tensor h)
    {
        if (lm_head is not null) return lm_head.call(h);
        using var scope = torch.NewDisposeScope();
        var w = model.embed_tokens.weight!;                                             // the weight handle is scoped
        // A tied embedding held in a low precision (LowPrecisionBase): the head runs in its dtype, the logits come back in h's.
        return (w.dtype == h.dtype ? F.linear(h, w) : F.linear(h.to(w.dtype), w).to(h.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>Position ids (B, T) = cumsum(mask) - 1 clamped at 0, for a (B, T) int64 mask. Fresh tensor.</summary>
    public static Tensor PositionIdsFromMask(Tensor attentionMask)
    {
        using var c = attentionMask.cumsum(1, ScalarType.Int64);
        using var m1 = c - 1;
        return m1.clamp_min(0);
    }

    /// <summary>
    /// HF causal-LM loss: logits[:, :-1] against labels[:, 1:], positions with label -100 ignored,
    /// mean over the rest, cross-entropy in float32. Positions are 0..T-1 (right padding assumed,
    /// as HF without position ids). Fresh scalar float32 tensor, owned by the caller.
    /// The LM head and the cross-entropy run only on the N positions that have a target (the
    /// others cannot contribute to the loss or its gradient), so logits are (N, V), not (B, T, V):
    /// with loss on answer tokens only this skips most of the head. One device-to-host sync (N).
    /// </summary>
    public Tensor ComputeLoss(LmBatch batch)
    {
        using var scope = torch.NewDisposeScope();
        var h = Hidden(batch.InputIds, batch.AttentionMask, null, null);               // (B, T, C)
        long B = h.shape[0], T = h.shape[1], C = h.shape[2];
        // targets[b, t] = labels[b, t + 1]; the last position has none.
        var none = torch.full(B, 1, -100L, ScalarType.Int64, batch.Labels.device);
        var targets = torch.cat(new[] { batch.Labels[.., 1..], none }, 1).view(B * T); // (B*T)
        var rows = targets.ne(-100).nonzero().view(-1);                                // (N) flat positions with a target
        var hSel = h.view(B * T, C).index_select(0, rows);                             // (N, C)
        var logits = LmHead(hSel).to(ScalarType.Float32);                              // (N, V)
        var loss = F.cross_entropy(logits, targets.index_select(0, rows));             // mean over N
        return loss.MoveToOuterDisposeScope();
    }
}
