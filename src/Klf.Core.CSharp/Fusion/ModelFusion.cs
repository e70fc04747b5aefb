using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Klf.Models;
using Klf.SkillUnits;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Fuses a model in place, unit by unit: θ̄_k(u) = rule(base(u), θ̄_{k−1}(u), θ_k(u)). Safe: every
/// fused slice is computed into a temporary first and checked (finite; shape, dtype and device of
/// the slice); only when all units pass are the temporaries written into the live parameters with
/// <c>copy_</c> under <c>no_grad</c>. The Parameter objects stay the same, so optimizers and other
/// references remain valid. Peak extra memory: one copy of the fused slices plus one rule's intermediates.
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
        long elements = 0;
        using var outer = NewDisposeScope(); // owns the fused temporaries until they are written
        var pending = new List<(Tensor Parameter, UnitSlice Slice, Tensor Fused)>();
        using (no_grad())
        {
            for (var i = 0; i < map.Count; i++)
            {
                var unit = map.Units[i];
                var ctx = new UnitFusionContext(unit, previousScores[i], currentScores[i], categories[i], UnitSeed(seed, unit.Id));
                reports[i] = new UnitFusionReport(unit.Id, categories[i], rule.LambdaFor(ctx), previousScores[i], currentScores[i]);
                counts[(int)categories[i]]++;
                foreach (var slice in unit.Slices)
                {
                    using var inner = NewDisposeScope();
                    var param = live[slice.Parameter];
                    var cur = slice.View(param);
                    var inputs = new FusionInputs(slice.View(basis[slice.Parameter]), slice.View(previous[slice.Parameter]), cur);
                    var fused = rule.Fuse(inputs, ctx);
                    Check(rule, unit, slice, cur, fused);
                    elements += fused.numel();
                    pending.Add((param, slice, fused.MoveToOuterDisposeScope()));
                }
            }
            // Every unit passed: write. copy_ into views of the live parameters.
            foreach (var (param, slice, fused) in pending)
            {
                using var view = slice.View(param);
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

    private static void Check(IFusionRule rule, SkillUnit unit, UnitSlice slice, Tensor reference, Tensor fused)
    {
        string? problem = null;
        if (!fused.shape.SequenceEqual(reference.shape))
            problem = $"result shape [{string.Join(",", fused.shape)}] differs from the slice's [{string.Join(",", reference.shape)}]";
        else if (fused.dtype != reference.dtype) problem = $"result dtype {fused.dtype} differs from the slice's {reference.dtype}";
        else if (fused.device_type != reference.device_type || fused.device_index != reference.device_index) problem = $"result device {fused.device} differs from the slice's {reference.device}";
        else
        {
            using var finite = fused.isfinite();
            var bad = finite.numel() - finite.count_nonzero().item<long>();
            if (bad > 0) problem = $"{bad} of {fused.numel()} fused values are NaN or infinite";
        }
        if (problem is not null) throw new UnsafeFusionException(rule.Name, unit.Id, slice.ToString(), problem);
    }

    private static void CheckAligned<T>(SkillUnitMap map, T[] values, string name)
    {
        ArgumentNullException.ThrowIfNull(values, name);
        if (values.Length != map.Count) throw new ArgumentException($"fusion: {name} has {values.Length} entries but the map has {map.Count} units", name);
    }
}
