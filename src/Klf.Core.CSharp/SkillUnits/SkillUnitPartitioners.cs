namespace Klf.SkillUnits;

/// <summary>The built-in partitioners by their stable names.</summary>
public static class SkillUnitPartitioners
{
    /// <summary>
    /// Every known name: <c>full</c>, <c>lora-matrix</c>, <c>lora-rank1</c>, <c>head</c>, <c>neuron</c>
    /// (<see cref="ByName"/> also reads <c>neuron-B</c>, blocks of B neurons).
    /// </summary>
    public static IReadOnlyList<string> Names { get; } = new[]
    {
        FullFineTuningPartitioner.PartitionerName, LoraMatrixPartitioner.PartitionerName,
        LoraRank1Partitioner.PartitionerName, AttentionHeadPartitioner.PartitionerName,
        NeuronPartitioner.PartitionerName,
    };

    /// <summary>
    /// The partitioner named <paramref name="name"/> (as recorded in <see cref="SkillUnitMap.Partitioner"/>);
    /// throws <see cref="ArgumentException"/> listing the known names otherwise.
    /// </summary>
    public static ISkillUnitPartitioner ByName(string name) => name switch
    {
        FullFineTuningPartitioner.PartitionerName => new FullFineTuningPartitioner(),
        LoraMatrixPartitioner.PartitionerName => new LoraMatrixPartitioner(),
        LoraRank1Partitioner.PartitionerName => new LoraRank1Partitioner(),
        AttentionHeadPartitioner.PartitionerName => new AttentionHeadPartitioner(),
        _ when NeuronPartitioner.TryParseName(name, out var block) => new NeuronPartitioner(block),
        _ => throw new ArgumentException($"unknown skill-unit partitioner '{name}' (known: {string.Join(", ", Names)})", nameof(name)),
    };
}
