using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models.Llama;

/// <summary>
/// Key/value cache of a <see cref="LlamaForCausalLM"/> for incremental decoding. It owns, per
/// layer, a key and a value tensor of shape (B, Hkv, S, D) in the model's dtype and device, where
/// S is the number of cached positions (keys are stored after RoPE, before the GQA repeat). The
/// tensors are detached from every dispose scope and live until the next <see cref="Update"/> of
/// that layer replaces them or until <see cref="Dispose"/>. Grows by concatenation.
/// </summary>
public sealed class LlamaKvCache : IDisposable
{
    readonly Tensor?[] keys;
    readonly Tensor?[] values;

    /// <summary>An empty cache for a model of <paramref name="numLayers"/> layers.</summary>
    public LlamaKvCache(int numLayers)
    {
        keys = new Tensor?[numLayers];
        values = new Tensor?[numLayers];
    }

    /// <summary>Number of cached positions S (0 when empty); the same for every layer after a full forward.</summary>
    public long Length => keys[0] is { } k ? k.shape[2] : 0;

    /// <summary>
    /// Appends <paramref name="k"/> and <paramref name="v"/> (B, Hkv, T, D) of layer
    /// <paramref name="layer"/> and returns the whole cached (B, Hkv, S+T, D) key and value.
    /// The returned tensors belong to the cache (do not dispose them; they stay valid until the
    /// next update of this layer). The arguments are not disposed.
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor k, Tensor v)
    {
        var oldK = keys[layer];
        var oldV = values[layer];
        var newK = oldK is null ? k.detach().clone() : torch.cat(new[] { oldK, k.detach() }, 2);   // (B, Hkv, S+T, D)
        var newV = oldV is null ? v.detach().clone() : torch.cat(new[] { oldV, v.detach() }, 2);   // (B, Hkv, S+T, D)
        keys[layer] = newK.DetachFromDisposeScope();
        values[layer] = newV.DetachFromDisposeScope();
        oldK?.Dispose();
        oldV?.Dispose();
        return (keys[layer]!, values[layer]!);
    }

    /// <summary>Disposes every cached tensor.</summary>
    public void Dispose()
    {
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i]?.Dispose(); keys[i] = null;
            values[i]?.Dispose(); values[i] = null;
        }
    }
}
