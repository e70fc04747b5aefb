using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Task arithmetic (Ilharco et al.): task vectors relative to the base model are added,
/// θ̄ = base + λ·((prev − base) + (cur − base)). With no separate base (base = prev) this is
/// prev + λ·(cur − prev), the interpolation. Element-wise: fused in place, tensor by tensor.
/// </summary>
/// <param name="scale">λ, the scale of the summed task vectors (default 1).</param>
public sealed class TaskArithmeticRule(double scale = 1.0) : TaskVectorRule(scale), IElementwiseRule
{
    /// <inheritdoc/>
    public override string Name => "task-arithmetic";

    /// <summary>1 + 4|λ| (at least 2): task vectors are at most 2M, their sum 4M.</summary>
    public double Growth => Math.Max(2.0, 1.0 + 4.0 * Math.Abs(Scale));

    /// <inheritdoc/>
    protected override bool InterpolatesWithoutBase => true;

    /// <summary>τ_prev + τ_cur.</summary>
    protected override Tensor Merge(Tensor previousVector, Tensor currentVector) => previousVector + currentVector;

    /// <summary>
    /// With a separate base, <see cref="FuseInPlace"/> on a copy of cur (the same bits); without one,
    /// the interpolation of <see cref="TaskVectorRule.Fuse"/>.
    /// </summary>
    public override Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        if (ReferenceEquals(inputs.Base, inputs.Previous)) return base.Fuse(inputs, context);
        return FusionKernels.OnCopy(inputs.Current, fused => FuseInPlace(fused, inputs.Previous, inputs.Base));
    }

    /// <summary>
    /// base + λ·(((cur − base) + prev) − base), computed in place in that order (no temporaries; one
    /// pass of <see cref="CpuFusionKernels.TaskArithmetic"/> for float32 on the CPU); without a
    /// separate base, prev + λ·(cur − prev).
    /// </summary>
    public override void FuseInPlace(Tensor current, Tensor previous, Tensor basis)
    {
        if (ReferenceEquals(basis, previous))
        {
            base.FuseInPlace(current, previous, basis);
            return;
        }
        if (CpuTensors.Eligible(current, previous, basis))
        {
            unsafe { CpuFusionKernels.TaskArithmetic(CpuTensors.Pointer(current), CpuTensors.Pointer(previous), CpuTensors.Pointer(basis), current.numel(), Scale); }
            return;
        }
        current.sub_(basis).add_(previous).sub_(basis);
        if (Scale != 1.0) current.mul_(Scale);
        current.add_(basis);
    }
}
