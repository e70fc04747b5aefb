using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Klf.Models;
using Klf.SkillUnits;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Fuses a model in place, unit by unit: θ̄_k(u) = rule(base(u), θ̄_{k−1}(u), θ_k(u)). Safe: nothing
/// is written until every unit passed its checks, and a fused value is never NaN or infinite. Rules
/// that interpolate (<see cref="IInterpolatingRule"/>) or work element by element
/// (<see cref="IElementwiseRule"/>) are fused in place, one parameter tensor at a time with each
/// slice's λ, proven finite beforehand from the inputs' largest magnitudes (one min/max pass over the
/// current values; the snapshots' were measured when taken): no temporaries, no host sync per slice.
/// Rules that fuse one slice at a time in place (<see cref="ISliceFusionRule"/>: TIES, DARE) are
/// applied so on contiguous slices, checked the same way. Other rules (your own) fuse each slice into a temporary, checked for shape, dtype,
/// device and finiteness (one host transfer for all), then written with <c>copy_</c>. Writes happen
/// under <c>no_grad</c> into the same Parameter objects, so optimizers and other references remain
/// valid. Peak extra memory: none for in-place rules; one copy of the fused slices otherwise.
/// </summary>
public static class ModelFusion
{
    /// <summary>
    /// Fuses <paramref name="model"/> (holding θ_k, overwritten with θ̄_k) with
    /// <paramref name="previous"/> (θ̄_{k−1}).
    /// </summary>
    /// <param name="model">The model after the current task; its parameters are written in place.</param>
    /// <param name="previous">θ̄_{k−1}: must hold every parameter named by the map's slices (not modified).</param>
    /// <param name="plan">The skill units with their scores and categories.</param>
    /// <param name="rule">The fusion rule.</param>
    /// <param name="seed">Fusion seed; unit seeds are <see cref="UnitSeed"/>(seed, unit id).</param>
    /// <param name="baseline">The reference of task vectors (the pre-trained model); null uses <paramref name="previous"/>.</param>
    /// <returns>A report listing every unit with its category and λ, category counts and the elapsed time.</returns>
    /// <exception cref="UnsafeFusionException">A fused value is NaN/Inf or has the wrong shape, dtype or device; the model is untouched.</exception>
    /// <exception cref="ArgumentException">Misaligned arrays or a parameter missing from the model or a snapshot; the model is untouched.</exception>
    public static FusionReport Apply(
        ILanguageModel model, ParameterSnapshot previous, FusionPlan plan, IFusionRule rule, long seed, ParameterSnapshot? baseline = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(plan);
        var (map, previousScores, currentScores, categories) = plan;
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(rule);
        CheckAligned(map, previousScores, nameof(previousScores));
        CheckAligned(map, currentScores, nameof(currentScores));
        CheckAligned(map, categories, nameof(categories));
        var basis = baseline ?? previous;
        var live = ParameterSnapshot.LiveParameters(model);
        foreach (var unit in map.Units)
            foreach (var s in unit.Slices)
            {
                if (!live.ContainsKey(s.Parameter)) throw new ArgumentException($"fusion: unit '{unit.Id}' names parameter '{s.Parameter}', which the model does not have");
                if (!previous.Contains(s.Parameter)) throw new ArgumentException($"fusion: the previous snapshot holds no '{s.Parameter}' (unit '{unit.Id}')");
                if (!basis.Contains(s.Parameter)) throw new ArgumentException($"fusion: the baseline snapshot holds no '{s.Parameter}' (unit '{unit.Id}')");
            }

        var sw = Stopwatch.StartNew();
        var reports = new UnitFusionReport[map.Count];
        var counts = new int[4];
        // Each parameter's slices, in map order, with the unit they belong to.
        var byParameter = new Dictionary<string, List<(int Unit, UnitSlice Slice)>>();
        var contexts = new UnitFusionContext[map.Count];
        for (var i = 0; i < map.Count; i++)
        {
            var unit = map.Units[i];
            contexts[i] = new UnitFusionContext(unit, previousScores[i], currentScores[i], categories[i], UnitSeed(seed, unit.Id));
            reports[i] = new UnitFusionReport(unit.Id, categories[i], rule.LambdaFor(contexts[i]), previousScores[i], currentScores[i]);
            counts[(int)categories[i]]++;
            foreach (var slice in unit.Slices)
            {
                if (!byParameter.TryGetValue(slice.Parameter, out var list)) byParameter[slice.Parameter] = list = new();
                list.Add((i, slice));
            }
        }

        long elements = 0;
        using var outer = NewDisposeScope(); // owns the fused temporaries and the checks until the end
        var inPlace = new List<(string Parameter, InPlaceFusion Plan, Tensor Low, Tensor High)>();
        var general = new List<(int Unit, UnitSlice Slice, Tensor Fused, Tensor Sum)>();
        using (no_grad())
        {
            // Phase 1, nothing written: in-place plans with the current values' range, temporaries for the rest.
            foreach (var (name, slices) in byParameter)
            {
                var param = live[name];
                // Shape and size once per tensor: every TorchSharp property read is a native call.
                long numel = param.numel();
                var shape = param.shape;
                foreach (var (_, slice) in slices) elements += slice.IsWhole ? numel : numel / shape[slice.Dim] * slice.Length;
                var tensorPlan = InPlaceFusion.TryPlan(rule, param, slices.Select(s => s.Slice).ToList(), slices.Select(s => reports[s.Unit].Lambda).ToList(),
                    slices.Select(s => contexts[s.Unit]).ToList());
                if (tensorPlan is not null)
                {
                    var (low, high) = aminmax(param);
                    inPlace.Add((name, tensorPlan, low, high));
                    continue;
                }
                foreach (var (u, slice) in slices)
                {
                    using var inner = NewDisposeScope();
                    var cur = slice.View(param);
                    var prev = slice.View(previous[slice.Parameter]);
                    var inputs = new FusionInputs(baseline is null ? prev : slice.View(basis[slice.Parameter]), prev, cur);
                    var fused = rule.Fuse(inputs, contexts[u]);
                    TensorFusion.CheckLayout(rule, map.Units[u], slice, cur, fused);
                    general.Add((u, slice, fused.MoveToOuterDisposeScope(), fused.sum().MoveToOuterDisposeScope()));
                }
            }
            // One host transfer decides every check.
            var values = TensorFusion.Transfer(inPlace.SelectMany(p => new[] { p.Low, p.High }).Concat(general.Select(g => g.Sum)).ToList());
            for (var k = 0; k < inPlace.Count; k++)
            {
                var (name, fusion, _, _) = inPlace[k];
                var m = Math.Max(Math.Max(Math.Abs(values[2 * k]), Math.Abs(values[2 * k + 1])), Math.Max(previous.MaxAbs(name), basis.MaxAbs(name)));
                var (u, slice) = byParameter[name][0];
                TensorFusion.CheckBounds(rule, new SliceToFuse(map.Units[u], slice, contexts[u], reports[u].Lambda), live[name].dtype, fusion.Growth, m);
            }
            for (var k = 0; k < general.Count; k++)
            {
                // A finite sum proves every element finite; a non-finite one is confirmed element by element.
                if (double.IsFinite(values[2 * inPlace.Count + k])) continue;
                var (u, slice, fused, _) = general[k];
                TensorFusion.CheckFinite(rule, map.Units[u], slice, fused);
            }
            // Phase 2, every check passed: write into the same Parameter objects.
            // Slice rules with CPU kernels (TIES, DARE): the tensors on the cores at once, each on
            // one thread; DARE's draws are serial per slice, so one tensor at a time would use one core.
            var cpuWork = new List<Action<bool>>();
            foreach (var (name, fusion, _, _) in inPlace)
            {
                var b = baseline is null ? previous[name] : basis[name];
                if (rule is ICpuSliceRule && inPlace.Count > 1 && fusion.PrepareCpu(live[name], previous[name], b) is { } work) cpuWork.Add(work);
                else fusion.Apply(live[name], previous[name], b);
            }
            if (cpuWork.Count == 1) cpuWork[0](true);
            else CpuTensors.ForEach(cpuWork.Count, k => cpuWork[k](false));
            foreach (var (_, slice, fused, _) in general)
            {
                using var view = slice.View(live[slice.Parameter]);
                view.copy_(fused);
            }
        }
        sw.Stop();
        return new FusionReport(rule.Name, reports, counts[(int)UnitCategory.Neither], counts[(int)UnitCategory.PreviousOnly],
            counts[(int)UnitCategory.CurrentOnly], counts[(int)UnitCategory.Shared], elements, sw.Elapsed);
    }

    /// <summary>
    /// The seed of one unit: SHA-256 over the fusion seed (8 bytes, little-endian) and the unit id
    /// (UTF-8), first 8 bytes as a little-endian signed integer. Stable across processes and platforms.
    /// </summary>
    public static long UnitSeed(long seed, string unitId)
    {
        var id = Encoding.UTF8.GetBytes(unitId);
        var buf = new byte[8 + id.Length];
        BitConverter.TryWriteBytes(buf.AsSpan(0, 8), seed);
        if (!BitConverter.IsLittleEndian) buf.AsSpan(0, 8).Reverse();
        id.CopyTo(buf, 8);
        var h = SHA256.HashData(buf);
        return System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(h);
    }

    private static void CheckAligned<T>(SkillUnitMap map, T[] values, string name)
    {
        ArgumentNullException.ThrowIfNull(values, name);
        if (values.Length != map.Count) throw new ArgumentException($"fusion: {name} has {values.Length} entries but the map has {map.Count} units", name);
    }
}
