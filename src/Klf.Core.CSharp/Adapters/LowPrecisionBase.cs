using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Adapters;

/// <summary>
/// A frozen base held in a low precision (bfloat16) under float32 LoRA adapters, the usual setting
/// for large models on one device: the base's matrices (every frozen Linear and Embedding weight and
/// bias) are stored in the low dtype, which halves their memory; the adapters, the activations
/// between layers, the loss and the gradients stay float32. Each frozen Linear computes in the low
/// dtype (its input cast down by a forward pre-hook) and returns float32; an adapted Linear adds its
/// adapters in float32 to the float32 base output; an Embedding returns float32. Norm weights (1-D)
/// stay float32. Device-agnostic; on a CPU without bfloat16 arithmetic the base runs slower.
/// </summary>
public static class LowPrecisionBase
{
    /// <summary>
    /// Converts the frozen matrices of <paramref name="lora"/>'s model to <paramref name="dtype"/> in
    /// place and installs the casts. Call after the adapters are added; trainable parameters are not
    /// touched. Returns the bytes of parameter storage saved.
    /// </summary>
    public static long Hold(LoraModel lora, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(lora);
        if (dtype is not (ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"a low-precision base is bfloat16 or float16, not {dtype}", nameof(dtype));
        const ScalarType compute = ScalarType.Float32;
        long saved = 0;
        using var _ = no_grad();
        foreach (var (name, module) in lora.Root.named_modules())
        {
            if (Lora.IsLoraPath(name)) continue;
            switch (module)
            {
                case Linear linear when linear.weight is { requires_grad: false } w && w.dtype != dtype:
                    saved += Convert(w, dtype, p => linear.weight = p);
                    if (linear.bias is { requires_grad: false } b) saved += Convert(b, dtype, p => linear.bias = p);
                    linear.register_forward_pre_hook((_, x) => x.dtype == dtype ? x : x.to(dtype));
                    var adapted = lora.Modules.FirstOrDefault(m => ReferenceEquals(m.Base, linear));
                    if (adapted is not null) adapted.ComputeDtype = compute;   // its hook returns float32
                    else linear.register_forward_hook((_, _, y) => y.to(compute));
                    break;
                case Embedding embedding when embedding.weight is { requires_grad: false } e && e.dtype != dtype:
                    saved += Convert(e, dtype, p => embedding.weight = p);
                    embedding.register_forward_hook((_, _, y) => y.to(compute));
                    break;
            }
        }
        return saved;
    }

    private static long Convert(Parameter p, ScalarType dtype, Action<Parameter> set)
    {
        var before = p.numel() * p.ElementSize;
        var low = new Parameter(p.detach().to(dtype), requires_grad: false);
        set(low);
        p.Dispose();
        return before - low.numel() * low.ElementSize;
    }
}
