using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Klf.SkillUnits;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// How <see cref="ModelFusion"/> fuses one parameter tensor in place, without temporaries: the
/// tensor's slices (from one or more units) with the λ of each, checked to be a set of disjoint
/// slices along one dimension. Built only for <see cref="IInterpolatingRule"/> and
/// <see cref="IElementwiseRule"/> (whole tensor) and <see cref="ISliceFusionRule"/> (slice by slice:
/// rows, or strided slices where a CPU kernel takes them); anything else (or slices that overlap, or mix dimensions) takes the
/// general path of temporaries.
/// </summary>
internal sealed class InPlaceFusion
{
    private readonly IFusionRule _rule;
    private readonly int _dim;                 // -1: one whole-tensor slice
    private readonly long _size;               // the tensor's size along _dim
    private readonly double[] _lambda;         // per index along _dim (one entry when whole); 1 = untouched
    private readonly bool[] _covered;          // per index: inside some slice
    private readonly IReadOnlyList<(UnitSlice Slice, UnitFusionContext Context)>? _slices; // slice rules only

    private InPlaceFusion(IFusionRule rule, int dim, long size, double[] lambda, bool[] covered,
        IReadOnlyList<(UnitSlice, UnitFusionContext)>? slices = null)
    {
        _rule = rule;
        _dim = dim;
        _size = size;
        _lambda = lambda;
        _covered = covered;
        _slices = slices;
    }

    /// <summary>The factor by which the rule's arithmetic may grow the inputs' largest magnitude.</summary>
    public double Growth => _rule switch
    {
        IElementwiseRule e => e.Growth,
        ISliceFusionRule s => s.Growth,
        _ => 2.0,
    };

    /// <summary>
    /// The in-place plan of one parameter for <paramref name="rule"/>, or null when the slices do not
    /// allow one (the caller then uses temporaries). <paramref name="lambdas"/> holds each slice's λ
    /// (ignored by element-wise rules).
    /// </summary>
    public static InPlaceFusion? TryPlan(IFusionRule rule, Tensor parameter, IReadOnlyList<UnitSlice> slices, IReadOnlyList<double> lambdas,
        IReadOnlyList<UnitFusionContext> contexts)
    {
        if (rule is not (IInterpolatingRule or IElementwiseRule or ISliceFusionRule) || slices.Count == 0) return null;
        // Slice rules write into contiguous views: whole tensors, or rows (dimension 0) of a contiguous
        // one; slices along a later dimension (the columns of a neuron unit) only where a CPU kernel
        // takes them (gathered, fused, scattered back), or copied to contiguous memory and back.
        if (rule is ISliceFusionRule && (!parameter.is_contiguous() || slices.Any(s => !s.IsWhole && s.Dim != 0)
                                         && !(rule is ICpuSliceRule { CpuApplies: true } && CpuTensors.Eligible(parameter)))) return null;
        var layout = Layout(parameter, slices, lambdas);
        if (layout is null) return null;
        var (dim, size, lambda, covered) = layout.Value;
        return new InPlaceFusion(rule, dim, size, lambda, covered,
            rule is ISliceFusionRule ? slices.Select((s, i) => (s, contexts[i])).ToList() : null);
    }

    /// <summary>
    /// The sliced dimension, its size, each index's λ and whether a slice covers it; null when the
    /// slices overlap, mix dimensions or mix a whole-tensor slice with others.
    /// </summary>
    private static (int Dim, long Size, double[] Lambda, bool[] Covered)? Layout(Tensor parameter, IReadOnlyList<UnitSlice> slices, IReadOnlyList<double> lambdas)
    {
        if (slices.Count == 1 && slices[0].IsWhole) return (-1, 1, [lambdas[0]], [true]);
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
        return (dim, size, lambda, covered);
    }

    /// <summary>
    /// Writes the fused values into <paramref name="current"/> (the live parameter, under no_grad).
    /// <paramref name="previous"/> and <paramref name="basis"/> are the snapshots' tensors (the same
    /// object when there is no separate base).
    /// </summary>
    public void Apply(Tensor current, Tensor previous, Tensor basis)
    {
        if (PrepareCpu(current, previous, basis) is { } work)
        {
            work(true);
            return;
        }
        if (_rule is ISliceFusionRule sliceRule)
        {
            foreach (var (slice, context) in _slices!)
            {
                using var c = slice.View(current);
                using var p = slice.View(previous);
                using var b = ReferenceEquals(previous, basis) ? null : slice.View(basis);
                if (c.is_contiguous())
                {
                    sliceRule.FuseInPlace(c, p, b ?? p, context);
                    continue;
                }
                // A strided slice: fused in contiguous copies, written back.
                using var cc = c.contiguous();
                using var pc = p.contiguous();
                using var bc = b?.contiguous();
                sliceRule.FuseInPlace(cc, pc, bc ?? pc, context);
                c.copy_(cc);
            }
            return;
        }
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
        if (CpuTensors.Eligible(current, previous))
        {
            // One pass with each index's λ; the same bits as the runs and index copies below.
            var shape = current.shape;
            long outer = 1, inner = 1;
            for (var d = 0; d < _dim; d++) outer *= shape[d];
            for (var d = _dim + 1; d < shape.Length; d++) inner *= shape[d];
            unsafe { CpuLerp.Apply(CpuTensors.Pointer(current), CpuTensors.Pointer(previous), outer, _size, inner, _lambda); }
            return;
        }
        // λ = 1 rows must stay untouched and λ = 0 rows become prev, bit for bit (negative zeros
        // included), which one lerp over the tensor does not promise at its ends. Few runs: one kernel
        // per run of interpolated rows and a copy per run of λ = 0 rows. Many runs (neuron and head
        // units): one lerp over the whole tensor with each row's weight, with the λ = 1 rows saved
        // before and written back after, and the λ = 0 rows copied from prev: a fixed number of
        // kernels per tensor instead of several per run.
        bool Interior(long k) => _lambda[k] != 0.0 && _lambda[k] != 1.0;
        if (CountRuns(Interior) + CountRuns(k => _lambda[k] == 0.0) <= ManyRuns)
        {
            ForRuns(k => _lambda[k] == 0.0, (start, length) =>
            {
                using var c = current.narrow(_dim, start, length);
                using var p = previous.narrow(_dim, start, length);
                c.copy_(p);
            });
            if (CountRuns(Interior) == 0) return;
            using var allWeights = Weights(current);
            ForRuns(Interior, (start, length) =>
            {
                using var w = allWeights.narrow(_dim, start, length);
                using var c = current.narrow(_dim, start, length);
                using var p = previous.narrow(_dim, start, length);
                c.lerp_(p, w);
            });
            return;
        }
        using var scope = NewDisposeScope();
        var keep = Indices(k => _lambda[k] == 1.0, current.device);
        var copy = Indices(k => _lambda[k] == 0.0, current.device);
        var saved = keep is null ? null : current.index_select(_dim, keep);
        current.lerp_(previous, Weights(current));
        if (keep is not null) current.index_copy_(_dim, keep, saved!);
        if (copy is not null) current.index_copy_(_dim, copy, previous.index_select(_dim, copy));
    }

    /// <summary>
    /// A slice rule's CPU kernel over this tensor's slices (whole, or rows of a contiguous tensor), or
    /// null when the rule or the tensors do not allow it. The returned work touches no tensor object
    /// (every native call is made here), so several tensors' work can run on the cores at once; with
    /// true it uses the cores itself (one slice split over them, or many slices spread), with false it
    /// runs on the calling thread.
    /// </summary>
    internal unsafe Action<bool>? PrepareCpu(Tensor current, Tensor previous, Tensor basis)
    {
        if (_rule is not ICpuSliceRule { CpuApplies: true } rule || _slices is null) return null;
        if (!CpuTensors.Eligible(current, previous, ReferenceEquals(previous, basis) ? null : basis)) return null;
        var slices = _slices;
        var numel = current.numel();
        var shape = current.shape;
        var c = CpuTensors.Pointer(current);
        var p = CpuTensors.Pointer(previous);
        var separate = !ReferenceEquals(previous, basis);
        var b = separate ? CpuTensors.Pointer(basis) : p;
        void One(int i, bool parallel)
        {
            var (slice, context) = slices[i];
            if (slice.IsWhole)
            {
                rule.FuseCpu(c, p, b, numel, context, parallel);
                return;
            }
            // The slice is `outer` blocks of Length × inner contiguous elements, `size` × inner apart.
            long outer = 1, inner = 1;
            for (var d = 0; d < slice.Dim; d++) outer *= shape[d];
            for (var d = slice.Dim + 1; d < shape.Length; d++) inner *= shape[d];
            long block = slice.Length * inner, stride = shape[slice.Dim] * inner, first = slice.Start * inner;
            if (outer == 1)
            {
                rule.FuseCpu(c + first, p + first, b + first, block, context, parallel);
                return;
            }
            // Strided (a neuron unit's columns): gathered in the slice's row-major order, the order
            // the torch form sees it in (DARE's draws, TIES' selection), fused, scattered back.
            var n = outer * block;
            var buffer = (float*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(n * (separate ? 3 : 2)), sizeof(float));
            try
            {
                float* gc = buffer, gp = buffer + n, gb = separate ? buffer + 2 * n : gp;
                Gather(c, gc, outer, block, stride, first);
                Gather(p, gp, outer, block, stride, first);
                if (separate) Gather(b, gb, outer, block, stride, first);
                rule.FuseCpu(gc, gp, gb, n, context, parallel);
                Scatter(gc, c, outer, block, stride, first);
            }
            finally
            {
                System.Runtime.InteropServices.NativeMemory.Free(buffer);
            }
        }
        return parallel =>
        {
            if (slices.Count == 1) One(0, parallel);
            else if (parallel) CpuTensors.ForEach(slices.Count, i => One(i, false));
            else for (var i = 0; i < slices.Count; i++) One(i, false);
        };
    }

    /// <summary>Copies `outer` blocks of `block` floats, `stride` apart from `first` in source, to consecutive places in target.</summary>
    private static unsafe void Gather(float* source, float* target, long outer, long block, long stride, long first)
    {
        for (long o = 0; o < outer; o++) CopyBlock(source + o * stride + first, target + o * block, block);
    }

    /// <summary>The inverse of <see cref="Gather"/>: consecutive blocks of source back to their strided places in target.</summary>
    private static unsafe void Scatter(float* source, float* target, long outer, long block, long stride, long first)
    {
        for (long o = 0; o < outer; o++) CopyBlock(source + o * block, target + o * stride + first, block);
    }

    // A neuron unit's block is a few dozen floats: vector moves inline beat a copy call per block.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void CopyBlock(float* from, float* to, long count)
    {
        long i = 0;
        if (count <= 64)
        {
            for (; i + 8 <= count; i += 8) Vector256.Load(from + i).Store(to + i);
            for (; i < count; i++) to[i] = from[i];
        }
        else Buffer.MemoryCopy(from, to, count * sizeof(float), count * sizeof(float));
    }

    /// <summary>Above this many runs a tensor is fused with one lerp and index copies instead of a kernel per run.</summary>
    private const int ManyRuns = 64;

    /// <summary>The lerp weight 1 − λ of every index along the sliced dimension, shaped to broadcast over <paramref name="like"/>.</summary>
    private Tensor Weights(Tensor like)
    {
        var weights = new double[_size];
        for (var k = 0; k < _size; k++) weights[k] = 1.0 - _lambda[k];
        var shape = Enumerable.Repeat(1L, (int)like.dim()).ToArray();
        shape[_dim] = _size;
        using var w64 = tensor(weights, dtype: ScalarType.Float64);
        using var w = w64.to(like.dtype, like.device);
        return w.reshape(shape);
    }

    /// <summary>The indices satisfying <paramref name="selected"/> as an int64 tensor, or null when there are none.</summary>
    private Tensor? Indices(Func<long, bool> selected, Device device)
    {
        var list = new List<long>();
        for (long k = 0; k < _size; k++) if (selected(k)) list.Add(k);
        return list.Count == 0 ? null : tensor(list.ToArray(), dtype: ScalarType.Int64, device: device);
    }

    /// <summary>The number of maximal runs of consecutive indices satisfying <paramref name="selected"/>.</summary>
    private int CountRuns(Func<long, bool> selected)
    {
        var runs = 0;
        ForRuns(selected, (_, _) => runs++);
        return runs;
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
