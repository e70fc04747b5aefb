using Klf.Models;

namespace Klf.SkillUnits;

/// <summary>A trainable parameter seen by a partitioner: its model name and shape (no tensor handle).</summary>
/// <param name="Name">The parameter's name in <c>named_parameters</c> (its checkpoint key).</param>
/// <param name="Shape">Its shape.</param>
public sealed record TrainableParameter(string Name, long[] Shape)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>
    /// The model's current trainable parameters (requires_grad), in <c>named_parameters</c> order
    /// (a tied tensor appears once). Throws when none is trainable.
    /// </summary>
    public static IReadOnlyList<TrainableParameter> Of(ILanguageModel model)
    {
        var list = new List<TrainableParameter>();
        foreach (var (name, p) in model.Module.named_parameters())
            if (p.requires_grad) list.Add(new TrainableParameter(name, p.shape));
        if (list.Count == 0) throw new InvalidOperationException("the model has no trainable parameters to partition");
        return list;
    }

    /// <summary>The whole tensor as one unit (mean aggregation), id = the name, labels from <see cref="UnitNames"/>.</summary>
    public SkillUnit WholeUnit() =>
        new(Name, new[] { new UnitSlice(Name) }, UnitAggregation.Mean, UnitNames.Layer(Name), UnitNames.ModuleType(Name), ElementCount);
}

/// <summary>
/// Full fine-tuning units (<c>full</c>): one unit per trainable parameter tensor, in
/// <c>named_parameters</c> order; id = the parameter name. A tied tensor (embedding shared with the
/// LM head) appears once in <c>named_parameters</c> and is therefore one unit. Frozen parameters
/// are not units.
/// </summary>
public sealed class FullFineTuningPartitioner : ISkillUnitPartitioner
{
    /// <summary>The name recorded in maps: <c>full</c>.</summary>
    public const string PartitionerName = "full";

    /// <inheritdoc />
    public string Name => PartitionerName;

    /// <inheritdoc />
    public SkillUnitMap Partition(ILanguageModel model) =>
        new(Name, TrainableParameter.Of(model).Select(p => p.WholeUnit()).ToList());
}
