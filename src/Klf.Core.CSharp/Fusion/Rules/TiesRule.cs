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
public sealed class TiesRule(double keepFraction = 0.2, double scale = 1.0) : TaskVectorRule(scale)
{
    /// <summary>k.</summary>
    public double KeepFraction { get; } = keepFraction is >= 0.0 and <= 1.0
        ? keepFraction : throw new ArgumentOutOfRangeException(nameof(keepFraction), keepFraction, "k must be in [0,1]");

    /// <inheritdoc/>
    public override string Name => "ties";

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
