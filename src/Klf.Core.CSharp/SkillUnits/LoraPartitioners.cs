using Klf.Models;

namespace Klf.SkillUnits;

/// <summary>
/// LoRA matrix units (<c>lora-matrix</c>): each trainable <c>lora_A</c> (r, in) and <c>lora_B</c>
/// (out, r) of each adapted module is one unit; id = the in-memory parameter name
/// (<c>&lt;module&gt;.lora_A.&lt;adapter&gt;.weight</c>), ModuleType <c>&lt;type&gt;.lora_A</c> /
/// <c>&lt;type&gt;.lora_B</c>. Frozen adapters (not being trained) are not units. Non-LoRA
/// parameters that are trainable too (a base made trainable on purpose) stay one whole unit each,
/// so the partition still covers every trainable element exactly once. Throws when the model has
/// no trainable LoRA matrix.
/// </summary>
public sealed class LoraMatrixPartitioner : ISkillUnitPartitioner
{
    /// <summary>The name recorded in maps: <c>lora-matrix</c>.</summary>
    public const string PartitionerName = "lora-matrix";

    /// <inheritdoc />
    public string Name => PartitionerName;

    /// <inheritdoc />
    public SkillUnitMap Partition(ILanguageModel model)
    {
        var trainable = TrainableParameter.Of(model);
        LoraRank1Partitioner.RequireLora(trainable, Name);
        return new SkillUnitMap(Name, trainable.Select(p => p.WholeUnit()).ToList());
    }
}

/// <summary>
/// LoRA rank-1 units (<c>lora-rank1</c>, the KIF-LoRA default). ΔW_m = B_m A_m = Σ_r B_m[:,r] A_m[r,:];
/// unit (m, r) is row r of A_m (slice dim 0, start r, length 1) together with column r of B_m
/// (slice dim 1, start r, length 1), aggregated by <see cref="UnitAggregation.ProductOfSliceMeans"/>.
/// </summary>
/// <remarks>
/// <para>Id scheme: <c>&lt;module&gt;.lora.&lt;adapter&gt;.r&lt;r&gt;</c>, e.g.
/// <c>model.layers.0.self_attn.q_proj.lora.default.r3</c> (r from 0). Layer = the module's layer,
/// ModuleType = <c>&lt;module type&gt;.lora</c> (e.g. <c>self_attn.q_proj.lora</c>).</para>
/// <para>Units come in <c>named_parameters</c> order of each (module, adapter)'s first trainable
/// matrix, r ascending. Only trainable matrices are sliced: when just one of A, B is trainable the
/// unit has that one slice (its score is then that slice's mean). Trainable non-LoRA parameters
/// stay whole units at their position, so every trainable element is covered exactly once.
/// Throws when the model has no trainable LoRA matrix or when A and B disagree on the rank.</para>
/// </remarks>
public sealed class LoraRank1Partitioner : ISkillUnitPartitioner
{
    /// <summary>The name recorded in maps: <c>lora-rank1</c>.</summary>
    public const string PartitionerName = "lora-rank1";

    /// <inheritdoc />
    public string Name => PartitionerName;

    /// <summary>The id of rank-1 unit <paramref name="r"/> of <paramref name="adapter"/> on <paramref name="modulePath"/>.</summary>
    public static string UnitId(string modulePath, string adapter, int r) => $"{modulePath}.lora.{adapter}.r{r}";

    /// <inheritdoc />
    public SkillUnitMap Partition(ILanguageModel model)
    {
        var trainable = TrainableParameter.Of(model);
        RequireLora(trainable, Name);
        var groups = new Dictionary<(string Module, string Adapter), (TrainableParameter? A, TrainableParameter? B)>();
        foreach (var p in trainable)
        {
            if (!UnitNames.TryParseLora(p.Name, out var module, out var matrix, out var adapter)) continue;
            groups.TryGetValue((module, adapter), out var g);
            groups[(module, adapter)] = matrix == "lora_A" ? (p, g.B) : (g.A, p);
        }
        var units = new List<SkillUnit>();
        var emitted = new HashSet<(string, string)>();
        foreach (var p in trainable)
        {
            if (!UnitNames.TryParseLora(p.Name, out var module, out _, out var adapter))
            {
                units.Add(p.WholeUnit());
                continue;
            }
            if (emitted.Add((module, adapter))) units.AddRange(Rank1Units(module, adapter, groups[(module, adapter)]));
        }
        return new SkillUnitMap(Name, units);
    }

    private static IEnumerable<SkillUnit> Rank1Units(string module, string adapter, (TrainableParameter? A, TrainableParameter? B) g)
    {
        var rank = g.A?.Shape[0] ?? g.B!.Shape[1];
        if (g.A is { } a && g.B is { } b && (a.Shape.Length != 2 || b.Shape.Length != 2 || b.Shape[1] != rank))
            throw new InvalidOperationException(
                $"{module} adapter '{adapter}': A ({string.Join(", ", a.Shape)}) and B ({string.Join(", ", b.Shape)}) do not form a rank-r pair");
        var layer = UnitNames.LayerOfModule(module);
        var type = UnitNames.ModuleTypeOfModule(module) + ".lora";
        for (var r = 0; r < rank; r++)
        {
            var slices = new List<UnitSlice>(2);
            long count = 0;
            if (g.A is { } pa) { slices.Add(new UnitSlice(pa.Name, 0, r, 1)); count += pa.Shape[1]; }
            if (g.B is { } pb) { slices.Add(new UnitSlice(pb.Name, 1, r, 1)); count += pb.Shape[0]; }
            yield return new SkillUnit(UnitId(module, adapter, r), slices, UnitAggregation.ProductOfSliceMeans, layer, type, count);
        }
    }

    internal static void RequireLora(IReadOnlyList<TrainableParameter> trainable, string partitioner)
    {
        if (!trainable.Any(p => UnitNames.TryParseLora(p.Name, out _, out _, out _)))
            throw new InvalidOperationException(
                $"the '{partitioner}' partitioner needs trainable LoRA matrices, but none of the model's trainable parameters is one (apply LoRA first, or use 'full')");
    }
}
