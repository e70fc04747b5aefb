using Klf.SkillUnits;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>One slice of a parameter tensor to fuse, with its unit, context and λ.</summary>
/// <param name="Unit">The unit the slice belongs to.</param>
/// <param name="Slice">The slice.</param>
/// <param name="Context">The unit's fusion context.</param>
/// <param name="Lambda">The rule's λ for the unit (NaN when it has none).</param>
public sealed record SliceToFuse(SkillUnit Unit, UnitSlice Slice, UnitFusionContext Context, double Lambda);

/// <summary>
/// Fusion of one parameter tensor held as three tensors (θ_k, θ̄_{k−1}, optional base), checked and
/// written: the building block of <see cref="ModelFusion"/>'s checks and of fusing checkpoints tensor
/// by tensor without loading a model (<see cref="Klf.Kif.CheckpointFusion"/>). Both take the same
/// in-place plans and kernels, so a tensor fuses to the same bits either way.
/// </summary>
public static class TensorFusion
{
    /// <summary>
    /// Overwrites <paramref name="current"/> (θ_k of one parameter) with its fused values over
    /// <paramref name="slices"/>, from <paramref name="previous"/> (θ̄_{k−1}) and
    /// <paramref name="basis"/> (null: task vectors against θ̄_{k−1}); nothing is written unless every
    /// check passes (<see cref="UnsafeFusionException"/> names the unit and slice). Returns the number
    /// of elements fused.
    /// </summary>
    public static long Fuse(IFusionRule rule, Tensor current, Tensor previous, Tensor? basis, IReadOnlyList<SliceToFuse> slices)
    {
        ArgumentNullException.ThrowIfNull(rule);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var b = basis ?? previous;
        var plan = InPlaceFusion.TryPlan(rule, current, slices.Select(s => s.Slice).ToList(), slices.Select(s => s.Lambda).ToList(), slices.Select(s => s.Context).ToList());
        if (plan is not null)
        {
            var ranges = new List<Tensor> { current, previous };
            if (basis is not null) ranges.Add(basis);
            var values = Transfer(ranges.SelectMany(t => { var (lo, hi) = aminmax(t); return new[] { lo, hi }; }).ToList());
            CheckBounds(rule, slices[0], current.dtype, plan.Growth, values.Any(double.IsNaN) ? double.NaN : values.Max(Math.Abs));
            plan.Apply(current, previous, b);
        }
        else
        {
            var fused = new List<(UnitSlice Slice, Tensor Fused)>();
            foreach (var s in slices)
            {
                var cur = s.Slice.View(current);
                var prev = s.Slice.View(previous);
                var inputs = new FusionInputs(basis is null ? prev : s.Slice.View(basis), prev, cur);
                var f = rule.Fuse(inputs, s.Context);
                CheckLayout(rule, s.Unit, s.Slice, cur, f);
                fused.Add((s.Slice, f));
            }
            var sums = Transfer(fused.Select(f => f.Fused.sum()).ToList());
            for (var i = 0; i < fused.Count; i++)
                if (!double.IsFinite(sums[i])) CheckFinite(rule, slices[i].Unit, fused[i].Slice, fused[i].Fused);
            foreach (var (slice, f) in fused) slice.View(current).copy_(f);
        }
        return slices.Sum(s => s.Slice.IsWhole ? current.numel() : current.numel() / current.shape[s.Slice.Dim] * s.Slice.Length);
    }

    /// <summary>0-dim tensors as doubles, in one host transfer.</summary>
    internal static double[] Transfer(IReadOnlyList<Tensor> scalars)
    {
        if (scalars.Count == 0) return [];
        using var scope = NewDisposeScope();
        return stack(scalars.Select(t => t.to_type(ScalarType.Float64)).ToList()).to(CPU).data<double>().ToArray();
    }

    /// <summary>
    /// Refuses an in-place fusion whose inputs' largest magnitude <paramref name="m"/> (NaN or ∞ when a
    /// value is not finite) could overflow <paramref name="dtype"/> once grown by <paramref name="growth"/>.
    /// </summary>
    internal static void CheckBounds(IFusionRule rule, SliceToFuse first, ScalarType dtype, double growth, double m)
    {
        if (m <= LargestFinite(dtype) / growth) return; // NaN fails too
        var what = double.IsFinite(m)
            ? $"values up to {m:G4} would overflow {dtype} in the rule's arithmetic"
            : "the current, previous or base values hold NaN or infinities";
        throw new UnsafeFusionException(rule.Name, first.Unit.Id, first.Slice.ToString(), what);
    }

    /// <summary>The fused slice has the slice's shape, dtype and device (finiteness is checked for all slices at once).</summary>
    internal static void CheckLayout(IFusionRule rule, SkillUnit unit, UnitSlice slice, Tensor reference, Tensor fused)
    {
        string? problem = null;
        if (!fused.shape.SequenceEqual(reference.shape))
            problem = $"result shape [{string.Join(",", fused.shape)}] differs from the slice's [{string.Join(",", reference.shape)}]";
        else if (fused.dtype != reference.dtype) problem = $"result dtype {fused.dtype} differs from the slice's {reference.dtype}";
        else if (fused.device_type != reference.device_type || fused.device_index != reference.device_index) problem = $"result device {fused.device} differs from the slice's {reference.device}";
        if (problem is not null) throw new UnsafeFusionException(rule.Name, unit.Id, slice.ToString(), problem);
    }

    /// <summary>Element by element: a fused slice with NaN or infinite values is refused (a sum that overflowed is not).</summary>
    internal static void CheckFinite(IFusionRule rule, SkillUnit unit, UnitSlice slice, Tensor fused)
    {
        using var finite = fused.isfinite();
        var bad = finite.numel() - finite.count_nonzero().item<long>();
        if (bad > 0) throw new UnsafeFusionException(rule.Name, unit.Id, slice.ToString(), $"{bad} of {fused.numel()} fused values are NaN or infinite");
    }

    /// <summary>The largest finite value of a floating dtype.</summary>
    internal static double LargestFinite(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 => double.MaxValue,
        ScalarType.Float16 => 65504.0,
        ScalarType.BFloat16 => 3.3895313892515355e38,
        _ => float.MaxValue,
    };
}
