using System.Runtime.CompilerServices;
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
    public TorchCpuRandom(ulong seed)
    {
        _state[0] = (uint)(seed & 0xffffffff);
        for (var j = 1; j < N; j++) _state[j] = unchecked(1812433253u * (_state[j - 1] ^ (_state[j - 1] >> 30)) + (uint)j);
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Twist()
    {
        _next = 0;
        var s = _state;
        int k;
        for (k = 0; k < N - M; k++) s[k] = s[k + M] ^ Mix(s[k], s[k + 1]);
        for (; k < N - 1; k++) s[k] = s[k + M - N] ^ Mix(s[k], s[k + 1]);
        s[N - 1] = s[M - 1] ^ Mix(s[N - 1], s[0]);
        var o = _out;
        for (k = 0; k < N; k++)
        {
            var y = s[k];
            y ^= y >> 11;
            y ^= (y << 7) & 0x9d2c5680;
            y ^= (y << 15) & 0xefc60000;
            y ^= y >> 18;
            o[k] = y;
        }
    }

    // Branch-free: v's low bit is random, so a conditional would be mispredicted half the time.
    private static uint Mix(uint u, uint v) => (((u & UpperMask) | (v & LowerMask)) >> 1) ^ (MatrixA & (0u - (v & 1)));
}
