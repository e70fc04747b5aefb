using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>Plain weight averaging of the models before and after the task: (prev + cur)/2 for every unit.</summary>
public sealed class AverageRule : IInterpolatingRule
{
    /// <inheritdoc/>
    public string Name => "average";

    /// <summary>Always 0.5.</summary>
    public double LambdaFor(UnitFusionContext context) => 0.5;

    /// <summary>(prev + cur)/2, computed as prev + ½(cur − prev) (no overflow for large equal-sign values, never outside the inputs): a fresh tensor, the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context) =>
        FusionKernels.Interpolate(inputs.Previous, inputs.Current, 0.5);
}
