using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
namespace Klf.Fusion;

/// <summary>
/// The random stream of a libtorch CPU generator, reproduced in .NET: MT19937 seeded as
/// <c>torch.Generator(seed)</c> seeds it (the low 32 bits of the seed, the reference initialisation),
/// and float64 uniforms in [0, 1) as <c>torch.rand(..., dtype=float64, generator=g)</c> draws them
/// (two 32-bit outputs, the first as the high half; the low 53 bits scaled by 2⁻⁵³). The same seed
/// gives the same numbers as torch's, bit for bit (a test compares them), so DARE can draw its mask
/// without a native call per slice. Not thread-safe; one per stream.
/// </summary>
public sealed class TorchCpuRandom
{
    private const int N = 624, M = 397;
    private const uint MatrixA = 0x9908b0df, UpperMask = 0x80000000, LowerMask = 0x7fffffff;
    private readonly uint[] _state = new uint[N];
    private readonly uint[] _out = new uint[N];   // the tempered outputs of the current state
    private int _next = N;                         // the first call twists, as torch's left_ = 1 does

    /// <summary>A stream seeded as <c>torch.Generator(seed)</c> on the CPU.</summary>
    public TorchCpuRandom(ulong seed) => Reseed(seed);

    /// <summary>Restarts the stream as <c>torch.Generator(seed)</c> starts it, reusing this instance's buffers.</summary>
    public void Reseed(ulong seed)
    {
        _state[0] = (uint)(seed & 0xffffffff);
        for (var j = 1; j < N; j++) _state[j] = unchecked(1812433253u * (_state[j - 1] ^ (_state[j - 1] >> 30)) + (uint)j);
        _next = N;
    }

    /// <summary>The next 32-bit output.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public uint NextUInt32()
    {
        if (_next == N) Twist();
        return _out[_next++];
    }

    /// <summary>The next float64 uniform in [0, 1), as torch's CPU <c>rand</c> draws it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public double NextDouble()
    {
        ulong hi, lo;
        if (_next <= N - 2)
        {
            hi = _out[_next];
            lo = _out[_next + 1];
            _next += 2;
        }
        else
        {
            hi = NextUInt32();
            lo = NextUInt32();
        }
        var bits = ((hi << 32) | lo) & ((1UL << 53) - 1);
        return bits * (1.0 / (1UL << 53));
    }

    /// <summary>
    /// Fills <paramref name="target"/> with the next uniforms, the same numbers as as many
    /// <see cref="NextDouble"/> calls give, without a call per number.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void NextDoubles(Span<double> target)
    {
        const double Unit = 1.0 / (1UL << 53);
        const ulong Low53 = (1UL << 53) - 1;
        var i = 0;
        while (i < target.Length)
        {
            if (_next > N - 2)
            {
                target[i++] = NextDouble();   // a pair that straddles a twist
                continue;
            }
            var pairs = Math.Min(target.Length - i, (N - _next) / 2);
            ReadOnlySpan<uint> o = _out.AsSpan(_next, 2 * pairs);
            var t = target.Slice(i, pairs);
            var j = 0;
            // Four pairs at a time: the pair as one 64-bit lane has the first output low, so the halves
            // are swapped; the 53 bits go to float64 as two exact halves.
            for (; j + 4 <= t.Length; j += 4)
            {
                var v = Vector256.LoadUnsafe(ref MemoryMarshal.GetReference(o), (nuint)(2 * j)).AsUInt64();
                var high = v & Vector256.Create(0x1F_FFFFUL);                   // the first output's low 21 bits
                var low = Vector256.ShiftRightLogical(v, 32);                   // the second output
                var value = SmallToDouble(high) * Vector256.Create(4294967296.0) + SmallToDouble(low);
                (value * Vector256.Create(Unit)).StoreUnsafe(ref MemoryMarshal.GetReference(t), (nuint)j);
            }
            for (; j < t.Length; j++)
                t[j] = ((((ulong)o[2 * j] << 32) | o[2 * j + 1]) & Low53) * Unit;
            _next += 2 * pairs;
            i += pairs;
        }
    }

    /// <summary>
    /// Integers below 2⁵² to float64, exactly, with integer and float steps AVX2 has (no 64-bit
    /// integer conversion): placed in the mantissa of 2⁵², which is then subtracted.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<double> SmallToDouble(Vector256<ulong> v)
    {
        var magic = Vector256.Create(0x4330_0000_0000_0000UL);
        return (v | magic).AsDouble() - magic.AsDouble();
    }

    /// <summary>
    /// MT19937's twist and tempering, eight words at a time: within a block every word read is either
    /// one not yet rewritten this twist (k + 1, and k + M in the first part) or one rewritten by an
    /// earlier block (k + M − N in the second), as in the serial recurrence.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Twist()
    {
        _next = 0;
        ref var s = ref MemoryMarshal.GetArrayDataReference(_state);
        const int W = 8;
        int k = 0;
        for (; k + W <= N - M; k += W)
            Mix8(ref s, k, k + M);
        for (; k < N - M; k++) Unsafe.Add(ref s, k) = Unsafe.Add(ref s, k + M) ^ Mix(Unsafe.Add(ref s, k), Unsafe.Add(ref s, k + 1));
        for (; k + W <= N - 1; k += W)
            Mix8(ref s, k, k + M - N);
        for (; k < N - 1; k++) Unsafe.Add(ref s, k) = Unsafe.Add(ref s, k + M - N) ^ Mix(Unsafe.Add(ref s, k), Unsafe.Add(ref s, k + 1));
        Unsafe.Add(ref s, N - 1) = Unsafe.Add(ref s, M - 1) ^ Mix(Unsafe.Add(ref s, N - 1), s);
        ref var o = ref MemoryMarshal.GetArrayDataReference(_out);
        for (k = 0; k + W <= N; k += W)
        {
            var y = Vector256.LoadUnsafe(ref s, (nuint)k);
            y ^= Vector256.ShiftRightLogical(y, 11);
            y ^= Vector256.ShiftLeft(y, 7) & Vector256.Create(0x9d2c5680u);
            y ^= Vector256.ShiftLeft(y, 15) & Vector256.Create(0xefc60000u);
            y ^= Vector256.ShiftRightLogical(y, 18);
            y.StoreUnsafe(ref o, (nuint)k);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Mix8(ref uint s, int k, int far)
    {
        var u = Vector256.LoadUnsafe(ref s, (nuint)k);
        var v = Vector256.LoadUnsafe(ref s, (nuint)(k + 1));
        var mixed = Vector256.ShiftRightLogical((u & Vector256.Create(UpperMask)) | (v & Vector256.Create(LowerMask)), 1)
                    ^ (Vector256.Create(MatrixA) & (Vector256<uint>.Zero - (v & Vector256<uint>.One)));
        (Vector256.LoadUnsafe(ref s, (nuint)far) ^ mixed).StoreUnsafe(ref s, (nuint)k);
    }

    // Branch-free: v's low bit is random, so a conditional would be mispredicted half the time.
    private static uint Mix(uint u, uint v) => (((u & UpperMask) | (v & LowerMask)) >> 1) ^ (MatrixA & (0u - (v & 1)));
}
