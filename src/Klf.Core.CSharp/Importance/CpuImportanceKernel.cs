using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Klf.Fusion;

namespace Klf.Importance;

/// <summary>
/// One tracked parameter's importance update (<see cref="ImportanceTracker.Update"/>) on float32 CPU
/// memory in one pass: s = |w·g| (first order) or |w·g − ½(w·g)²| (second order), Ī ← lerp(Ī, s, 1 − β1),
/// Ū ← lerp(Ū, |s − Ī|, 1 − β2). The torch form runs six kernels with a temporary (about sixteen
/// passes over memory); this reads w, g, Ī, Ū once and writes Ī, Ū once, with the same float32
/// operations as libtorch's kernels (its lerp's and its addcmul's fused multiply-adds), so the buffers' bits are the same.
/// </summary>
internal static unsafe class CpuImportanceKernel
{
    private static readonly int Lanes = Vector256<float>.Count;

    /// <summary>Updates <paramref name="sens"/> and <paramref name="unc"/> (n floats each) in place from weights <paramref name="w"/> and gradients <paramref name="g"/>.</summary>
    public static void Update(float* w, float* g, float* sens, float* unc, long n, bool secondOrder, double beta1, double beta2, bool parallel = true)
    {
        float w1 = (float)(1 - beta1), w2 = (float)(1 - beta2);
        CpuTensors.For(n, parallel, (start, length) => Range(w + start, g + start, sens + start, unc + start, length, secondOrder, w1, w2));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Range(float* w, float* g, float* sens, float* unc, long n, bool secondOrder, float w1, float w2)
    {
        // libtorch's lerp: |weight| < 0.5 → fma(weight, end − self, self), else fma(weight − 1, end − self, end).
        bool small1 = MathF.Abs(w1) < 0.5f, small2 = MathF.Abs(w2) < 0.5f;
        float c1 = small1 ? w1 : w1 - 1f, c2 = small2 ? w2 : w2 - 1f;
        var vc1 = Vector256.Create(c1);
        var vc2 = Vector256.Create(c2);
        var half = Vector256.Create(-0.5f);
        long i = 0;
        for (; i + Lanes <= n; i += Lanes)
        {
            var s = Vector256.Load(w + i) * Vector256.Load(g + i);
            if (secondOrder) s = Vector256.FusedMultiplyAdd(half * s, s, s);   // addcmul_(s, s, −0.5): libtorch's kernel fuses the multiply-add
            s = Vector256.Abs(s);
            var si = Vector256.Load(sens + i);
            si = Vector256.FusedMultiplyAdd(vc1, s - si, small1 ? si : s);
            si.Store(sens + i);
            var d = Vector256.Abs(s - si);
            var ui = Vector256.Load(unc + i);
            Vector256.FusedMultiplyAdd(vc2, d - ui, small2 ? ui : d).Store(unc + i);
        }
        for (; i < n; i++)
        {
            var s = w[i] * g[i];
            if (secondOrder) s = MathF.FusedMultiplyAdd(-0.5f * s, s, s);
            s = MathF.Abs(s);
            var si = MathF.FusedMultiplyAdd(c1, s - sens[i], small1 ? sens[i] : s);
            sens[i] = si;
            var d = MathF.Abs(s - si);
            unc[i] = MathF.FusedMultiplyAdd(c2, d - unc[i], small2 ? unc[i] : d);
        }
    }
}
