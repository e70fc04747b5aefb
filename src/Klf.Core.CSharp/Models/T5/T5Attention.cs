using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.T5;

/// <summary>
/// T5 multi-head attention (self- or cross-attention), as Hugging Face's <c>T5Attention</c>:
/// bias-free projections <c>q</c>, <c>k</c>, <c>v</c> (d_model → num_heads·d_kv) and <c>o</c> (back),
/// NO 1/sqrt(d_kv) scaling of the scores (T5 folds it into the init of <c>q</c>), an additive
/// position bias + mask, softmax in float32. Only the first block's self-attention owns
/// <c>relative_attention_bias</c> (num_buckets, num_heads); the stack computes the bias with it once
/// and shares it with every block.
/// </summary>
public sealed class T5Attention : nn.Module
{
    /// <summary>Query projection, weight (H·d_kv, d_model).</summary>
    public Linear q;
    /// <summary>Key projection, weight (H·d_kv, d_model).</summary>
    public Linear k;
    /// <summary>Value projection, weight (H·d_kv, d_model).</summary>
    public Linear v;
    /// <summary>Output projection, weight (d_model, H·d_kv).</summary>
    public Linear o;
    /// <summary>Relative position bias table (num_buckets, H); only in block 0's self-attention, otherwise null.</summary>
    public Embedding? relative_attention_bias;

    private readonly bool isDecoder;
    private readonly int nHeads;
    private readonly int dKv;
    private readonly int numBuckets;
    private readonly int maxDistance;
    private readonly double dropoutRate;

    /// <summary>Creates the attention of <paramref name="config"/>; <paramref name="hasRelativeAttentionBias"/> only for block 0's self-attention.</summary>
    public T5Attention(T5Config config, bool isDecoder, bool hasRelativeAttentionBias) : base(nameof(T5Attention))
    {
        this.isDecoder = isDecoder;
        nHeads = config.NumHeads;
        dKv = config.DKv;
        numBuckets = config.RelativeAttentionNumBuckets;
        maxDistance = config.RelativeAttentionMaxDistance;
        dropoutRate = config.DropoutRate;
        q = nn.Linear(config.DModel, config.InnerDim, hasBias: false);
        k = nn.Linear(config.DModel, config.InnerDim, hasBias: false);
        v = nn.Linear(config.DModel, config.InnerDim, hasBias: false);
        o = nn.Linear(config.InnerDim, config.DModel, hasBias: false);
        if (hasRelativeAttentionBias)
            relative_attention_bias = nn.Embedding(config.RelativeAttentionNumBuckets, config.NumHeads);
        RegisterComponents();
    }

    /// <summary>
    /// Hugging Face's <c>_relative_position_bucket</c> (from Mesh TensorFlow). <paramref name="relativePosition"/>
    /// is an int64 tensor of (memory position − query position), any shape; returns a fresh int64 tensor of
    /// the same shape with bucket ids in [0, numBuckets). Bidirectional (encoder): half the buckets per
    /// direction, positive offsets in the upper half. Causal (decoder): only offsets ≤ 0 are told apart,
    /// future positions all land in bucket 0. Within a direction, distances below max_exact
    /// (= half that direction's buckets) get their own bucket; larger ones are log-spaced up to
    /// <paramref name="maxDistance"/>, beyond which they share the last bucket. The float computation
    /// follows HF's order of operations in float32 so that boundary cases round identically.
    /// </summary>
    public static Tensor RelativePositionBucket(Tensor relativePosition, bool bidirectional, int numBuckets, int maxDistance)
    {
        using var scope = torch.NewDisposeScope();
        var rel = relativePosition.to(ScalarType.Int64);
        long nb = numBuckets;
        Tensor buckets;
        Tensor distance;
        if (bidirectional)
        {
            nb /= 2;
            buckets = rel.gt(0).to(ScalarType.Int64) * nb;
            distance = rel.abs();
        }
        else
        {
            buckets = torch.zeros_like(rel);
            distance = -torch.minimum(rel, torch.zeros_like(rel)); // ≥ 0: how far back the key is
        }
        long maxExact = nb / 2;
        var isSmall = distance.lt(maxExact);
        // log(d / max_exact) / log(max_distance / max_exact) * (nb - max_exact), float32 then truncated.
        var logRatio = torch.log(distance.to(ScalarType.Float32) / maxExact) / Math.Log((double)maxDistance / maxExact) * (nb - maxExact);
        var ifLarge = (logRatio.to(ScalarType.Int64) + maxExact).clamp_max(nb - 1);
        return (buckets + torch.where(isSmall, distance, ifLarge)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Position bias of <paramref name="queryLength"/> queries at positions
    /// [<paramref name="queryOffset"/>, queryOffset + queryLength) against keys at [0, <paramref name="keyLength"/>):
    /// a fresh (1, H, Tq, Tk) tensor in this module's parameter dtype on <paramref name="device"/>.
    /// Only valid on the module that has <see cref="relative_attention_bias"/>.
    /// </summary>
    public Tensor ComputeBias(long queryLength, long keyLength, long queryOffset, Device device)
    {
        var table = relative_attention_bias ?? throw new InvalidOperationException("This attention has no relative_attention_bias (only block 0 has).");
        using var scope = torch.NewDisposeScope();
        var context = torch.arange(queryOffset, queryOffset + queryLength, dtype: ScalarType.Int64, device: device).unsqueeze(1); // (Tq, 1)
        var memory = torch.arange(0, keyLength, dtype: ScalarType.Int64, device: device).unsqueeze(0); // (1, Tk)
        var buckets = RelativePositionBucket(memory - context, bidirectional: !isDecoder, numBuckets, maxDistance); // (Tq, Tk)
        var values = table.forward(buckets); // (Tq, Tk, H)
        return values.permute(2, 0, 1).unsqueeze(0).MoveToOuterDisposeScope(); // (1, H, Tq, Tk)
    }

    /// <summary>
    /// Attention of <paramref name="hidden"/> (B, Tq, d_model) over itself (self-attention,
    /// <paramref name="keyValueStates"/> null) or over <paramref name="keyValueStates"/> (B, S, d_model)
    /// (cross-attention). <paramref name="bias"/> is the additive position bias plus mask, broadcastable to
    /// (B, H, Tq, Tk), in the scores' dtype, or null for none. With a <paramref name="cache"/>: self-attention
    /// prepends the cached keys/values and stores the grown ones; cross-attention computes keys/values from
    /// <paramref name="keyValueStates"/> once and reuses them afterwards. Returns a fresh (B, Tq, d_model) tensor;
    /// arguments are not disposed; tensors stored in the cache are owned by the cache.
    /// </summary>
    public Tensor forward(Tensor hidden, Tensor? keyValueStates, Tensor? bias, T5AttentionCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        long b = hidden.shape[0], tq = hidden.shape[1];
        Tensor Heads(Tensor x) => x.view(b, -1, nHeads, dKv).transpose(1, 2); // (B, T, H·d_kv) -> (B, H, T, d_kv)

        var query = Heads(q.call(hidden)); // (B, H, Tq, d_kv)
        Tensor key, value;
        if (keyValueStates is not null)
        {
            if (cache?.Keys is not null)
            {
                key = cache.Keys;
                value = cache.Values!;
            }
            else
            {
                key = Heads(k.call(keyValueStates)); // (B, H, S, d_kv)
                value = Heads(v.call(keyValueStates));
                cache?.Store(key, value);
            }
        }
        else
        {
            key = Heads(k.call(hidden)); // (B, H, Tq, d_kv)
            value = Heads(v.call(hidden));
            if (cache is not null) (key, value) = cache.Append(key, value); // (B, H, T_past + Tq, d_kv)
        }

        var scores = query.matmul(key.transpose(-1, -2)); // (B, H, Tq, Tk), no 1/sqrt(d_kv)
        if (bias is not null) scores = scores + bias;
        var weights = nn.functional.softmax(scores.to(ScalarType.Float32), -1).to(scores.dtype);
        weights = nn.functional.dropout(weights, dropoutRate, training);
        var output = weights.matmul(value) // (B, H, Tq, d_kv)
            .transpose(1, 2).reshape(b, tq, nHeads * dKv); // (B, Tq, H·d_kv)
        return o.call(output).MoveToOuterDisposeScope(); // (B, Tq, d_model)
    }
}

/// <summary>
/// Cached keys and values of one attention layer, (B, H, T, d_kv) each, in a
/// <see cref="Klf.Models.Layers.KeyValueBuffer"/>: self-attention appends each step's positions
/// into a buffer allocated once (doubled when it runs out); cross-attention stores the encoder's
/// keys and values once. Owns its tensors; <see cref="Dispose"/> frees them.
/// </summary>
public sealed class T5AttentionCache : IDisposable
{
    private readonly Klf.Models.Layers.KeyValueBuffer buffer;

    /// <summary>An empty cache with room for <paramref name="capacity"/> positions before it grows.</summary>
    public T5AttentionCache(long capacity = 0) => buffer = new Klf.Models.Layers.KeyValueBuffer(capacity);

    /// <summary>Keys (B, H, T, d_kv), or null before the first step. Owned by this cache: do not dispose.</summary>
    public Tensor? Keys => buffer.Keys;

    /// <summary>Values (B, H, T, d_kv), or null before the first step. Owned by this cache: do not dispose.</summary>
    public Tensor? Values => buffer.Values;

    /// <summary>Takes ownership of <paramref name="keys"/> and <paramref name="values"/> (cross-attention) and frees the previous pair.</summary>
    internal void Store(Tensor keys, Tensor values) => buffer.Store(keys, values);

    /// <summary>Appends this step's keys and values (self-attention) and returns all cached ones, owned by the cache.</summary>
    internal (Tensor Keys, Tensor Values) Append(Tensor keys, Tensor values) => buffer.Append(keys, values);

    /// <summary>Disposes the cached keys and values.</summary>
    public void Dispose() => buffer.Dispose();
}

/// <summary>
/// Key/value cache of a T5 decoder for incremental decoding. Per decoder block it owns the self-attention
/// keys/values (B, H, T_past, d_kv), appended (not concatenated) with the decoded tokens at every
/// <see cref="T5ForConditionalGeneration.Decode"/> call, and the cross-attention keys/values (B, H, S, d_kv),
/// computed once from the encoder output at the first call and reused afterwards (so one cache serves one
/// encoder output). Dispose it to free them; tensors read from it must not be disposed by callers.
/// </summary>
public sealed class T5KvCache : IDisposable
{
    /// <summary>
    /// Creates an empty cache for a decoder of <paramref name="numDecoderLayers"/> blocks, with room
    /// for <paramref name="capacity"/> decoder positions before the self-attention buffers grow.
    /// </summary>
    public T5KvCache(int numDecoderLayers, long capacity = 0)
    {
        SelfAttention = Enumerable.Range(0, numDecoderLayers).Select(_ => new T5AttentionCache(capacity)).ToArray();
        CrossAttention = Enumerable.Range(0, numDecoderLayers).Select(_ => new T5AttentionCache()).ToArray();
    }

    /// <summary>Self-attention cache of each decoder block.</summary>
    public IReadOnlyList<T5AttentionCache> SelfAttention { get; }

    /// <summary>Cross-attention cache of each decoder block.</summary>
    public IReadOnlyList<T5AttentionCache> CrossAttention { get; }

    /// <summary>Number of decoder positions already cached (the position of the next decoder input).</summary>
    public long PastLength { get; internal set; }

    /// <summary>Disposes every cached tensor.</summary>
    public void Dispose()
    {
        foreach (var c in SelfAttention) c.Dispose();
        foreach (var c in CrossAttention) c.Dispose();
        PastLength = 0;
    }
}
