using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Klf.Fusion;

/// <summary>
/// The positions of the successes among independent Bernoulli(q) draws, in increasing order, as
/// DARE's torch form draws them on the CPU: gaps ⌊ln(1 − u) / ln(1 − q)⌋ + 1 from the float64
/// uniforms u of a CPU torch generator (<see cref="TorchCpuRandom"/>). The uniforms come in blocks
/// and their quotients x are taken four at a time with a vector logarithm and a reciprocal (a few
/// ulps from torch's scalar log and division); an x within 1e-10·(1 + x) of an integer, where those
/// ulps could move the floor, is recomputed as torch computes it (<see cref="Math.Log(double)"/>, then
/// the division), so the positions are exactly the torch form's (tests compare them).
/// Not thread-safe: one per thread (<see cref="ForThread"/>), restarted per slice.
/// </summary>
internal sealed class GeometricPositions
{
    private const int Block = 512;
    private readonly TorchCpuRandom _random = new(0);
    private double _logFail;
    private readonly double[] _uniforms = new double[Block];
    private readonly double[] _floors = new double[Block];
    private int _used = Block;
    private long _last = -1;
    private bool _done;

    [ThreadStatic] private static GeometricPositions? _forThread;

    private GeometricPositions() { }

    /// <summary>
    /// This thread's stream, restarted for rate <paramref name="q"/> in (0, 1) from a generator seeded
    /// with <paramref name="seed"/>: a slice's draws without allocating buffers per slice (neuron
    /// units have thousands). Valid until the thread's next call.
    /// </summary>
    public static GeometricPositions ForThread(ulong seed, double q)
    {
        var stream = _forThread ??= new GeometricPositions();
        stream._random.Reseed(seed);
        stream._logFail = Math.Log(1.0 - q);
        stream._used = Block;
        stream._last = -1;
        stream._done = false;
        return stream;
    }

    /// <summary>
    /// Writes the next positions below <paramref name="n"/> into <paramref name="positions"/> and
    /// returns how many; fewer than its length means the stream has passed <paramref name="n"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int Next(Span<long> positions, long n)
    {
        var count = 0;
        if (_done) return count;
        var last = _last;
        var floors = _floors;
        while (count < positions.Length)
        {
            if (_used == Block) Refill();
            last += (long)floors[_used++] + 1;
            if (last >= n || last < 0)
            {
                _done = true;
                return count;
            }
            positions[count++] = last;
        }
        _last = last;
        return count;
    }

    /// <summary>The next block of uniforms and their floors.</summary>
    private void Refill()
    {
        _random.NextDoubles(_uniforms);
        Floors(_uniforms, _floors, _logFail);
        _used = 0;
    }

    /// <summary>
    /// ⌊ln(1 − u) / <paramref name="logFail"/>⌋ for each uniform u in [0, 1), as torch computes it
    /// (scalar log, then the division): four at a time with <see cref="Log"/> and a reciprocal, and a
    /// block holding a quotient x within 1e-10·(1 + x) of an integer recomputed in torch's form.
    /// <paramref name="floors"/> is as long as <paramref name="uniforms"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Floors(ReadOnlySpan<double> uniforms, Span<double> floors, double logFail)
    {
        var one = Vector256.Create(1.0);
        var inverse = Vector256.Create(1.0 / logFail);
        var tolerance = Vector256.Create(1e-10);
        var close = Vector256<double>.Zero;
        ref var u = ref MemoryMarshal.GetReference(uniforms);
        ref var f = ref MemoryMarshal.GetReference(floors);
        var i = 0;
        for (; i + Vector256<double>.Count <= uniforms.Length; i += Vector256<double>.Count)
        {
            var x = Log(one - Vector256.LoadUnsafe(ref u, (nuint)i)) * inverse;
            var floor = Vector256.Floor(x);
            var frac = x - floor;
            var margin = tolerance * (one + x);
            floor.StoreUnsafe(ref f, (nuint)i);
            close |= Vector256.LessThan(frac, margin) | Vector256.GreaterThan(frac, one - margin);
        }
        // Rare (about 1e-10·(1 + x) per draw), and outside the vector loop so that it keeps its
        // constants in registers: the whole block as torch computes it (and the tail past the vectors).
        var from = close != Vector256<double>.Zero ? 0 : i;
        for (var j = from; j < uniforms.Length; j++) floors[j] = Math.Floor(Math.Log(1.0 - uniforms[j]) / logFail);
    }

    /// <summary>
    /// ln t for t in [2⁻⁵³, 1], to about 1e-13 relative: t = m·2ᵉ with m in [√½, √2), and
    /// ln m = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.172, by its series to s¹³. Integer steps only
    /// where AVX2 has them (the exponent goes to float64 by <see cref="TorchCpuRandom.SmallToDouble"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> Log(Vector256<double> t)
    {
        var bits = t.AsUInt64();
        var m = (bits & Vector256.Create(0x000F_FFFF_FFFF_FFFFUL) | Vector256.Create(0x3FF0_0000_0000_0000UL)).AsDouble();
        var e = TorchCpuRandom.SmallToDouble(Vector256.ShiftRightLogical(bits, 52)) - Vector256.Create(1023.0);
        var high = Vector256.GreaterThan(m, Vector256.Create(1.4142135623730951));
        m = Vector256.ConditionalSelect(high, m * Vector256.Create(0.5), m);
        e += high & Vector256<double>.One;
        var one = Vector256<double>.One;
        var s = (m - one) / (m + one);
        var s2 = s * s;
        var series = Vector256.Create(2.0 / 13.0);
        series = MulAdd(series, s2, Vector256.Create(2.0 / 11.0));
        series = MulAdd(series, s2, Vector256.Create(2.0 / 9.0));
        series = MulAdd(series, s2, Vector256.Create(2.0 / 7.0));
        series = MulAdd(series, s2, Vector256.Create(2.0 / 5.0));
        series = MulAdd(series, s2, Vector256.Create(2.0 / 3.0));
        series = MulAdd(series, s2, Vector256.Create(2.0));
        return MulAdd(e, Vector256.Create(0.6931471805599453), series * s);
    }

    /// <summary>a·b + c, fused where the machine has FMA (the logarithm is approximate either way).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> MulAdd(Vector256<double> a, Vector256<double> b, Vector256<double> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;
}
