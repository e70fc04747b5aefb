using Klf.SkillUnits;

namespace Klf.Fusion;

/// <summary>
/// What a fusion needs to know about each skill unit, aligned with <see cref="Map"/>: the
/// importance to earlier tasks (Â_{k−1}), to the current task (Ŝ_k) and the unit's category.
/// Plain data (host arrays, no tensors); the arrays are not copied.
/// </summary>
/// <param name="Map">The skill units; each unit's slices are fused with one context.</param>
/// <param name="PreviousScores">Â_{k−1}, one per unit.</param>
/// <param name="CurrentScores">Ŝ_k, one per unit.</param>
/// <param name="Categories">Each unit's category, one per unit.</param>
public sealed record FusionPlan(SkillUnitMap Map, double[] PreviousScores, double[] CurrentScores, UnitCategory[] Categories);
