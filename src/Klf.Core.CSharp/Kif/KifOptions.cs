using Klf.Fusion;
using Klf.Importance;
using Klf.SkillUnits;

namespace Klf.Kif;

/// <summary>
/// Every constant of KIF (see the method notes), with the reference values as defaults. Use
/// <see cref="FullFineTuning"/> or <see cref="Lora"/> for the two reference configurations.
/// </summary>
public sealed record KifOptions
{
    /// <summary>How skill units are formed.</summary>
    public ISkillUnitPartitioner Partitioner { get; init; } = new FullFineTuningPartitioner();

    /// <summary>Element-importance settings (order, β1, β2, skipped steps).</summary>
    public ImportanceOptions Importance { get; init; } = new(ImportanceOrder.First);

    /// <summary>Min-max normalisation over all units (reference) or per layer / module type.</summary>
    public NormalisationScope Normalisation { get; init; } = NormalisationScope.Global;

    /// <summary>Fraction of units counted important for a distribution (strictly above its (1 − f) percentile).</summary>
    public double TopFraction { get; init; } = 0.2;

    /// <summary>γ of the accumulation Â_k = minmax(γ·Â_{k−1} + (1−γ)·Ŝ_k).</summary>
    public double Gamma { get; init; } = 0.7;

    /// <summary>The fusion rule (static 4-case table for full fine-tuning).</summary>
    public IFusionRule Rule { get; init; } = new KifStaticRule();

    /// <summary>
    /// Keep a snapshot of the model before the first task as the base of task vectors (TIES,
    /// MagMax, task arithmetic); when false the base is θ̄_{k−1}. Costs one copy of the trainable weights.
    /// </summary>
    public bool KeepBaseline { get; init; }

    /// <summary>Seed of stochastic rules (DARE); unit seeds derive from it and the unit id.</summary>
    public long Seed { get; init; }

    /// <summary>KIF for full fine-tuning: whole-tensor units, first-order importance, static rule.</summary>
    public static KifOptions FullFineTuning() => new();

    /// <summary>
    /// KIF with finer units for small models (the <c>kif-neuron</c> strategy; a variant of this
    /// project, not a reference configuration): feed-forward blocks of <paramref name="neuronsPerUnit"/>
    /// neurons and one unit per attention head (<see cref="NeuronPartitioner"/>), min-max normalisation
    /// per module type (the paper's group-wise identification), first-order importance, top 20 %, and
    /// the static rule with λ = 1 instead of 0.5 for units that neither the earlier tasks nor the
    /// current one rank important: nothing earlier needs them, so the new task keeps its change.
    /// </summary>
    /// <remarks>Measured on the embedded default stream (README): averaging the "neither" units halves
    /// what a small model learns of each new task, while whole-tensor units rank every tensor alike.</remarks>
    public static KifOptions NeuronBlocks(int neuronsPerUnit = 16) => new()
    {
        Partitioner = new NeuronPartitioner(neuronsPerUnit),
        Normalisation = NormalisationScope.ModuleType,
        Rule = new KifStaticRule(neither: 1.0),
    };

    /// <summary>KIF-LoRA: rank-1 units, second-order importance, adaptive rule (τ = 0.25). Add the orthogonality term to training yourself (<see cref="Klf.Training.Regularizers.Orthogonality"/>).</summary>
    public static KifOptions Lora() => new()
    {
        Partitioner = new LoraRank1Partitioner(),
        Importance = new ImportanceOptions(ImportanceOrder.Second),
        Rule = new KifAdaptiveRule(),
    };
}
