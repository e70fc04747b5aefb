using Klf.SkillUnits;

namespace Klf.Importance;

/// <summary>Groups over which unit scores are min-max normalised.</summary>
public enum NormalisationScope
{
    /// <summary>All units of the model at once (the reference code; the default).</summary>
    Global,
    /// <summary>Each <see cref="SkillUnit.Layer"/> on its own.</summary>
    Layer,
    /// <summary>Each <see cref="SkillUnit.ModuleType"/> on its own.</summary>
    ModuleType,
}

/// <summary>
/// Pure functions on unit scores (<c>double[]</c>, aligned with a <see cref="SkillUnitMap"/>):
/// normalisation, percentiles, top-fraction selection and the accumulation of importance over tasks.
/// Inputs are never modified; results are fresh arrays. NaN scores are rejected.
/// </summary>
public static class ImportanceMath
{
    /// <summary>
    /// Min-max normalisation to [0, 1]: (x − min) / (max − min); the minimum maps to exactly 0 and the
    /// maximum to exactly 1. A constant input (max = min, including a single element) maps to all
    /// zeros: no unit stands out, so none is more important than another. Empty in, empty out.
    /// </summary>
    /// <exception cref="ArgumentException">A score is NaN or infinite.</exception>
    public static double[] MinMax(double[] scores)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Length == 0) return [];
        CheckFinite(scores);
        var min = scores.Min();
        var max = scores.Max();
        var range = max - min;
        var result = new double[scores.Length];
        if (!(range > 0)) return result;
        for (var i = 0; i < scores.Length; i++)
            result[i] = scores[i] == max ? 1.0 : (scores[i] - min) / range;
        return result;
    }

    /// <summary>
    /// Min-max normalisation within each group: the elements with equal <paramref name="groups"/>[i]
    /// form a group, normalised on their own, (x − min_g) / (max_g − min_g). A group whose scores are
    /// all equal (in particular a group of one unit, such as a tied embedding or the final norm under
    /// per-module-type groups) has no ranking of its own; its units are placed on the global scale
    /// instead, (x − min) / (max − min) over all elements, so a single unit is neither forced to 0 nor
    /// to 1 but keeps its standing among all units. A constant input overall maps to zeros.
    /// </summary>
    public static double[] MinMaxPerGroup(double[] scores, string[] groups)
    {
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(groups);
        if (groups.Length != scores.Length)
            throw new ArgumentException($"{groups.Length} group labels for {scores.Length} scores", nameof(groups));
        if (scores.Length == 0) return [];
        var global = MinMax(scores);
        var result = new double[scores.Length];
        foreach (var members in Enumerable.Range(0, scores.Length).GroupBy(i => groups[i], StringComparer.Ordinal))
        {
            var idx = members.ToArray();
            var values = idx.Select(i => scores[i]).ToArray();
            var constant = values.Max() == values.Min();
            var norm = constant ? null : MinMax(values);
            for (var k = 0; k < idx.Length; k++) result[idx[k]] = constant ? global[idx[k]] : norm![k];
        }
        return result;
    }

    /// <summary>
    /// Normalises unit scores aligned with <paramref name="map"/> over the groups of <paramref name="scope"/>
    /// (<see cref="MinMax"/> for <see cref="NormalisationScope.Global"/>, <see cref="MinMaxPerGroup"/> otherwise).
    /// </summary>
    public static double[] Normalise(SkillUnitMap map, double[] scores, NormalisationScope scope = NormalisationScope.Global)
    {
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Length != map.Count)
            throw new ArgumentException($"{scores.Length} scores for a map of {map.Count} units", nameof(scores));
        return scope switch
        {
            NormalisationScope.Global => MinMax(scores),
            NormalisationScope.Layer => MinMaxPerGroup(scores, map.Units.Select(u => u.Layer).ToArray()),
            NormalisationScope.ModuleType => MinMaxPerGroup(scores, map.Units.Select(u => u.ModuleType).ToArray()),
            _ => throw new ArgumentOutOfRangeException(nameof(scope), scope, null),
        };
    }

    /// <summary>
    /// The <paramref name="q"/>-quantile (q a fraction in [0, 1], not a percent) with linear
    /// interpolation, as numpy's default <c>percentile(x, 100·q)</c> / <c>quantile(x, q)</c> method
    /// 'linear': sorted v, h = (n − 1)·q, i = ⌊h⌋, t = h − i, result v[i] + t·(v[i+1] − v[i]), computed
    /// as numpy does (from the upper end, v[i+1] − (v[i+1] − v[i])·(1 − t), when t ≥ 0.5).
    /// </summary>
    /// <exception cref="ArgumentException">Empty input, a NaN score, or q outside [0, 1].</exception>
    public static double Percentile(double[] scores, double q)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Length == 0) throw new ArgumentException("no scores", nameof(scores));
        if (!(q >= 0 && q <= 1)) throw new ArgumentOutOfRangeException(nameof(q), q, "q is a fraction in [0, 1]");
        if (scores.Any(double.IsNaN)) throw new ArgumentException("a score is NaN", nameof(scores));
        var v = (double[])scores.Clone();
        Array.Sort(v);
        var h = (v.Length - 1) * q;
        var i = (int)Math.Floor(h);
        if (i >= v.Length - 1) return v[^1];
        var t = h - i;
        var a = v[i];
        var b = v[i + 1];
        var d = b - a;
        return t >= 0.5 ? b - d * (1 - t) : a + d * t;
    }

    /// <summary>
    /// Flags the important units: score strictly above the (1 − <paramref name="fraction"/>) quantile
    /// (<see cref="Percentile"/>). With the default 0.2 this is KIF's "top 20 %". Ties at the threshold
    /// are not flagged, so a constant input flags nothing. For n distinct scores exactly
    /// n − 1 − ⌊(n − 1)(1 − fraction)⌋ units are flagged (⌊·⌋ of the floating-point product), i.e.
    /// ⌈(n − 1)·fraction⌉ up to the rounding of that product: 1 of 5, 2 of 10, 20 of 100.
    /// </summary>
    public static bool[] TopFraction(double[] scores, double fraction = 0.2)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (!(fraction >= 0 && fraction <= 1)) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "fraction must lie in [0, 1]");
        if (scores.Length == 0) return [];
        var threshold = Percentile(scores, 1 - fraction);
        return scores.Select(s => s > threshold).ToArray();
    }

    /// <summary>
    /// Accumulated importance after a task with global normalisation: MinMax(γ·previous + (1 − γ)·current),
    /// γ = 0.7 by default (KIF's Â_k = minmax(γ·Â_{k−1} + (1−γ)·Ŝ_k)). Both arrays are aligned with the
    /// same unit map. Use the overload with a map and a scope when Ŝ is normalised per group.
    /// </summary>
    public static double[] Accumulate(double[] previous, double[] current, double gamma = 0.7) =>
        MinMax(Mix(previous, current, gamma));

    /// <summary>
    /// Accumulated importance normalised the way Ŝ is: <see cref="Normalise"/>(map, γ·previous + (1 − γ)·current, scope),
    /// so that Â and Ŝ are on the same per-group scale when they are compared unit by unit.
    /// </summary>
    public static double[] Accumulate(SkillUnitMap map, double[] previous, double[] current, double gamma, NormalisationScope scope) =>
        Normalise(map, Mix(previous, current, gamma), scope);

    private static double[] Mix(double[] previous, double[] current, double gamma)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(current);
        if (previous.Length != current.Length)
            throw new ArgumentException($"previous has {previous.Length} units, current {current.Length}", nameof(current));
        if (!(gamma >= 0 && gamma <= 1)) throw new ArgumentOutOfRangeException(nameof(gamma), gamma, "γ must lie in [0, 1]");
        var mixed = new double[current.Length];
        for (var i = 0; i < mixed.Length; i++) mixed[i] = gamma * previous[i] + (1 - gamma) * current[i];
        return mixed;
    }

    private static void CheckFinite(double[] scores)
    {
        for (var i = 0; i < scores.Length; i++)
            if (!double.IsFinite(scores[i])) throw new ArgumentException($"score {i} is {scores[i]}", nameof(scores));
    }
}
