using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// MagMax (Marczak et al.): per element, the task vector (prev − base or cur − base) of larger
/// magnitude is kept (ties: the current one), θ̄ = base + λ·chosen. With base = prev τ_prev is 0, so
/// this is prev + λ·(cur − prev), the interpolation. Element-wise: fused in place, tensor by tensor.
/// </summary>
/// <param name="scale">λ, the scale of the chosen task vector (default 1).</param>
public sealed class MagMaxRule(double scale = 1.0) : TaskVectorRule(scale), IElementwiseRule
{
    /// <inheritdoc/>
    public override string Name => "magmax";

    /// <summary>1 + 2|λ| (at least 2): task vectors are at most 2M.</summary>
    public double Growth => Math.Max(2.0, 1.0 + 2.0 * Math.Abs(Scale));

    /// <inheritdoc/>
    protected override bool InterpolatesWithoutBase => true;

    /// <summary>
    /// With a separate base and float32 CPU tensors, one pass of <see cref="CpuFusionKernels.MagMax"/>
    /// (the same bits); otherwise <see cref="TaskVectorRule.FuseInPlace"/>.
    /// </summary>
    public override void FuseInPlace(Tensor current, Tensor previous, Tensor basis)
    {
        if (!ReferenceEquals(basis, previous) && CpuTensors.Eligible(current, previous, basis))
        {
            unsafe { CpuFusionKernels.MagMax(CpuTensors.Pointer(current), CpuTensors.Pointer(previous), CpuTensors.Pointer(basis), current.numel(), Scale); }
            return;
        }
        base.FuseInPlace(current, previous, basis);
    }

    /// <summary>Per element, the task vector of larger magnitude (ties: τ_cur).</summary>
    protected override Tensor Merge(Tensor previousVector, Tensor currentVector) =>
        where(currentVector.abs().ge(previousVector.abs()), currentVector, previousVector);
}
