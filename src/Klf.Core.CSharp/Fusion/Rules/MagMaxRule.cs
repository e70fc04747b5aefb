using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// MagMax (Marczak et al.): per element, the task vector (prev − base or cur − base) of larger
/// magnitude is kept (ties: the current one), θ̄ = base + λ·chosen. With base = prev this is cur.
/// </summary>
/// <param name="scale">λ, the scale of the chosen task vector (default 1).</param>
public sealed class MagMaxRule(double scale = 1.0) : TaskVectorRule(scale)
{
    /// <inheritdoc/>
    public override string Name => "magmax";

    /// <summary>Per element, the task vector of larger magnitude (ties: τ_cur).</summary>
    protected override Tensor Merge(Tensor previousVector, Tensor currentVector) =>
        where(currentVector.abs().ge(previousVector.abs()), currentVector, previousVector);
}
