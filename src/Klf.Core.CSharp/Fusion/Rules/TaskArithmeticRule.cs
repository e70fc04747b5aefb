using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Task arithmetic (Ilharco et al.): task vectors relative to the base model are added,
/// θ̄ = base + λ·((prev − base) + (cur − base)). With no separate base (base = prev) this is
/// prev + λ·(cur − prev).
/// </summary>
/// <param name="scale">λ, the scale of the summed task vectors (default 1).</param>
public sealed class TaskArithmeticRule(double scale = 1.0) : IFusionRule
{
    /// <summary>λ.</summary>
    public double Scale { get; } = scale;

    /// <inheritdoc/>
    public string Name => "task-arithmetic";

    /// <summary>NaN: no single interpolation weight between prev and cur.</summary>
    public double LambdaFor(UnitFusionContext context) => double.NaN;

    /// <summary>base + λ·((prev − base) + (cur − base)): a fresh tensor of the inputs' shape, dtype and device; the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        using var tp = inputs.Previous - inputs.Base;
        using var tc = inputs.Current - inputs.Base;
        using var sum = tp + tc;
        using var scaled = sum * Scale;
        return inputs.Base + scaled;
    }
}
