using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// TIES-merging (Yadav et al., 2023) of the two task vectors τ_prev = prev − base and τ_cur = cur − base,
/// slice by slice:
/// <list type="number">
/// <item>trim: each task vector keeps its top-<c>k</c> fraction of entries by magnitude within the
/// slice (⌈k·n⌉ entries; entries tied with the threshold are kept too), the rest become 0;</item>
/// <item>elect: the sign of each element is the sign of the sum of the trimmed values (the sign with
/// the larger total magnitude); a zero sum elects nothing (the element stays at base);</item>
/// <item>disjoint mean: the mean of the non-zero trimmed values whose sign agrees with the elected one;</item>
/// </list>
/// θ̄ = base + λ·merged. With base = prev only τ_cur is non-zero, so this is prev plus the top-k
/// entries of cur − prev.
/// </summary>
/// <param name="keepFraction">k: the fraction of largest-magnitude entries each task vector keeps (default 0.2).</param>
/// <param name="scale">λ, the scale of the merged task vector (default 1).</param>
public sealed class TiesRule(double keepFraction = 0.2, double scale = 1.0) : TaskVectorRule(scale), ICpuSliceRule
{
    /// <summary>k.</summary>
    public double KeepFraction { get; } = keepFraction is >= 0.0 and <= 1.0
        ? keepFraction : throw new ArgumentOutOfRangeException(nameof(keepFraction), keepFraction, "k must be in [0,1]");

    /// <inheritdoc/>
    public override string Name => "ties";

    /// <summary>1 + 2|λ| (at least 4): task vectors are at most 2M, their sum before the election 4M.</summary>
    public double Growth => Math.Max(4.0, 1.0 + 2.0 * Math.Abs(Scale));

    /// <summary>
    /// Without a separate base (base is prev) τ_prev is 0, the election and the mean leave the trimmed
    /// τ_cur as it is, and θ̄ = prev + λ·trim(cur − prev): <see cref="FuseInPlace"/> on a copy of cur.
    /// With a base, the general trim / elect / disjoint mean.
    /// </summary>
    public override Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        if (!ReferenceEquals(inputs.Base, inputs.Previous)) return base.Fuse(inputs, context);
        return FusionKernels.OnCopy(inputs.Current, fused => FuseInPlace(fused, inputs.Previous, inputs.Base, context));
    }

    /// <summary>
    /// Writes the fused values into <paramref name="current"/>: without a separate base in place,
    /// cur ← prev + λ·trim(cur − prev) (the trim zeroes entries below the slice's k-th magnitude);
    /// with a base through <see cref="Fuse"/>'s general form.
    /// </summary>
    public void FuseInPlace(Tensor current, Tensor previous, Tensor basis, UnitFusionContext context)
    {
        using var scope = NewDisposeScope();
        if (!ReferenceEquals(basis, previous))
        {
            current.copy_(base.Fuse(new FusionInputs(basis, previous, current), context));
            return;
        }
        current.sub_(previous);                                       // τ_cur
        var n = current.numel();
        if (KeepFraction <= 0.0) current.zero_();
        else if (KeepFraction < 1.0 && n > 0)
        {
            var keep = FusionKernels.KeepCount(n, KeepFraction);
            var magnitude = current.abs();
            var kth = FusionKernels.KthLargest(magnitude.reshape(-1), keep);
            // The keep mask in the values' dtype, in place in |τ|: sign(|τ| − kth) + 1 is 0 below the
            // threshold and 1 or 2 from it on (the difference's sign is exact). Boolean masks ran
            // several times slower on CPU. Trimmed entries become ±0.
            current.mul_(magnitude.sub_(kth).sign_().add_(1.0).clamp_max_(1.0));
        }
        if (Scale != 1.0) current.mul_(Scale);
        current.add_(previous);
    }

    /// <summary>The kernel covers 0 &lt; k &lt; 1 (the trims that select).</summary>
    bool ICpuSliceRule.CpuApplies => KeepFraction is > 0.0 and < 1.0;

    /// <summary>
    /// The thresholds by exact selection (<see cref="CpuSelection"/>), then one pass:
    /// <see cref="CpuFusionKernels.TiesTrim"/> without a separate base, <see cref="CpuFusionKernels.TiesMerge"/> with one.
    /// </summary>
    unsafe void ICpuSliceRule.FuseCpu(float* current, float* previous, float* basis, long n, UnitFusionContext context, bool parallel)
    {
        if (n == 0) return;
        var keep = FusionKernels.KeepCount(n, KeepFraction);
        if (basis == previous)
        {
            var threshold = CpuSelection.KthLargestAbsDifference(current, previous, n, keep, parallel);
            CpuFusionKernels.TiesTrim(current, previous, n, threshold, Scale, parallel);
            return;
        }
        var kp = CpuSelection.KthLargestAbsDifference(previous, basis, n, keep, parallel);
        var kc = CpuSelection.KthLargestAbsDifference(current, basis, n, keep, parallel);
        CpuFusionKernels.TiesMerge(current, previous, basis, n, kp, kc, Scale, parallel);
    }

    /// <summary>Trim, elect, disjoint mean (see the class summary).</summary>
    protected override Tensor Merge(Tensor previousVector, Tensor currentVector)
    {
        var tp = FusionKernels.TrimTopMagnitude(previousVector, KeepFraction);
        var tc = FusionKernels.TrimTopMagnitude(currentVector, KeepFraction);
        var elected = (tp + tc).sign();
        // An entry takes part when it is non-zero and has the elected sign.
        var inP = tp.sign().eq(elected).logical_and(tp.ne(0));
        var inC = tc.sign().eq(elected).logical_and(tc.ne(0));
        var zero = zeros_like(tp);
        var sum = where(inP, tp, zero) + where(inC, tc, zero);
        var count = inP.to_type(tp.dtype) + inC.to_type(tp.dtype);
        return sum / count.clamp_min(1);
    }
}
