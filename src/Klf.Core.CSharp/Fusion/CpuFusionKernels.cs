using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Klf.Fusion;

/// <summary>
/// The fusion rules' element-wise arithmetic on contiguous float32 CPU memory, one pass over the
/// inputs with 256-bit vectors, split over the cores (<see cref="CpuTensors.For"/>). Each kernel does
/// the same float operations in the same order as the torch form of its rule (no fused multiply-add
/// where torch has none), so the results are the same bits; tests compare them with the torch forms.
/// Pointers address <c>n</c> floats each; <c>current</c> is overwritten, the others are only read
/// and may alias one another (never <c>current</c>).
/// </summary>
public static unsafe class CpuFusionKernels
{
    private static readonly int Lanes = Vector256<float>.Count;

    /// <summary>
    /// Task arithmetic with a separate base: cur ← base + λ·(((cur − base) + prev) − base), λ applied
    /// only when it is not 1 (as <see cref="TaskArithmeticRule.FuseInPlace"/> does).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TaskArithmetic(float* current, float* previous, float* basis, long n, double scale, bool parallel = true)
    {
        var s = (float)scale;
        var scaled = scale != 1.0;
        CpuTensors.For(n, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, length) =>
        {
            float* c = current + start, p = previous + start, b = basis + start;
            long i = 0;
            var vs = Vector256.Create(s);
            for (; i + Lanes <= length; i += Lanes)
            {
                var vb = Vector256.Load(b + i);
                var v = Vector256.Load(c + i) - vb + Vector256.Load(p + i) - vb;
                if (scaled) v *= vs;
                (v + vb).Store(c + i);
            }
            for (; i < length; i++)
            {
                var v = c[i] - b[i] + p[i] - b[i];
                if (scaled) v *= s;
                c[i] = v + b[i];
            }
        });
    }

    /// <summary>
    /// MagMax with a separate base: cur ← base + λ·(|τ_c| ≥ |τ_p| ? τ_c : τ_p) with τ_c = cur − base,
    /// τ_p = prev − base (<see cref="MagMaxRule"/>'s merge; λ always multiplied, as its torch form does).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MagMax(float* current, float* previous, float* basis, long n, double scale, bool parallel = true)
    {
        var s = (float)scale;
        CpuTensors.For(n, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, length) =>
        {
            float* c = current + start, p = previous + start, b = basis + start;
            long i = 0;
            var vs = Vector256.Create(s);
            for (; i + Lanes <= length; i += Lanes)
            {
                var vb = Vector256.Load(b + i);
                var tc = Vector256.Load(c + i) - vb;
                var tp = Vector256.Load(p + i) - vb;
                var chosen = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(Vector256.Abs(tc), Vector256.Abs(tp)), tc, tp);
                (vb + chosen * vs).Store(c + i);
            }
            for (; i < length; i++)
            {
                float tc = c[i] - b[i], tp = p[i] - b[i];
                c[i] = b[i] + (MathF.Abs(tc) >= MathF.Abs(tp) ? tc : tp) * s;
            }
        });
    }

    /// <summary>
    /// TIES without a separate base: cur ← prev + λ·trim(cur − prev), where trim keeps the entries
    /// whose magnitude is at least <paramref name="threshold"/> and turns the others into a zero of
    /// their sign; λ applied only when it is not 1 (as <see cref="TiesRule.FuseInPlace"/> does).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TiesTrim(float* current, float* previous, long n, float threshold, double scale, bool parallel = true)
    {
        var s = (float)scale;
        var scaled = scale != 1.0;
        CpuTensors.For(n, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, length) =>
        {
            float* c = current + start, p = previous + start;
            long i = 0;
            var vk = Vector256.Create(threshold);
            var vs = Vector256.Create(s);
            var signBit = Vector256.Create(-0.0f);
            for (; i + Lanes <= length; i += Lanes)
            {
                var vp = Vector256.Load(p + i);
                var t = Vector256.Load(c + i) - vp;
                // τ·0 is a zero with τ's sign: keep the sign bit where the entry is trimmed.
                var kept = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(Vector256.Abs(t), vk), t, t & signBit);
                if (scaled) kept *= vs;
                (kept + vp).Store(c + i);
            }
            for (; i < length; i++)
            {
                var t = c[i] - p[i];
                var kept = MathF.Abs(t) >= threshold ? t : t * 0.0f;
                if (scaled) kept *= s;
                c[i] = kept + p[i];
            }
        });
    }

    /// <summary>
    /// TIES with a separate base (<see cref="TiesRule"/>'s trim, elect and disjoint mean): τ_p =
    /// prev − base and τ_c = cur − base each keep the entries of magnitude at least their threshold
    /// (others +0); the elected sign is sign(t_p + t_c); the merged value is the mean of the non-zero
    /// trimmed values of that sign; cur ← base + λ·merged.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TiesMerge(float* current, float* previous, float* basis, long n, float thresholdPrevious, float thresholdCurrent,
        double scale, bool parallel = true)
    {
        var s = (float)scale;
        CpuTensors.For(n, parallel, [MethodImpl(MethodImplOptions.AggressiveOptimization)] (start, length) =>
        {
            float* c = current + start, p = previous + start, b = basis + start;
            long i = 0;
            var kp = Vector256.Create(thresholdPrevious);
            var kc = Vector256.Create(thresholdCurrent);
            var vs = Vector256.Create(s);
            var zero = Vector256<float>.Zero;
            var one = Vector256.Create(1.0f);
            for (; i + Lanes <= length; i += Lanes)
            {
                var vb = Vector256.Load(b + i);
                var tp = Vector256.Load(p + i) - vb;
                var tc = Vector256.Load(c + i) - vb;
                tp = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(Vector256.Abs(tp), kp), tp, zero);
                tc = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(Vector256.Abs(tc), kc), tc, zero);
                var elected = Sign(tp + tc);
                var inP = Vector256.Equals(Sign(tp), elected) & ~Vector256.Equals(tp, zero);
                var inC = Vector256.Equals(Sign(tc), elected) & ~Vector256.Equals(tc, zero);
                var sum = (tp & inP) + (tc & inC);
                var count = Vector256.Max((one & inP) + (one & inC), one);
                (vb + sum / count * vs).Store(c + i);
            }
            for (; i < length; i++)
            {
                float tp = p[i] - b[i], tc = c[i] - b[i];
                if (!(MathF.Abs(tp) >= thresholdPrevious)) tp = 0.0f;
                if (!(MathF.Abs(tc) >= thresholdCurrent)) tc = 0.0f;
                var elected = Sign(tp + tc);
                bool inP = Sign(tp) == elected && tp != 0.0f, inC = Sign(tc) == elected && tc != 0.0f;
                var sum = (inP ? tp : 0.0f) + (inC ? tc : 0.0f);
                var count = MathF.Max((inP ? 1.0f : 0.0f) + (inC ? 1.0f : 0.0f), 1.0f);
                c[i] = b[i] + sum / count * s;
            }
        });
    }

    /// <summary>torch's sign: 1, −1, or +0 for either zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Sign(float x) => x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]

    private static Vector256<float> Sign(Vector256<float> x)
    {
        var one = Vector256.Create(1.0f);
        return (one & Vector256.GreaterThan(x, Vector256<float>.Zero)) - (one & Vector256.LessThan(x, Vector256<float>.Zero));
    }

    /// <summary>
    /// DARE where few elements are kept, over elements [<paramref name="start"/>, <paramref name="end"/>):
    /// cur ← prev there, except at the sorted <paramref name="positions"/> (all inside the range), where
    /// cur ← (cur − prev)·s + prev (s = λ/(1 − p), applied in float32 as torch does). The kept values
    /// are computed first, then the range is copied from prev in one call and they are written back,
    /// so no call is made per gap.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DareKept(float* current, float* previous, long start, long end, ReadOnlySpan<long> positions, double scale)
    {
        var s = (float)scale;
        var kept = positions.Length <= 1024 ? stackalloc float[positions.Length] : new float[positions.Length];
        for (var j = 0; j < positions.Length; j++)
        {
            var at = positions[j];
            kept[j] = (current[at] - previous[at]) * s + previous[at];
        }
        var bytes = (end - start) * sizeof(float);
        Buffer.MemoryCopy(previous + start, current + start, bytes, bytes);
        for (var j = 0; j < positions.Length; j++) current[positions[j]] = kept[j];
    }

    /// <summary>
    /// DARE where few elements are dropped, over elements [<paramref name="start"/>, <paramref name="end"/>):
    /// cur ← (cur − prev)·s + prev there, then cur ← prev at the sorted <paramref name="positions"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DareDropped(float* current, float* previous, long start, long end, ReadOnlySpan<long> positions, double scale)
    {
        var s = (float)scale;
        var vs = Vector256.Create(s);
        float* c = current + start, p = previous + start;
        long length = end - start, i = 0;
        for (; i + Lanes <= length; i += Lanes)
        {
            var vp = Vector256.Load(p + i);
            ((Vector256.Load(c + i) - vp) * vs + vp).Store(c + i);
        }
        for (; i < length; i++) c[i] = (c[i] - p[i]) * s + p[i];
        foreach (var at in positions) current[at] = previous[at];
    }
}
