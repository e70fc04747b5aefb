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
    /// Runs an in-place fusion on a contiguous copy of <paramref name="current"/> and returns the copy
    /// (a fresh tensor the caller disposes; disposed here if <paramref name="fuseInPlace"/> throws):
    /// how a rule whose work is done in place offers its fresh-tensor form.
    /// </summary>
    public static Tensor OnCopy(Tensor current, Action<Tensor> fuseInPlace)
    {
        var fused = current.contiguous().clone();
        try { fuseInPlace(fused); }
        catch { fused.Dispose(); throw; }
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
        var keep = KeepCount(n, fraction);
        using var scope = NewDisposeScope();
        var mag = taskVector.abs();
        var kth = KthLargest(mag.reshape(-1), keep);
        return where(mag.ge(kth), taskVector, zeros_like(taskVector)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// How many of <paramref name="n"/> entries a top-<paramref name="fraction"/> trim keeps: ⌈fraction·n⌉,
    /// at least 1 and at most n (1e-9: 0.2·15 is 3, not 3.0000000000000004).
    /// </summary>
    internal static long KeepCount(long n, double fraction) => Math.Min(n, Math.Max(1L, (long)Math.Ceiling(fraction * n - 1e-9)));

    /// <summary>
    /// The <paramref name="k"/>-th largest value of a 1-D tensor (1 ≤ k ≤ n) as a 0-dim tensor, exactly
    /// what <c>kthvalue(n − k + 1)</c> gives, but for large n in a few passes instead of a selection
    /// over all of it: a fixed-stride sample brackets the value, two comparisons count the elements
    /// above the bracket and pick those inside it, and the selection runs on those only (the full
    /// selection when the bracket misses). Fresh tensor, caller disposes.
    /// </summary>
    public static Tensor KthLargest(Tensor values, long k)
    {
        var n = values.numel();
        if (k < 1 || k > n) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must lie in [1, {n}]");
        if (n <= SelectDirectly) return Select(values, n - k + 1);
        using var scope = NewDisposeScope();
        var stride = Math.Max(1L, n / SampleSize);
        var sample = values.slice(0, 0, n, stride).contiguous();
        long m = sample.numel();
        double rank = (double)(n - k) / n * (m - 1);                      // the sample rank (0-based, ascending) of the answer
        var margin = 4.0 * Math.Sqrt(m * ((double)k / n) * (1.0 - (double)k / n)) + 8.0;
        // Two selections on the sample: a sort of it took longer than the passes over all n.
        var lo = Select(sample, (long)Math.Max(0, Math.Floor(rank - margin)) + 1);
        var hi = Select(sample, (long)Math.Min(m - 1, Math.Ceiling(rank + margin)) + 1);
        var inside = values.ge(lo).logical_and_(values.le(hi));
        // count_nonzero, not sum: a bool tensor's sum runs a hundred times slower on CPU.
        var counts = stack([values.gt(hi).count_nonzero(), inside.count_nonzero()]).to(CPU).data<long>().ToArray();
        long above = counts[0], within = counts[1];
        if (above < k && k <= above + within)
            // nonzero + index_select: masked_select is many times slower on CPU.
            return Select(values.index_select(0, inside.nonzero().view(-1)), within - (k - above) + 1).MoveToOuterDisposeScope();
        return Select(values, n - k + 1).MoveToOuterDisposeScope(); // the sample missed: select over everything
    }

    /// <summary>Below this many elements <see cref="KthLargest"/> selects directly.</summary>
    private const long SelectDirectly = 1L << 16;

    /// <summary>About this many elements sample the bracket of <see cref="KthLargest"/>.</summary>
    private const long SampleSize = 1L << 14;

    /// <summary>The <paramref name="rank"/>-th smallest value (1-based) of a 1-D tensor, as a fresh 0-dim tensor.</summary>
    private static Tensor Select(Tensor values, long rank)
    {
        var (value, index) = values.kthvalue(rank, 0, false);
        index.Dispose();
        return value;
    }
}
