using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.T5;

/// <summary>Pre-norm residual self-attention: <c>h + dropout(SelfAttention(layer_norm(h)))</c>.</summary>
public sealed class T5LayerSelfAttention : nn.Module
{
    /// <summary>The attention (key prefix <c>SelfAttention</c>).</summary>
    public T5Attention SelfAttention;
    /// <summary>Pre-attention norm.</summary>
    public T5LayerNorm layer_norm;
    /// <summary>Residual dropout (dropout_rate).</summary>
    public Dropout dropout;

    /// <summary>Creates the layer; <paramref name="hasRelativeAttentionBias"/> for block 0 only.</summary>
    public T5LayerSelfAttention(T5Config config, bool isDecoder, bool hasRelativeAttentionBias) : base(nameof(T5LayerSelfAttention))
    {
        SelfAttention = new T5Attention(config, isDecoder, hasRelativeAttentionBias);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon);
        dropout = nn.Dropout(config.DropoutRate);
        RegisterComponents();
    }

    /// <summary>(B, T, D) → fresh (B, T, D); <paramref name="bias"/> as in <see cref="T5Attention.forward"/>.</summary>
    public Tensor forward(Tensor hidden, Tensor? bias, T5AttentionCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var attended = SelfAttention.forward(layer_norm.forward(hidden), null, bias, cache);
        return (hidden + dropout.forward(attended)).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-norm residual cross-attention over the encoder output: <c>h + dropout(EncDecAttention(layer_norm(h), enc))</c>.</summary>
public sealed class T5LayerCrossAttention : nn.Module
{
    /// <summary>The attention (key prefix <c>EncDecAttention</c>); never has a relative bias.</summary>
    public T5Attention EncDecAttention;
    /// <summary>Pre-attention norm.</summary>
    public T5LayerNorm layer_norm;
    /// <summary>Residual dropout (dropout_rate).</summary>
    public Dropout dropout;

    /// <summary>Creates the layer.</summary>
    public T5LayerCrossAttention(T5Config config) : base(nameof(T5LayerCrossAttention))
    {
        EncDecAttention = new T5Attention(config, isDecoder: true, hasRelativeAttentionBias: false);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon);
        dropout = nn.Dropout(config.DropoutRate);
        RegisterComponents();
    }

    /// <summary>(B, T, D) attending over <paramref name="encoderHidden"/> (B, S, D) → fresh (B, T, D).</summary>
    public Tensor forward(Tensor hidden, Tensor encoderHidden, Tensor? bias, T5AttentionCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var attended = EncDecAttention.forward(layer_norm.forward(hidden), encoderHidden, bias, cache);
        return (hidden + dropout.forward(attended)).MoveToOuterDisposeScope();
    }
}

/// <summary>T5 v1.0 feed-forward: <c>wo(dropout(relu(wi(x))))</c>, no biases.</summary>
public sealed class T5DenseActDense : nn.Module<Tensor, Tensor>
{
    /// <summary>Input projection, weight (d_ff, d_model).</summary>
    public Linear wi;
    /// <summary>Output projection, weight (d_model, d_ff).</summary>
    public Linear wo;
    /// <summary>Dropout on the hidden activations.</summary>
    public Dropout dropout;

    /// <summary>Creates the block.</summary>
    public T5DenseActDense(T5Config config) : base(nameof(T5DenseActDense))
    {
        wi = nn.Linear(config.DModel, config.DFf, hasBias: false);
        wo = nn.Linear(config.DFf, config.DModel, hasBias: false);
        dropout = nn.Dropout(config.DropoutRate);
        RegisterComponents();
    }

    /// <summary>(…, d_model) → fresh (…, d_model).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = dropout.forward(nn.functional.relu(wi.call(x))); // (…, d_ff)
        if (h.dtype != wo.weight!.dtype) h = h.to(wo.weight.dtype); // as HF (wo may be kept in float32)
        return wo.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>T5 v1.1 / Flan feed-forward: <c>wo(dropout(gelu_new(wi_0(x)) * wi_1(x)))</c>, no biases.</summary>
public sealed class T5DenseGatedActDense : nn.Module<Tensor, Tensor>
{
    /// <summary>Gate projection, weight (d_ff, d_model).</summary>
    public Linear wi_0;
    /// <summary>Linear projection, weight (d_ff, d_model).</summary>
    public Linear wi_1;
    /// <summary>Output projection, weight (d_model, d_ff).</summary>
    public Linear wo;
    /// <summary>Dropout on the hidden activations.</summary>
    public Dropout dropout;

    /// <summary>Creates the block.</summary>
    public T5DenseGatedActDense(T5Config config) : base(nameof(T5DenseGatedActDense))
    {
        wi_0 = nn.Linear(config.DModel, config.DFf, hasBias: false);
        wi_1 = nn.Linear(config.DModel, config.DFf, hasBias: false);
        wo = nn.Linear(config.DFf, config.DModel, hasBias: false);
        dropout = nn.Dropout(config.DropoutRate);
        RegisterComponents();
    }

    /// <summary>
    /// gelu_new (HF's <c>NewGELUActivation</c>, the tanh approximation):
    /// 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))). Returns a fresh tensor of <paramref name="x"/>'s shape and dtype.
    /// </summary>
    public static Tensor GeluNew(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var inner = (x + 0.044715 * torch.pow(x, 3.0)) * Math.Sqrt(2.0 / Math.PI);
        return (0.5 * x * (1.0 + torch.tanh(inner))).MoveToOuterDisposeScope();
    }

    /// <summary>(…, d_model) → fresh (…, d_model).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = GeluNew(wi_0.call(x)) * wi_1.call(x); // (…, d_ff)
        h = dropout.forward(h);
        if (h.dtype != wo.weight!.dtype) h = h.to(wo.weight.dtype);
        return wo.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-norm residual feed-forward: <c>h + dropout(DenseReluDense(layer_norm(h)))</c>.</summary>
public sealed class T5LayerFF : nn.Module<Tensor, Tensor>
{
    /// <summary><see cref="T5DenseActDense"/> (relu) or <see cref="T5DenseGatedActDense"/> (gated-gelu).</summary>
    public nn.Module<Tensor, Tensor> DenseReluDense;
    /// <summary>Pre-FF norm.</summary>
    public T5LayerNorm layer_norm;
    /// <summary>Residual dropout.</summary>
    public Dropout dropout;

    /// <summary>Creates the layer for <paramref name="config"/>'s feed_forward_proj.</summary>
    public T5LayerFF(T5Config config) : base(nameof(T5LayerFF))
    {
        DenseReluDense = config.IsGatedAct ? new T5DenseGatedActDense(config) : new T5DenseActDense(config);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon);
        dropout = nn.Dropout(config.DropoutRate);
        RegisterComponents();
    }

    /// <summary>(B, T, D) → fresh (B, T, D).</summary>
    public override Tensor forward(Tensor hidden)
    {
        using var scope = torch.NewDisposeScope();
        var ff = DenseReluDense.forward(layer_norm.forward(hidden));
        return (hidden + dropout.forward(ff)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// One T5 block: <c>layer</c> = [self-attention, (decoder only) cross-attention, feed-forward], the HF
/// key layout <c>block.N.layer.0/1/2</c>.
/// </summary>
public sealed class T5Block : nn.Module
{
    /// <summary>The sub-layers, in HF order.</summary>
    public ModuleList<nn.Module> layer;

    private readonly bool isDecoder;

    /// <summary>Creates block <paramref name="index"/> of an encoder or decoder stack (block 0 owns the relative bias).</summary>
    public T5Block(T5Config config, bool isDecoder, int index) : base(nameof(T5Block))
    {
        this.isDecoder = isDecoder;
        var layers = new List<nn.Module> { new T5LayerSelfAttention(config, isDecoder, hasRelativeAttentionBias: index == 0) };
        if (isDecoder) layers.Add(new T5LayerCrossAttention(config));
        layers.Add(new T5LayerFF(config));
        layer = nn.ModuleList(layers.ToArray());
        RegisterComponents();
    }

    /// <summary>The self-attention sub-layer (<c>layer.0</c>).</summary>
    public T5LayerSelfAttention SelfAttentionLayer => (T5LayerSelfAttention)layer[0];

    /// <summary>The cross-attention sub-layer (<c>layer.1</c>), decoder only.</summary>
    public T5LayerCrossAttention? CrossAttentionLayer => isDecoder ? (T5LayerCrossAttention)layer[1] : null;

    /// <summary>The feed-forward sub-layer (last).</summary>
    public T5LayerFF FeedForwardLayer => (T5LayerFF)layer[layer.Count - 1];

    /// <summary>
    /// (B, T, D) → fresh (B, T, D). <paramref name="selfBias"/>: position bias + mask for self-attention;
    /// <paramref name="encoderHidden"/> (B, S, D) and <paramref name="crossBias"/> (encoder mask) for the decoder.
    /// </summary>
    public Tensor forward(Tensor hidden, Tensor? selfBias, Tensor? encoderHidden, Tensor? crossBias,
        T5AttentionCache? selfCache, T5AttentionCache? crossCache)
    {
        using var scope = torch.NewDisposeScope();
        var h = ClampFloat16(SelfAttentionLayer.forward(hidden, selfBias, selfCache));
        if (isDecoder)
        {
            if (encoderHidden is null) throw new ArgumentNullException(nameof(encoderHidden), "The decoder needs the encoder output.");
            h = ClampFloat16(CrossAttentionLayer!.forward(h, encoderHidden, crossBias, crossCache));
        }
        h = ClampFloat16(FeedForwardLayer.forward(h));
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>HF's float16 guard: clamps to ±(max − 1000 if any inf, else max). Other dtypes pass through (the same tensor).</summary>
    private static Tensor ClampFloat16(Tensor h)
    {
        if (h.dtype != ScalarType.Float16) return h;
        double max = 65504.0;
        double clamp = h.isinf().any().item<bool>() ? max - 1000 : max;
        return h.clamp(-clamp, clamp);
    }
}
