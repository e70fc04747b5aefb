using System.Text.RegularExpressions;
using Klf.Models;

namespace Klf.SkillUnits;

/// <summary>
/// Attention-head units (<c>head</c>, an extension of the paper's partitions) for LLaMA
/// (<c>self_attn.{q,k,v,o}_proj</c>), T5 (<c>SelfAttention</c>/<c>EncDecAttention</c> <c>.{q,k,v,o}</c>) and BERT
/// (<c>attention.self.{query,key,value}</c>, <c>attention.output.dense</c>).
/// Every other trainable tensor stays one whole unit, so every trainable element is covered exactly once.
/// </summary>
/// <remarks>
/// <para>With H query heads of width D and Hkv key/value heads (read from the model's config:
/// LLaMA <c>num_attention_heads</c>, <c>num_key_value_heads</c>, <c>head_dim</c>; T5 <c>num_heads</c>,
/// <c>d_kv</c>, Hkv = H; BERT <c>num_attention_heads</c>, D = <c>hidden_size</c> / H, Hkv = H), for an attention
/// module at path <c>P</c> (BERT: query, key, value are q, k, v and <c>output.dense</c> is o):</para>
/// <list type="bullet">
/// <item>Without grouping (Hkv = H), unit <c>P.head&lt;h&gt;</c> holds the rows [hD, (h+1)D) of q, k and v
/// (weights and, with <c>attention_bias</c>, biases), the columns [hD, (h+1)D) of o, and for T5
/// column h of <c>relative_attention_bias</c> (buckets × H): the whole head.</item>
/// <item>With grouped-query attention (Hkv &lt; H), a key/value head is shared by H/Hkv query heads, so it
/// is its own unit: <c>P.head&lt;h&gt;</c> holds q rows and o columns of query head h;
/// <c>P.kv_head&lt;g&gt;</c> holds the rows [gD, (g+1)D) of k and v.</item>
/// </list>
/// <para>o's bias (hidden-sized) is not per head and stays a whole unit. Only trainable tensors are
/// sliced; a head whose tensors are all frozen is no unit. Units are in <c>named_parameters</c>
/// order (an attention module's heads at its first trainable tensor: heads 0..H-1, then kv heads).
/// Layer = the module's layer; ModuleType = <c>&lt;attention type&gt;.head</c> / <c>.kv_head</c>
/// (<c>self_attn.head</c>, <c>SelfAttention.head</c>, <c>EncDecAttention.kv_head</c>, <c>attention.head</c>).
/// Aggregation: <see cref="UnitAggregation.Mean"/>. Other model types are not supported (throws).</para>
/// </remarks>
public sealed class AttentionHeadPartitioner : ISkillUnitPartitioner
{
    /// <summary>The name recorded in maps: <c>head</c>.</summary>
    public const string PartitionerName = "head";

    private static readonly Regex LlamaAttn = new(@"^(?<attn>.+\.self_attn)\.(?<proj>q|k|v|o)_proj\.(?<leaf>weight|bias)$", RegexOptions.CultureInvariant);
    private static readonly Regex T5Attn = new(@"^(?<attn>.+\.(?:SelfAttention|EncDecAttention))\.(?<proj>q|k|v|o|relative_attention_bias)\.(?<leaf>weight)$", RegexOptions.CultureInvariant);
    private static readonly Regex BertAttn = new(@"^(?<attn>.+\.attention)\.(?:self\.(?<proj>query|key|value)|output\.(?<proj>dense))\.(?<leaf>weight|bias)$", RegexOptions.CultureInvariant);

    /// <inheritdoc />
    public string Name => PartitionerName;

    /// <inheritdoc />
    public SkillUnitMap Partition(ILanguageModel model)
    {
        var (heads, kvHeads, headDim, pattern) = HeadShape(model);
        var trainable = TrainableParameter.Of(model);
        // Attention module path -> its trainable per-head tensors, in named_parameters order.
        var attn = new Dictionary<string, List<(TrainableParameter P, string Proj, string Leaf)>>();
        foreach (var p in trainable)
            if (Match(pattern, p.Name) is { } m)
            {
                if (!attn.TryGetValue(m.Attn, out var list)) attn[m.Attn] = list = new();
                list.Add((p, m.Proj, m.Leaf));
            }
        var units = new List<SkillUnit>();
        var emitted = new HashSet<string>();
        foreach (var p in trainable)
        {
            if (Match(pattern, p.Name) is not { } m) { units.Add(p.WholeUnit()); continue; }
            if (!emitted.Add(m.Attn)) continue;
            var tensors = attn[m.Attn];
            foreach (var t in tensors) CheckShape(t.P, t.Proj, t.Leaf, heads, kvHeads, headDim);
            var layer = UnitNames.LayerOfModule(m.Attn);
            var type = UnitNames.ModuleTypeOfModule(m.Attn);
            var grouped = kvHeads != heads;
            for (var h = 0; h < heads; h++)
            {
                var slices = new List<UnitSlice>();
                foreach (var (tp, proj, _) in tensors)
                {
                    if (proj is "q") slices.Add(new UnitSlice(tp.Name, 0, (long)h * headDim, headDim));
                    else if (proj is "o") slices.Add(new UnitSlice(tp.Name, 1, (long)h * headDim, headDim));
                    else if (proj is "relative_attention_bias") slices.Add(new UnitSlice(tp.Name, 1, h, 1));
                    else if (!grouped) slices.Add(new UnitSlice(tp.Name, 0, (long)h * headDim, headDim)); // k, v
                }
                AddUnit(units, $"{m.Attn}.head{h}", slices, tensors, layer, type + ".head");
            }
            if (!grouped) continue;
            for (var g = 0; g < kvHeads; g++)
            {
                var slices = tensors.Where(t => t.Proj is "k" or "v")
                    .Select(t => new UnitSlice(t.P.Name, 0, (long)g * headDim, headDim)).ToList();
                AddUnit(units, $"{m.Attn}.kv_head{g}", slices, tensors, layer, type + ".kv_head");
            }
        }
        return new SkillUnitMap(Name, units);
    }

    private static void AddUnit(List<SkillUnit> units, string id, List<UnitSlice> slices,
        List<(TrainableParameter P, string Proj, string Leaf)> tensors, string layer, string type)
    {
        if (slices.Count == 0) return;
        var count = slices.Sum(s => SliceElements(s, tensors.First(t => t.P.Name == s.Parameter).P.Shape));
        units.Add(new SkillUnit(id, slices, UnitAggregation.Mean, layer, type, count));
    }

    /// <summary>Number of elements of <paramref name="slice"/> in a parameter of shape <paramref name="shape"/>.</summary>
    public static long SliceElements(UnitSlice slice, long[] shape)
    {
        var total = shape.Aggregate(1L, (a, b) => a * b);
        return slice.IsWhole ? total : total / shape[slice.Dim] * slice.Length;
    }

    private static (string Attn, string Proj, string Leaf)? Match(Regex pattern, string name)
    {
        var m = pattern.Match(name);
        if (!m.Success) return null;
        var (proj, leaf) = (m.Groups["proj"].Value, m.Groups["leaf"].Value);
        proj = proj switch { "query" => "q", "key" => "k", "value" => "v", "dense" => "o", _ => proj };   // BERT's names
        if (proj == "o" && leaf == "bias") return null; // (hidden,) bias of the output projection: not per head
        return (m.Groups["attn"].Value, proj, leaf);
    }

    private static (int Heads, int KvHeads, int HeadDim, Regex Pattern) HeadShape(ILanguageModel model)
    {
        var c = model.ConfigJson();
        int Get(string key) => c[key]?.GetValue<int>() ?? throw new InvalidDataException($"config has no '{key}'");
        return model.ModelType switch
        {
            "llama" => (Get("num_attention_heads"), c["num_key_value_heads"]?.GetValue<int>() ?? Get("num_attention_heads"),
                c["head_dim"]?.GetValue<int>() ?? Get("hidden_size") / Get("num_attention_heads"), LlamaAttn),
            "t5" => (Get("num_heads"), Get("num_heads"), Get("d_kv"), T5Attn),
            "bert" => (Get("num_attention_heads"), Get("num_attention_heads"), Get("hidden_size") / Get("num_attention_heads"), BertAttn),
            var t => throw new NotSupportedException($"the '{PartitionerName}' partitioner knows LLaMA, T5 and BERT attention, not model_type '{t}'"),
        };
    }

    private static void CheckShape(TrainableParameter p, string proj, string leaf, int heads, int kvHeads, int headDim)
    {
        var (dim, expected) = proj switch
        {
            "q" => (0, (long)heads * headDim),
            "k" or "v" => (0, (long)kvHeads * headDim),
            "o" => (1, (long)heads * headDim),
            _ => (1, (long)heads), // relative_attention_bias (buckets, H)
        };
        if (leaf == "bias") dim = 0;
        if (p.Shape.Length <= dim || p.Shape[dim] != expected)
            throw new InvalidOperationException(
                $"{p.Name}: shape ({string.Join(", ", p.Shape)}) does not have {expected} along dim {dim} ({heads} heads, {kvHeads} kv heads of {headDim})");
    }
}
