using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// KIF's static rule (TaSL/KIF full fine-tuning and LoRA matrix units): θ̄ = prev + λ·(cur − prev) with
/// λ looked up by the unit's category. Defaults are the reference values: Shared 0.3, PreviousOnly 0,
/// CurrentOnly 1, Neither 0.5. λ = 0 gives exactly prev and λ = 1 exactly cur (bit-identical); other
/// λ in [0,1] give elements between prev and cur (see <see cref="FusionKernels.Interpolate"/>).
/// </summary>
/// <param name="shared">λ for units important to both earlier and current tasks.</param>
/// <param name="previousOnly">λ for units important to earlier tasks only.</param>
/// <param name="currentOnly">λ for units important to the current task only.</param>
/// <param name="neither">λ for units important to neither.</param>
public sealed class KifStaticRule(double shared = 0.3, double previousOnly = 0.0, double currentOnly = 1.0, double neither = 0.5) : IInterpolatingRule
{
    /// <summary>λ for <see cref="UnitCategory.Shared"/>.</summary>
    public double Shared { get; } = shared;
    /// <summary>λ for <see cref="UnitCategory.PreviousOnly"/>.</summary>
    public double PreviousOnly { get; } = previousOnly;
    /// <summary>λ for <see cref="UnitCategory.CurrentOnly"/>.</summary>
    public double CurrentOnly { get; } = currentOnly;
    /// <summary>λ for <see cref="UnitCategory.Neither"/>.</summary>
    public double Neither { get; } = neither;

    /// <inheritdoc/>
    public string Name => "kif-static";

    /// <summary>The λ of a category from the table.</summary>
    public double LambdaOf(UnitCategory category) => category switch
    {
        UnitCategory.Shared => Shared,
        UnitCategory.PreviousOnly => PreviousOnly,
        UnitCategory.CurrentOnly => CurrentOnly,
        UnitCategory.Neither => Neither,
        _ => throw new ArgumentOutOfRangeException(nameof(category), category, "unknown unit category"),
    };

    /// <inheritdoc/>
    public double LambdaFor(UnitFusionContext context) => LambdaOf(context.Category);

    /// <summary>prev + λ(category)·(cur − prev): a fresh tensor of the inputs' shape, dtype and device; the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context) =>
        FusionKernels.Interpolate(inputs.Previous, inputs.Current, LambdaFor(context));
}
