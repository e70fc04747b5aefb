using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// MagMax (Marczak et al.): per element, the task vector (prev − base or cur − base) of larger
/// magnitude is kept (ties: the current one), θ̄ = base + λ·chosen. With base = prev this is cur.
/// </summary>
/// <param name="scale">λ, the scale of the chosen task vector (default 1).</param>
public sealed class MagMaxRule(double scale = 1.0) : IFusionRule
{
    /// <summary>λ.</summary>
    public double Scale { get; } = scale;

    /// <inheritdoc/>
    public string Name => "magmax";

    /// <summary>NaN: the weight differs per element.</summary>
    public double LambdaFor(UnitFusionContext context) => double.NaN;

    /// <summary>base + λ·(per-element larger-magnitude task vector): a fresh tensor, the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        using var tp = inputs.Previous - inputs.Base;
        using var tc = inputs.Current - inputs.Base;
        using var ap = tp.abs();
        using var ac = tc.abs();
        using var takeCur = ac.ge(ap);
        using var chosen = where(takeCur, tc, tp);
        using var scaled = chosen * Scale;
        return inputs.Base + scaled;
    }
}
