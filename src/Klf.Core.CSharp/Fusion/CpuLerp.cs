using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Klf.Fusion;

/// <summary>
/// KIF's interpolation θ̄ = prev + λ·(cur − prev) on contiguous float32 CPU memory with one λ per
/// index along one dimension (skill units that are rows or columns of a tensor), in one pass: λ = 1
/// leaves an element untouched, λ = 0 copies prev, bit for bit, and any other λ computes torch's
/// <c>lerp_(prev, 1 − λ)</c> exactly as libtorch's CPU kernel does (weight w in float32;
/// fma(w, prev − cur, cur) for |w| &lt; 0.5, fma(w − 1, prev − cur, prev) otherwise).
/// </summary>
public static unsafe class CpuLerp
{
    private static readonly int Lanes = Vector256<float>.Count;

    /// <summary>
    /// The tensor as [outer, size, inner] (the sliced dimension in the middle), λ per index of the
    /// middle dimension (<paramref name="lambda"/>, <paramref name="size"/> entries).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Apply(float* current, float* previous, long outer, long size, long inner, double[] lambda, bool parallel = true)
    {
        if (lambda.Length != size) throw new ArgumentException($"{lambda.Length} weights for a dimension of {size}", nameof(lambda));
        var w = new float[size];
        for (var k = 0; k < size; k++) w[k] = (float)(1.0 - lambda[k]);
        if (inner == 1)
        {
            // λ varies along each row: vectors of weights, with the λ = 0 and λ = 1 elements selected.
            var keep = new float[size];
            var copy = new float[size];
            for (var k = 0; k < size; k++)
            {
                keep[k] = lambda[k] == 1.0 ? BitConverter.Int32BitsToSingle(-1) : 0.0f;
                copy[k] = lambda[k] == 0.0 ? BitConverter.Int32BitsToSingle(-1) : 0.0f;
            }
            CpuTensors.For(outer, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, length) =>
            {
                fixed (float* pw = w, pk = keep, pc = copy)
                    for (var o = start; o < start + length; o++)
                        Row(current + o * size, previous + o * size, size, pw, pk, pc);
            }, Math.Max(2, CpuTensors.ParallelThreshold / Math.Max(1, size)));
            return;
        }
        // λ is constant over each run of `inner` elements.
        CpuTensors.For(outer * size, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, length) =>
        {
            for (var item = start; item < start + length; item++)
            {
                var k = item % size;
                if (lambda[k] == 1.0) continue;
                float* c = current + item * inner, p = previous + item * inner;
                if (lambda[k] == 0.0) Buffer.MemoryCopy(p, c, inner * sizeof(float), inner * sizeof(float));
                else Constant(c, p, inner, w[k]);
            }
        }, Math.Max(2, CpuTensors.ParallelThreshold / Math.Max(1, inner)));
    }

    /// <summary>cur ← torch's lerp(cur, prev, w) over <paramref name="n"/> elements, one weight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Constant(float* c, float* p, long n, float w)
    {
        var small = MathF.Abs(w) < 0.5f;
        var coeff = small ? w : w - 1.0f;
        var vcoeff = Vector256.Create(coeff);
        long i = 0;
        for (; i + Lanes <= n; i += Lanes)
        {
            var vc = Vector256.Load(c + i);
            var vp = Vector256.Load(p + i);
            Vector256.FusedMultiplyAdd(vcoeff, vp - vc, small ? vc : vp).Store(c + i);
        }
        for (; i < n; i++) c[i] = MathF.FusedMultiplyAdd(coeff, p[i] - c[i], small ? c[i] : p[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]

    private static void Row(float* c, float* p, long n, float* w, float* keep, float* copy)
    {
        var half = Vector256.Create(0.5f);
        var one = Vector256.Create(1.0f);
        long i = 0;
        for (; i + Lanes <= n; i += Lanes)
        {
            var vc = Vector256.Load(c + i);
            var vp = Vector256.Load(p + i);
            var vw = Vector256.Load(w + i);
            var small = Vector256.LessThan(Vector256.Abs(vw), half);
            var r = Vector256.FusedMultiplyAdd(Vector256.ConditionalSelect(small, vw, vw - one), vp - vc, Vector256.ConditionalSelect(small, vc, vp));
            r = Vector256.ConditionalSelect(Vector256.Load(keep + i), vc, r);
            r = Vector256.ConditionalSelect(Vector256.Load(copy + i), vp, r);
            r.Store(c + i);
        }
        for (; i < n; i++)
        {
            if (float.IsNaN(keep[i])) continue;   // an all-ones mask is a NaN
            if (float.IsNaN(copy[i])) { c[i] = p[i]; continue; }
            var small = MathF.Abs(w[i]) < 0.5f;
            c[i] = MathF.FusedMultiplyAdd(small ? w[i] : w[i] - 1.0f, p[i] - c[i], small ? c[i] : p[i]);
        }
    }
}
