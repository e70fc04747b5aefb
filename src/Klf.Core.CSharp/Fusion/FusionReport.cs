namespace Klf.Fusion;

/// <summary>What one <see cref="ModelFusion.Apply"/> did (plain data).</summary>
/// <param name="Rule">The rule's name.</param>
/// <param name="Units">One entry per unit, in map order.</param>
/// <param name="Neither">Number of units of category <see cref="UnitCategory.Neither"/>.</param>
/// <param name="PreviousOnly">Number of units of category <see cref="UnitCategory.PreviousOnly"/>.</param>
/// <param name="CurrentOnly">Number of units of category <see cref="UnitCategory.CurrentOnly"/>.</param>
/// <param name="Shared">Number of units of category <see cref="UnitCategory.Shared"/>.</param>
/// <param name="ElementCount">Parameter elements fused.</param>
/// <param name="Elapsed">Wall time of the whole fusion (compute, check and write).</param>
public sealed record FusionReport(
    string Rule, IReadOnlyList<UnitFusionReport> Units, int Neither, int PreviousOnly, int CurrentOnly, int Shared,
    long ElementCount, TimeSpan Elapsed)
{
    /// <summary>Number of units of <paramref name="category"/>.</summary>
    public int CountOf(UnitCategory category) => category switch
    {
        UnitCategory.Neither => Neither,
        UnitCategory.PreviousOnly => PreviousOnly,
        UnitCategory.CurrentOnly => CurrentOnly,
        UnitCategory.Shared => Shared,
        _ => 0,
    };

    /// <summary>A report of <paramref name="units"/>, with the counts per category taken from them.</summary>
    public static FusionReport Of(string rule, IReadOnlyList<UnitFusionReport> units, long elements, TimeSpan elapsed) =>
        new(rule, units, units.Count(u => u.Category == UnitCategory.Neither), units.Count(u => u.Category == UnitCategory.PreviousOnly),
            units.Count(u => u.Category == UnitCategory.CurrentOnly), units.Count(u => u.Category == UnitCategory.Shared), elements, elapsed);
}

/// <summary>
/// Fusion produced a NaN or infinite value (or a tensor of the wrong shape, dtype or device) for a
/// unit. Thrown before any parameter is written: the model is exactly as it was.
/// </summary>
public sealed class UnsafeFusionException(string rule, string unitId, string slice, string message)
    : InvalidOperationException($"fusion rule '{rule}', unit '{unitId}' (slice {slice}): {message}; the model was not changed")
{
    /// <summary>The rule's name.</summary>
    public string Rule { get; } = rule;
    /// <summary>The unit's id.</summary>
    public string UnitId { get; } = unitId;
    /// <summary>The slice (text form) where it happened.</summary>
    public string Slice { get; } = slice;
}
