using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Task arithmetic (Ilharco et al.): task vectors relative to the base model are added,
/// θ̄ = base + λ·((prev − base) + (cur − base)). With no separate base (base = prev) this is
/// prev + λ·(cur − prev).
/// </summary>
/// <param name="scale">λ, the scale of the summed task vectors (default 1).</param>
public sealed class TaskArithmeticRule(double scale = 1.0) : TaskVectorRule(scale)
{
    /// <inheritdoc/>
    public override string Name => "task-arithmetic";

    /// <summary>τ_prev + τ_cur.</summary>
    protected override Tensor Merge(Tensor previousVector, Tensor currentVector) => previousVector + currentVector;
}
