using System.Text.RegularExpressions;
using Klf.Models;

namespace Klf.SkillUnits;

/// <summary>
/// Feed-forward neuron units (<c>neuron</c>, or <c>neuron-B</c> for blocks of B neurons; an extension
/// of the paper's partitions): the finest partition that keeps a neuron whole. Attention is split
/// per head as by <see cref="AttentionHeadPartitioner"/>; every other trainable tensor stays one unit.
/// </summary>
/// <remarks>
/// <para>Neuron i of a feed-forward block is everything that reads or writes hidden unit i of its
/// intermediate layer: row i of the input projections and column i of the output projection.
/// LLaMA (<c>P = ….mlp</c>): rows of <c>gate_proj</c> and <c>up_proj</c> (weights and, with
/// <c>mlp_bias</c>, biases), columns of <c>down_proj.weight</c>. T5 (<c>P = ….DenseReluDense</c>):
/// rows of <c>wi</c> (or <c>wi_0</c> and <c>wi_1</c>), columns of <c>wo</c>. BERT (<c>P = ….layer.N.intermediate</c>):
/// rows of <c>intermediate.dense</c> (weight and bias), columns of <c>output.dense.weight</c>.</para>
/// <para>Unit <c>P.neuron&lt;s&gt;</c> holds neurons [s, s + B) (the last block may be shorter).
/// <c>down_proj</c>'s (and <c>wo</c>'s, <c>output.dense</c>'s) bias (hidden-sized) is not per neuron and stays a whole unit. Only trainable
/// tensors are sliced. Units are in <c>named_parameters</c> order, a block's neurons at its first
/// trainable tensor. Layer = the block's layer; ModuleType = <c>mlp.neuron</c>,
/// <c>DenseReluDense.neuron</c> or <c>intermediate.neuron</c>. Aggregation: <see cref="UnitAggregation.Mean"/>.</para>
/// </remarks>
public sealed class NeuronPartitioner : ISkillUnitPartitioner
{
    /// <summary>The name of the one-neuron partition: <c>neuron</c>; blocks of B are <c>neuron-B</c>.</summary>
    public const string PartitionerName = "neuron";

    private static readonly Regex Mlp = new(
        @"^(?<mlp>.+\.(?:mlp|DenseReluDense))\.(?<proj>gate_proj|up_proj|down_proj|wi|wi_0|wi_1|wo)\.(?<leaf>weight|bias)$",
        RegexOptions.CultureInvariant);
    // BERT's feed-forward is split over two modules of the layer: intermediate.dense (in) and output.dense (out).
    private static readonly Regex BertFfn = new(
        @"^(?<layer>.+\.layer\.\d+)\.(?<proj>intermediate|output)\.dense\.(?<leaf>weight|bias)$",
        RegexOptions.CultureInvariant);

    /// <summary>A partition with <paramref name="blockSize"/> neurons per unit (at least 1).</summary>
    public NeuronPartitioner(int blockSize = 1)
    {
        if (blockSize < 1) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "a block holds at least one neuron");
        BlockSize = blockSize;
    }

    /// <summary>Neurons per unit.</summary>
    public int BlockSize { get; }

    /// <inheritdoc />
    public string Name => BlockSize == 1 ? PartitionerName : $"{PartitionerName}-{BlockSize}";

    /// <summary>Whether <paramref name="name"/> is <c>neuron</c> or <c>neuron-B</c> (B ≥ 1), and B.</summary>
    public static bool TryParseName(string name, out int blockSize)
    {
        blockSize = 1;
        if (name == PartitionerName) return true;
        return name.StartsWith(PartitionerName + "-", StringComparison.Ordinal)
            && int.TryParse(name.AsSpan(PartitionerName.Length + 1), System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out blockSize)
            && blockSize >= 1;
    }

    /// <inheritdoc />
    public SkillUnitMap Partition(ILanguageModel model)
    {
        var trainable = TrainableParameter.Of(model);
        var shapes = trainable.ToDictionary(p => p.Name, p => p.Shape);
        // Feed-forward block path -> its trainable per-neuron tensors, in named_parameters order.
        var blocks = new Dictionary<string, List<(string Name, int Dim)>>();
        foreach (var p in trainable)
            if (Match(p.Name) is { } m)
            {
                if (!blocks.TryGetValue(m.Block, out var list)) blocks[m.Block] = list = new();
                list.Add((p.Name, m.Dim));
            }
        var units = new List<SkillUnit>();
        var emitted = new HashSet<string>();
        foreach (var u in new AttentionHeadPartitioner().Partition(model).Units)
        {
            // The head partition keeps feed-forward tensors whole, one unit each.
            if (u.Slices.Count != 1 || !u.Slices[0].IsWhole || Match(u.Slices[0].Parameter) is not { } m) { units.Add(u); continue; }
            if (!emitted.Add(m.Block)) continue;
            var tensors = blocks[m.Block];
            var width = Width(m.Block, tensors, shapes);
            var layer = UnitNames.LayerOfModule(m.Block);
            var type = UnitNames.ModuleTypeOfModule(m.Block) + ".neuron";
            for (long s = 0; s < width; s += BlockSize)
            {
                var length = Math.Min(BlockSize, width - s);
                var slices = tensors.Select(t => new UnitSlice(t.Name, t.Dim, s, length)).ToList();
                var count = slices.Sum(sl => AttentionHeadPartitioner.SliceElements(sl, shapes[sl.Parameter]));
                units.Add(new SkillUnit($"{m.Block}.neuron{s}", slices, UnitAggregation.Mean, layer, type, count));
            }
        }
        return new SkillUnitMap(Name, units);
    }

    /// <summary>The block path and the dimension that indexes neurons, for a per-neuron tensor; null otherwise.</summary>
    private static (string Block, int Dim)? Match(string name)
    {
        if (BertFfn.Match(name) is { Success: true } b)
        {
            var isOutput = b.Groups["proj"].Value == "output";
            if (isOutput && b.Groups["leaf"].Value == "bias") return null; // hidden-sized: not per neuron
            return (b.Groups["layer"].Value + ".intermediate", isOutput ? 1 : 0);
        }
        var m = Mlp.Match(name);
        if (!m.Success) return null;
        var (proj, leaf) = (m.Groups["proj"].Value, m.Groups["leaf"].Value);
        var output = proj is "down_proj" or "wo";
        if (output && leaf == "bias") return null; // hidden-sized: not per neuron
        return (m.Groups["mlp"].Value, output ? 1 : 0);
    }

    /// <summary>The intermediate width, the same along the neuron dimension of every tensor of the block.</summary>
    private static long Width(string block, List<(string Name, int Dim)> tensors, Dictionary<string, long[]> shapes)
    {
        var widths = tensors.Select(t => shapes[t.Name].Length > t.Dim ? shapes[t.Name][t.Dim] : -1).Distinct().ToArray();
        if (widths.Length != 1 || widths[0] < 1)
            throw new InvalidOperationException(
                $"{block}: the feed-forward tensors disagree on the intermediate width ({string.Join(", ", tensors.Select(t => $"{t.Name} ({string.Join(", ", shapes[t.Name])}) along dim {t.Dim}"))})");
        return widths[0];
    }
}
