using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>The two weights of the adaptive rule: θ̄ = c_prev·prev + c_cur·cur, c_prev + c_cur = 1.</summary>
/// <param name="Previous">c_prev, the weight of θ̄_{k−1}.</param>
/// <param name="Current">c_cur = λ, the weight of θ_k.</param>
public readonly record struct AdaptiveWeights(double Previous, double Current);

/// <summary>
/// KIF-LoRA's adaptive rule: c_cur = exp(Ŝ/τ) / (exp(Ŝ/τ) + exp(Â/τ)), i.e. a logistic of (Ŝ − Â)/τ,
/// computed without overflow; θ̄ = prev + c_cur·(cur − prev). Ŝ is the unit's current score, Â its
/// accumulated previous score. Ignores the category.
/// </summary>
/// <param name="temperature">τ (reference: 0.25); must be positive.</param>
public sealed class KifAdaptiveRule(double temperature = 0.25) : IInterpolatingRule
{
    /// <summary>τ.</summary>
    public double Temperature { get; } = temperature > 0 && double.IsFinite(temperature)
        ? temperature : throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "τ must be positive and finite");

    /// <inheritdoc/>
    public string Name => "kif-adaptive";

    /// <summary>
    /// (c_prev, c_cur) for scores Â (previous) and Ŝ (current). Stable for any finite scores: the
    /// exponent is never positive. Both lie in [0,1] and sum to 1 (up to one rounding); for scores in
    /// [0,1] and τ = 0.25 both lie strictly inside (0,1).
    /// </summary>
    public AdaptiveWeights Weights(double previousScore, double currentScore)
    {
        var z = (currentScore - previousScore) / Temperature;
        if (double.IsNaN(z)) throw new ArgumentException($"adaptive fusion: scores must be finite (previous {previousScore}, current {currentScore})");
        var e = Math.Exp(-Math.Abs(z)); // in (0,1]
        var small = e / (1.0 + e);      // the weight of the lower score
        var large = 1.0 / (1.0 + e);    // the weight of the higher score
        return z >= 0 ? new AdaptiveWeights(small, large) : new AdaptiveWeights(large, small);
    }

    /// <summary>c_cur for the unit's scores.</summary>
    public double LambdaFor(UnitFusionContext context) => Weights(context.PreviousScore, context.CurrentScore).Current;

    /// <summary>prev + c_cur·(cur − prev): a fresh tensor of the inputs' shape, dtype and device; the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context) =>
        FusionKernels.Interpolate(inputs.Previous, inputs.Current, LambdaFor(context));
}
