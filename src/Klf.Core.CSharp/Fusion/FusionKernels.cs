using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Pure tensor functions the fusion rules are built from. Every function returns a fresh tensor of
/// the inputs' shape, dtype and device, owned by the caller, and never modifies or disposes its
/// arguments. Intermediates are disposed before returning. Device-agnostic (CPU or CUDA).
/// </summary>
public static class FusionKernels
{
    /// <summary>
    /// prev + λ·(cur − prev), element-wise, as a fresh tensor (<see cref="InterpolateInPlace"/> on a
    /// copy of <paramref name="current"/>): λ = 0 gives a bit-identical copy of
    /// <paramref name="previous"/>, λ = 1 of <paramref name="current"/>, and 0 &lt; λ &lt; 1 elements
    /// between the two. Inputs: equal shapes, one floating dtype.
    /// </summary>
    public static Tensor Interpolate(Tensor previous, Tensor current, double lambda)
    {
        if (double.IsNaN(lambda)) throw new ArgumentException("λ is NaN", nameof(lambda));
        if (lambda == 0.0) return previous.clone();
        var fused = current.clone();
        InterpolateInPlace(fused, previous, lambda);
        return fused;
    }

    /// <summary>
    /// Overwrites <paramref name="current"/> with prev + λ·(cur − prev) in one kernel (torch's lerp
    /// from cur towards prev with weight 1 − λ, which is exact at both ends and never leaves the
    /// interval between the two for 0 ≤ λ ≤ 1): λ = 1 leaves it untouched, λ = 0 copies prev.
    /// </summary>
    public static void InterpolateInPlace(Tensor current, Tensor previous, double lambda)
    {
        if (double.IsNaN(lambda)) throw new ArgumentException("λ is NaN", nameof(lambda));
        if (lambda == 1.0) return;
        if (lambda == 0.0) { current.copy_(previous); return; }
        using var weight = tensor(1.0 - lambda, dtype: current.dtype, device: current.device);
        current.lerp_(previous, weight);
    }

    /// <summary>
    /// Keeps the largest-magnitude entries of <paramref name="taskVector"/>: every entry whose |value|
    /// is at least the ⌈fraction·n⌉-th largest magnitude (ties at the threshold are all kept); the
    /// others become 0. fraction ≥ 1 keeps everything, fraction ≤ 0 nothing. Fresh tensor, caller disposes.
    /// </summary>
    public static Tensor TrimTopMagnitude(Tensor taskVector, double fraction)
    {
        var n = taskVector.numel();
        if (fraction >= 1.0 || n == 0) return taskVector.clone();
        if (fraction <= 0.0) return zeros_like(taskVector);
        var keep = Math.Min(n, Math.Max(1L, (long)Math.Ceiling(fraction * n - 1e-9))); // 1e-9: 0.2·15 is 3, not 3.0000000000000004
        using var mag = taskVector.abs();
        using var flat = mag.flatten();
        var (kth, idx) = flat.kthvalue(n - keep + 1, 0, false); // keep-th largest = (n−keep+1)-th smallest
        using var _k = kth;
        using var _i = idx;
        using var mask = mag.ge(kth);
        using var zero = zeros_like(taskVector);
        return where(mask, taskVector, zero);
    }
}
