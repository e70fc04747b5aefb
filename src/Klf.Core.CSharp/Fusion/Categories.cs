namespace Klf.Fusion;

/// <summary>Unit categories from the two top-fraction classifications.</summary>
public static class Categories
{
    /// <summary>
    /// The category of each unit: important to earlier tasks (<paramref name="importantPrevious"/>)
    /// and/or to the current task (<paramref name="importantCurrent"/>). Arrays aligned with the unit map.
    /// </summary>
    public static UnitCategory[] Classify(bool[] importantPrevious, bool[] importantCurrent)
    {
        ArgumentNullException.ThrowIfNull(importantPrevious);
        ArgumentNullException.ThrowIfNull(importantCurrent);
        if (importantPrevious.Length != importantCurrent.Length)
            throw new ArgumentException($"classify: {importantPrevious.Length} previous flags but {importantCurrent.Length} current flags");
        var result = new UnitCategory[importantPrevious.Length];
        for (var i = 0; i < result.Length; i++)
            result[i] = (importantPrevious[i], importantCurrent[i]) switch
            {
                (true, true) => UnitCategory.Shared,
                (true, false) => UnitCategory.PreviousOnly,
                (false, true) => UnitCategory.CurrentOnly,
                _ => UnitCategory.Neither,
            };
        return result;
    }
}
