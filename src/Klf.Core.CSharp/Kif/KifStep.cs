using Klf.Fusion;
using Klf.Importance;
using Klf.Models;
using Klf.SkillUnits;

namespace Klf.Kif;

/// <summary>What one KIF fusion step decided and did (plain data).</summary>
/// <param name="ImportantPrevious">Units in the top fraction of Â_{k−1}.</param>
/// <param name="ImportantCurrent">Units in the top fraction of Ŝ_k.</param>
/// <param name="Categories">Each unit's category from the two flags.</param>
/// <param name="Report">The fusion report (λ and scores per unit).</param>
/// <param name="Accumulated">Â_k, normalised as <see cref="KifOptions.Normalisation"/> says.</param>
public sealed record KifFusionOutcome(bool[] ImportantPrevious, bool[] ImportantCurrent, UnitCategory[] Categories,
    FusionReport Report, double[] Accumulated);

/// <summary>
/// The end of a KIF task after the first, as one function: classify the units by the top fractions
/// of Â_{k−1} and Ŝ_k, fuse θ̄_{k−1} with θ_k in place by the rule, accumulate
/// Â_k = normalise(γ·Â_{k−1} + (1−γ)·Ŝ_k). <see cref="KifSession.EndTask"/> and the offline
/// <c>klf fuse</c> both call it, so the two cannot drift apart.
/// </summary>
public static class KifStep
{
    /// <summary>
    /// Fuses <paramref name="model"/> (holding θ_k; written in place) with <paramref name="previous"/>
    /// (θ̄_{k−1}) over the units of <paramref name="map"/>. Nothing changes when the fusion would
    /// produce NaN/Inf (<see cref="UnsafeFusionException"/>) or the inputs are misaligned.
    /// </summary>
    /// <param name="model">The model after training task k; its unit parameters are overwritten.</param>
    /// <param name="previous">θ̄_{k−1} (owned by the caller; not modified).</param>
    /// <param name="baseline">The base of task vectors (pre-trained weights), or null for θ̄_{k−1}.</param>
    /// <param name="map">The skill units.</param>
    /// <param name="accumulatedPrevious">Â_{k−1}, aligned with the map.</param>
    /// <param name="current">Ŝ_k (normalised), aligned with the map.</param>
    /// <param name="options">Top fraction, rule, γ and normalisation scope.</param>
    /// <param name="seed">Seed of stochastic rules for this step.</param>
    public static KifFusionOutcome Fuse(ILanguageModel model, ParameterSnapshot previous, ParameterSnapshot? baseline, SkillUnitMap map,
        double[] accumulatedPrevious, double[] current, KifOptions options, long seed)
    {
        var (importantPrevious, importantCurrent, categories, accumulated) = Plan(map, accumulatedPrevious, current, options);
        var report = ModelFusion.Apply(model, previous, new FusionPlan(map, accumulatedPrevious, current, categories), options.Rule, seed, baseline);
        return new KifFusionOutcome(importantPrevious, importantCurrent, categories, report, accumulated);
    }

    /// <summary>
    /// What the step decides before it fuses: the top fractions of Â_{k−1} and Ŝ_k, each unit's
    /// category, and the accumulated Â_k (normalised as <see cref="KifOptions.Normalisation"/> says).
    /// Plain arrays aligned with <paramref name="map"/>; no tensor is touched.
    /// </summary>
    public static (bool[] ImportantPrevious, bool[] ImportantCurrent, UnitCategory[] Categories, double[] Accumulated) Plan(
        SkillUnitMap map, double[] accumulatedPrevious, double[] current, KifOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var importantPrevious = ImportanceMath.TopFraction(accumulatedPrevious, options.TopFraction);
        var importantCurrent = ImportanceMath.TopFraction(current, options.TopFraction);
        var categories = Categories.Classify(importantPrevious, importantCurrent);
        var accumulated = ImportanceMath.Accumulate(map, accumulatedPrevious, current, options.Gamma, options.Normalisation);
        return (importantPrevious, importantCurrent, categories, accumulated);
    }
}
