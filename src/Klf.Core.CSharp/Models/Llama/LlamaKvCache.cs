using Klf.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models.Llama;

/// <summary>
/// Key/value cache of a <see cref="LlamaForCausalLM"/> for incremental decoding: per layer a
/// <see cref="KeyValueBuffer"/> of keys and values (B, Hkv, S, D) in the model's dtype and device
/// (keys after RoPE, before the GQA repeat), allocated once for the capacity given and doubled when
/// it runs out, so each decoding step copies only its new position. Dispose it to free the buffers.
/// </summary>
public sealed class LlamaKvCache : IDisposable
{
    private readonly KeyValueBuffer[] layers;

    /// <summary>
    /// An empty cache for a model of <paramref name="numLayers"/> layers, with room for
    /// <paramref name="capacity"/> positions (prompt plus new tokens) before it grows.
    /// </summary>
    public LlamaKvCache(int numLayers, long capacity = 0)
    {
        layers = Enumerable.Range(0, numLayers).Select(_ => new KeyValueBuffer(capacity)).ToArray();
    }

    /// <summary>Number of cached positions S (0 when empty); the same for every layer after a full forward.</summary>
    public long Length => layers[0].Length;

    /// <summary>
    /// Appends <paramref name="k"/> and <paramref name="v"/> (B, Hkv, T, D) of layer
    /// <paramref name="layer"/> and returns the whole cached (B, Hkv, S+T, D) key and value.
    /// The returned tensors belong to the cache (do not dispose them; they stay valid until the
    /// next update of this layer). The arguments are copied, not disposed.
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor k, Tensor v) => layers[layer].Append(k, v);

    /// <summary>The buffer of layer <paramref name="layer"/> (for kernels that write it in place).</summary>
    internal KeyValueBuffer Layer(int layer) => layers[layer];

    /// <summary>Disposes every cached tensor.</summary>
    public void Dispose()
    {
        foreach (var l in layers) l.Dispose();
    }
}
