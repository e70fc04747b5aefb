using Klf.SkillUnits;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// How <see cref="ModelFusion"/> fuses one parameter tensor in place, without temporaries: the
/// tensor's slices (from one or more units) with the λ of each, checked to be a set of disjoint
/// slices along one dimension. Built only for <see cref="IInterpolatingRule"/> and
/// <see cref="IElementwiseRule"/>; anything else (or slices that overlap, or mix dimensions) takes
/// the general path of temporaries.
/// </summary>
internal sealed class InPlaceFusion
{
    private readonly IFusionRule _rule;
    private readonly int _dim;                 // -1: one whole-tensor slice
    private readonly long _size;               // the tensor's size along _dim
    private readonly double[] _lambda;         // per index along _dim (one entry when whole); 1 = untouched
    private readonly bool[] _covered;          // per index: inside some slice

    private InPlaceFusion(IFusionRule rule, int dim, long size, double[] lambda, bool[] covered)
    {
        _rule = rule;
        _dim = dim;
        _size = size;
        _lambda = lambda;
        _covered = covered;
    }

    /// <summary>The factor by which the rule's arithmetic may grow the inputs' largest magnitude.</summary>
    public double Growth => _rule is IElementwiseRule e ? e.Growth : 2.0;

    /// <summary>
    /// The in-place plan of one parameter for <paramref name="rule"/>, or null when the slices do not
    /// allow one (the caller then uses temporaries). <paramref name="lambdas"/> holds each slice's λ
    /// (ignored by element-wise rules).
    /// </summary>
    public static InPlaceFusion? TryPlan(IFusionRule rule, Tensor parameter, IReadOnlyList<UnitSlice> slices, IReadOnlyList<double> lambdas)
    {
        if (rule is not (IInterpolatingRule or IElementwiseRule) || slices.Count == 0) return null;
        if (slices.Count == 1 && slices[0].IsWhole)
            return new InPlaceFusion(rule, -1, 1, [lambdas[0]], [true]);
        var dim = slices[0].Dim;
        if (dim < 0 || slices.Any(s => s.Dim != dim) || dim >= parameter.dim()) return null;
        var size = parameter.shape[dim];
        var lambda = new double[size];
        var covered = new bool[size];
        Array.Fill(lambda, 1.0);
        for (var i = 0; i < slices.Count; i++)
        {
            var s = slices[i];
            if (s.Start < 0 || s.Length <= 0 || s.Start + s.Length > size) return null;
            for (var k = s.Start; k < s.Start + s.Length; k++)
            {
                if (covered[k]) return null; // overlapping slices: the general path computes all from the original values
                covered[k] = true;
                lambda[k] = lambdas[i];
            }
        }
        return new InPlaceFusion(rule, dim, size, lambda, covered);
    }

    /// <summary>
    /// Writes the fused values into <paramref name="current"/> (the live parameter, under no_grad).
    /// <paramref name="previous"/> and <paramref name="basis"/> are the snapshots' tensors (the same
    /// object when there is no separate base).
    /// </summary>
    public void Apply(Tensor current, Tensor previous, Tensor basis)
    {
        if (_rule is IElementwiseRule elementwise)
        {
            if (_dim < 0 || _covered.All(c => c)) elementwise.FuseInPlace(current, previous, basis);
            else ForRuns(k => _covered[k], (start, length) =>
            {
                using var c = current.narrow(_dim, start, length);
                using var p = previous.narrow(_dim, start, length);
                using var b = ReferenceEquals(previous, basis) ? p : basis.narrow(_dim, start, length);
                elementwise.FuseInPlace(c, p, b);
            });
            return;
        }
        if (_dim < 0)
        {
            FusionKernels.InterpolateInPlace(current, previous, _lambda[0]);
            return;
        }
        // λ = 1 rows stay untouched and λ = 0 rows are copied, so both ends stay bit-exact; the rows in
        // between are interpolated by runs, one kernel per run with each row's λ as a weight tensor.
        ForRuns(k => _lambda[k] == 0.0, (start, length) =>
        {
            using var c = current.narrow(_dim, start, length);
            using var p = previous.narrow(_dim, start, length);
            c.copy_(p);
        });
        ForRuns(k => _lambda[k] != 0.0 && _lambda[k] != 1.0, (start, length) =>
        {
            var weights = new double[length];
            for (var i = 0; i < length; i++) weights[i] = 1.0 - _lambda[start + i];
            var shape = Enumerable.Repeat(1L, (int)current.dim()).ToArray();
            shape[_dim] = length;
            using var w64 = tensor(weights, dtype: ScalarType.Float64);
            using var w = w64.to(current.dtype, current.device).reshape(shape);
            using var c = current.narrow(_dim, start, length);
            using var p = previous.narrow(_dim, start, length);
            c.lerp_(p, w);
        });
    }

    /// <summary>Calls <paramref name="run"/> with each maximal run of consecutive indices satisfying <paramref name="selected"/>.</summary>
    private void ForRuns(Func<long, bool> selected, Action<long, long> run)
    {
        long k = 0;
        while (k < _size)
        {
            if (!selected(k)) { k++; continue; }
            var start = k;
            while (k < _size && selected(k)) k++;
            run(start, k - start);
        }
    }
}
