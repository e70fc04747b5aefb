using Klf.Importance;

namespace Klf.Kif;

/// <summary>The weights of the two deltas for one element: θ = anchor + Inner·δ_in + Outer·δ_out.</summary>
/// <param name="Inner">c_in, the weight of the change made by the current-task (inner) steps.</param>
/// <param name="Outer">c_out, the weight of the change made by the memory (outer) steps.</param>
public readonly record struct MergeCoefficients(double Inner, double Outer);

/// <summary>
/// Recurrent-KIF's coefficient table: (c_in, c_out) by whether an element is in the top fraction of
/// the inner importance and of the outer importance. Reference values (ACL 2025):
/// (1,1) → (0.4, 0.6), (0,0) → (0.5, 0.5), (1,0) → (1, 0), (0,1) → (0, 1).
/// </summary>
/// <param name="Both">Important to the current task and to the memory.</param>
/// <param name="Neither">Important to neither.</param>
/// <param name="InnerOnly">Important to the current task only.</param>
/// <param name="OuterOnly">Important to the memory (earlier tasks) only.</param>
public sealed record RecurrentMergeTable(MergeCoefficients Both, MergeCoefficients Neither, MergeCoefficients InnerOnly, MergeCoefficients OuterOnly)
{
    /// <summary>The reference table.</summary>
    public static RecurrentMergeTable Reference { get; } =
        new(new(0.4, 0.6), new(0.5, 0.5), new(1.0, 0.0), new(0.0, 1.0));

    /// <summary>The coefficients of an element with the given mask bits.</summary>
    public MergeCoefficients For(bool innerImportant, bool outerImportant) => (innerImportant, outerImportant) switch
    {
        (true, true) => Both,
        (true, false) => InnerOnly,
        (false, true) => OuterOnly,
        _ => Neither,
    };

    /// <summary>Throws <see cref="ArgumentException"/> when a coefficient is not finite.</summary>
    public void Validate()
    {
        foreach (var c in new[] { Both, Neither, InnerOnly, OuterOnly })
            if (!double.IsFinite(c.Inner) || !double.IsFinite(c.Outer))
                throw new ArgumentException($"Recurrent-KIF: merge coefficients must be finite, got ({c.Inner}, {c.Outer})");
    }
}

/// <summary>
/// Every constant of Recurrent-KIF, with the reference values as defaults (<see cref="Reference"/>):
/// every <see cref="InnerSteps"/> optimizer steps on the current task, <see cref="OuterSteps"/> steps
/// on memory batches; inner and outer element importance with the same EMA; element masks at the top
/// <see cref="TopFraction"/> by a global quantile; merge by <see cref="Table"/>; inner importance
/// reset after each merge.
/// </summary>
public sealed record RecurrentKifOptions
{
    /// <summary>Element importance (the reference: first order |w·g|, β1 = β2 = 0.85, the first step skipped).</summary>
    public ImportanceOptions Importance { get; init; } = new(ImportanceOrder.First);

    /// <summary>Fraction of elements marked important in each mask (strictly above the (1 − f) global quantile).</summary>
    public double TopFraction { get; init; } = 0.2;

    /// <summary>Q: current-task optimizer steps per round.</summary>
    public int InnerSteps { get; init; } = 8;

    /// <summary>M: memory optimizer steps per round.</summary>
    public int OuterSteps { get; init; } = 4;

    /// <summary>(c_in, c_out) by mask bits.</summary>
    public RecurrentMergeTable Table { get; init; } = RecurrentMergeTable.Reference;

    /// <summary>Reset the inner importance after each merge (the reference does).</summary>
    public bool ResetInnerAfterMerge { get; init; } = true;

    /// <summary>
    /// Keep the outer importance across tasks. The reference accumulates it over the merges of a
    /// task and starts afresh with each task (false); true carries it through the whole sequence.
    /// </summary>
    public bool OuterAcrossTasks { get; init; }

    /// <summary>The reference settings.</summary>
    public static RecurrentKifOptions Reference() => new();

    /// <summary>Throws <see cref="ArgumentException"/> for a value out of range.</summary>
    public void Validate()
    {
        Importance.Validate();
        if (!(TopFraction >= 0 && TopFraction <= 1)) throw new ArgumentException($"Recurrent-KIF: the top fraction must lie in [0, 1], got {TopFraction}");
        if (InnerSteps < 1) throw new ArgumentException($"Recurrent-KIF: inner steps per round must be at least 1, got {InnerSteps}");
        if (OuterSteps < 1) throw new ArgumentException($"Recurrent-KIF: outer steps per round must be at least 1, got {OuterSteps}");
        ArgumentNullException.ThrowIfNull(Table);
        Table.Validate();
    }
}
