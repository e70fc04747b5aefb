using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.SkillUnits;

/// <summary>
/// Unit scores S(u) from element scores (kif-method.md, "Importance"): the mean of a unit's
/// element scores (<see cref="UnitAggregation.Mean"/>), or the product of its per-slice means
/// (<see cref="UnitAggregation.ProductOfSliceMeans"/>; for a LoRA rank-1 unit
/// mean_i s(B[i,r]) × mean_j s(A[r,j]), the mean over the outer product, which is never formed).
/// </summary>
public static class UnitScores
{
    /// <summary>
    /// Scores of every unit of <paramref name="map"/>, aligned with <see cref="SkillUnitMap.Units"/>.
    /// Sums are taken in float64 on the scores' device; only one scalar per slice is copied to the host.
    /// </summary>
    /// <param name="map">The units.</param>
    /// <param name="elementScores">
    /// Parameter name → element scores (e.g. Ī⊙Ū from the importance tracker): each tensor has its
    /// parameter's shape, any floating dtype (float32 normally), any device. Owned by the caller; not
    /// modified. Every parameter a unit slices must be present.
    /// </param>
    /// <returns>One score per unit. Tensors created here are disposed before returning.</returns>
    public static double[] Compute(SkillUnitMap map, IReadOnlyDictionary<string, Tensor> elementScores)
    {
        var result = new double[map.Count];
        using var scope = NewDisposeScope();
        for (var i = 0; i < map.Count; i++)
        {
            var unit = map.Units[i];
            double sum = 0, product = 1;
            long count = 0;
            foreach (var slice in unit.Slices)
            {
                if (!elementScores.TryGetValue(slice.Parameter, out var score))
                    throw new KeyNotFoundException($"no element scores for '{slice.Parameter}' (unit '{unit.Id}')");
                var (s, n) = SliceSum(slice, score);
                sum += s;
                count += n;
                product *= n == 0 ? double.NaN : s / n;
            }
            result[i] = unit.Aggregation switch
            {
                UnitAggregation.Mean => count == 0 ? double.NaN : sum / count,
                UnitAggregation.ProductOfSliceMeans => unit.Slices.Count == 0 ? double.NaN : product,
                var a => throw new NotSupportedException($"unit aggregation {a}"),
            };
        }
        return result;
    }

    /// <summary>
    /// As <see cref="Compute(SkillUnitMap, IReadOnlyDictionary{string, Tensor})"/>, first checking that
    /// every sliced parameter exists in <paramref name="model"/> and that its score tensor has the
    /// parameter's shape (throws <see cref="ArgumentException"/> naming the parameter otherwise).
    /// </summary>
    public static double[] Compute(SkillUnitMap map, ILanguageModel model, IReadOnlyDictionary<string, Tensor> elementScores)
    {
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var (name, p) in model.Module.named_parameters()) shapes[name] = p.shape;
        return Compute(map, name => shapes.TryGetValue(name, out var s) ? s : null, elementScores);
    }

    /// <summary>
    /// As <see cref="Compute(SkillUnitMap, IReadOnlyDictionary{string, Tensor})"/>, checking score shapes
    /// against <paramref name="parameterShape"/> (name → shape, or null for an unknown parameter).
    /// </summary>
    public static double[] Compute(SkillUnitMap map, Func<string, long[]?> parameterShape, IReadOnlyDictionary<string, Tensor> elementScores)
    {
        foreach (var name in map.Units.SelectMany(u => u.Slices).Select(s => s.Parameter).Distinct())
        {
            var shape = parameterShape(name) ?? throw new ArgumentException($"the unit map slices '{name}', which is not a parameter of the model");
            if (!elementScores.TryGetValue(name, out var score))
                throw new KeyNotFoundException($"no element scores for '{name}'");
            if (!score.shape.SequenceEqual(shape))
                throw new ArgumentException(
                    $"element scores of '{name}' have shape ({string.Join(", ", score.shape)}), the parameter ({string.Join(", ", shape)})");
        }
        return Compute(map, elementScores);
    }

    // (sum of the slice's element scores in float64, number of elements).
    private static (double Sum, long Count) SliceSum(UnitSlice slice, Tensor score)
    {
        using var view = slice.View(score);
        using var wide = view.to_type(ScalarType.Float64);
        using var sum = wide.sum();
        return (sum.ToDouble(), view.numel());
    }
}
