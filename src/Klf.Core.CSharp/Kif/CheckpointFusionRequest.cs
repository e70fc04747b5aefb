using Klf.Fusion;
using Klf.Importance;
using Klf.SkillUnits;
using static TorchSharp.torch;

namespace Klf.Kif;

/// <summary>
/// One offline KIF fusion (<see cref="CheckpointFusion.Run"/>): the saved model before a task and
/// after it, their importance profiles, where the fused model goes, and KIF's settings.
/// </summary>
public sealed record CheckpointFusionRequest
{
    /// <summary>θ̄_{k−1}: a model folder (config.json, safetensors) or a LoRA adapter folder (adapter_config.json).</summary>
    public required string Previous { get; init; }

    /// <summary>θ_k: the model trained on task k from <see cref="Previous"/>; the same kind of folder and architecture.</summary>
    public required string Current { get; init; }

    /// <summary>Â_{k−1}: the accumulated importance profile of the earlier tasks.</summary>
    public required string PreviousImportance { get; init; }

    /// <summary>Ŝ_k: the importance profile of task k.</summary>
    public required string CurrentImportance { get; init; }

    /// <summary>The output folder (written atomically: it appears complete or not at all); must not be an input.</summary>
    public required string Output { get; init; }

    /// <summary>Partitioner, top fraction, rule, γ and normalisation scope (the importance settings are not used).</summary>
    public KifOptions Options { get; init; } = KifOptions.FullFineTuning();

    /// <summary>Seed of stochastic rules (DARE); unit seeds derive from it and the unit id.</summary>
    public long Seed { get; init; }

    /// <summary>Base model folder of LoRA adapters; null: the adapters' <c>base_model_name_or_path</c> when that is a folder.</summary>
    public string? BaseModel { get; init; }

    /// <summary>The rule's parameters as the user gave them, recorded in the output's fusion record (none: empty).</summary>
    public IReadOnlyList<KeyValuePair<string, double>> RuleParameters { get; init; } = [];

    /// <summary>Where the tensors live (default CPU).</summary>
    public Device? Device { get; init; }
}

/// <summary>What one offline fusion did (plain data, besides the written folder).</summary>
/// <param name="Map">The skill units.</param>
/// <param name="Categories">Each unit's category, aligned with the map.</param>
/// <param name="Report">λ and scores per unit, counts, elements and time of the fusion itself.</param>
/// <param name="Accumulated">Â_k = normalise(γ·Â_{k−1} + (1−γ)·Ŝ_k), with both inputs' task histories (saved as importance.json).</param>
/// <param name="IsAdapter">True when LoRA adapters were fused (the output is a PEFT adapter folder with fusion.json).</param>
/// <param name="Output">The full path of the written folder.</param>
public sealed record CheckpointFusionResult(SkillUnitMap Map, UnitCategory[] Categories, FusionReport Report,
    ImportanceProfile Accumulated, bool IsAdapter, string Output);
