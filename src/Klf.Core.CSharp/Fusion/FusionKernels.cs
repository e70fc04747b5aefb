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
    /// prev + λ·(cur − prev), element-wise, with exact endpoints: λ = 0 returns a bit-identical copy
    /// of <paramref name="previous"/>, λ = 1 a bit-identical copy of <paramref name="current"/>.
    /// For 0 &lt; λ &lt; 1 the result is clamped into [min(prev, cur), max(prev, cur)], so rounding can
    /// never push an element outside its two inputs. Inputs: equal shapes, one floating dtype.
    /// </summary>
    public static Tensor Interpolate(Tensor previous, Tensor current, double lambda)
    {
        if (double.IsNaN(lambda)) throw new ArgumentException("λ is NaN", nameof(lambda));
        if (lambda == 0.0) return previous.clone();
        if (lambda == 1.0) return current.clone();
        var fused = previous.lerp(current, lambda); // one kernel; exact at the ends, symmetric formula around ½
        if (lambda is > 0.0 and < 1.0)
        {
            using var lo = minimum(previous, current);
            using var hi = maximum(previous, current);
            fused.clamp_(lo, hi);
        }
        return fused;
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
