using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Klf.Fusion;

/// <summary>
/// The k-th largest magnitude of a difference of two float32 arrays in CPU memory, exactly (the value
/// <c>kthvalue</c> over |x − y| gives), by radix selection on the magnitudes' bits (a non-negative
/// float's bits order as its value). Large inputs are not materialised: a strided sample brackets the
/// answer, one vector pass over the inputs counts the elements above the bracket and gathers those
/// inside it, and the selection runs on those (on all of |x − y| when the bracket misses, which its
/// width makes rare). Duplicates cost nothing. TIES' trim threshold.
/// </summary>
public static unsafe class CpuSelection
{
    private const int TopShift = 21;                  // bits 21..31 (the sign bit is always 0)
    private const int TopBuckets = 1 << 11;

    /// <summary>
    /// The <paramref name="k"/>-th largest of |x[i] − y[i]| over <paramref name="n"/> elements
    /// (1 ≤ k ≤ n; inputs finite), on the cores when <paramref name="parallel"/>.
    /// </summary>
    public static float KthLargestAbsDifference(float* x, float* y, long n, long k, bool parallel = true)
    {
        if (k < 1 || k > n) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must lie in [1, {n}]");
        if (n <= SelectDirectly) return SelectAll(x, y, n, k);
        // A sample at a fixed stride brackets the answer; one vector pass counts the elements above the
        // bracket and gathers those inside it (a few per cent); the selection runs on those.
        // A sample of a sixteenth, at most SampleSize: small slices (a neuron unit's thousands of
        // elements) gain as much from the bracket as large ones.
        var stride = Math.Max(2L, n / Math.Min(SampleSize, n / 16));
        var m = (int)((n + stride - 1) / stride);
        var sample = new uint[m];
        for (long j = 0; j < m; j++) sample[j] = BitConverter.SingleToUInt32Bits(MathF.Abs(x[j * stride] - y[j * stride]));
        double rank = (double)(n - k) / n * (m - 1);
        var margin = 4.0 * Math.Sqrt(m * ((double)k / n) * (1.0 - (double)k / n)) + 8.0;
        var lo = Select(sample, m, (long)Math.Max(0, Math.Floor(rank - margin)));
        var hi = Select(sample, m, (long)Math.Min(m - 1, Math.Ceiling(rank + margin)));
        var capacity = (long)Math.Min(n, 4.0 * margin / m * n + 4096);
        var parts = new List<(long Above, uint[] Inside, int Count, bool Overflow)>();
        var gate = new object();
        CpuTensors.For(n, parallel, (start, length) =>
        {
            var part = Bracket(x + start, y + start, length, lo, hi, (int)Math.Min(capacity, length));
            lock (gate) parts.Add(part);
        });
        try
        {
            long above = parts.Sum(p => p.Above), within = parts.Sum(p => (long)p.Count);
            if (parts.Any(p => p.Overflow) || !(above < k && k <= above + within)) return SelectAll(x, y, n, k);
            var inside = new uint[within];
            var at = 0;
            foreach (var p in parts)
            {
                Array.Copy(p.Inside, 0, inside, at, p.Count);
                at += p.Count;
            }
            return BitConverter.UInt32BitsToSingle(Select(inside, (int)within, within - (k - above)));
        }
        finally
        {
            foreach (var p in parts) ArrayPool<uint>.Shared.Return(p.Inside);
        }
    }

    private const long SelectDirectly = 1L << 12;
    private const long SampleSize = 1L << 14;

    /// <summary>Every |x − y| as bits, then the selection.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float SelectAll(float* x, float* y, long n, long k)
    {
        if (n > Array.MaxLength) throw new NotSupportedException($"a TIES slice of {n} elements is larger than one array can hold");
        var keys = ArrayPool<uint>.Shared.Rent((int)n);
        try
        {
            for (long i = 0; i < n; i++) keys[i] = BitConverter.SingleToUInt32Bits(MathF.Abs(x[i] - y[i]));
            return BitConverter.UInt32BitsToSingle(Select(keys, (int)n, n - k));
        }
        finally { ArrayPool<uint>.Shared.Return(keys); }
    }

    /// <summary>
    /// Over one range: how many |x − y| lie above <paramref name="hi"/> (bits), and the bits of those
    /// in [lo, hi] in a pooled array (overflow: more than <paramref name="capacity"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (long Above, uint[] Inside, int Count, bool Overflow) Bracket(float* x, float* y, long n, uint lo, uint hi, int capacity)
    {
        var keys = ArrayPool<uint>.Shared.Rent(Math.Max(1, capacity));
        var count = 0;
        long above = 0;
        var overflow = false;
        // Non-negative floats compare as their bits; as signed integers here (the sign bit is 0).
        var vlo = Vector256.Create((int)lo);
        var vhi = Vector256.Create((int)hi);
        var lanes = stackalloc uint[8];
        long i = 0;
        for (; i + 8 <= n; i += 8)
        {
            var v = Vector256.Abs(Vector256.Load(x + i) - Vector256.Load(y + i)).AsInt32();
            above += System.Numerics.BitOperations.PopCount(Vector256.GreaterThan(v, vhi).ExtractMostSignificantBits());
            var hits = (Vector256.GreaterThanOrEqual(v, vlo) & Vector256.LessThanOrEqual(v, vhi)).ExtractMostSignificantBits();
            if (hits == 0) continue;
            v.AsUInt32().Store(lanes);
            while (hits != 0)
            {
                var lane = System.Numerics.BitOperations.TrailingZeroCount(hits);
                hits &= hits - 1;
                if (count < keys.Length) keys[count++] = lanes[lane];
                else overflow = true;
            }
        }
        for (; i < n; i++)
        {
            var v = BitConverter.SingleToUInt32Bits(MathF.Abs(x[i] - y[i]));
            if (v > hi) above++;
            else if (v >= lo)
            {
                if (count < keys.Length) keys[count++] = v;
                else overflow = true;
            }
        }
        return (above, keys, count, overflow);
    }

    /// <summary>
    /// The key of ascending rank <paramref name="rank"/> among the first <paramref name="count"/> of
    /// <paramref name="keys"/> (non-negative floats' bits), which are not modified: radix selection on
    /// bits 21..31, then 10..20, then 0..9.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static uint Select(uint[] keys, int count, long rank)
    {
        if (rank < 0 || rank >= count || count > keys.Length) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must lie in [0, {count})");
        if (count <= SmallCount) return SelectSmall(keys, count, rank);
        // Histograms on the stack: a selection per small TIES slice (thousands per model) allocates nothing.
        Span<int> top = stackalloc int[TopBuckets];
        for (var i = 0; i < count; i++) top[(int)(keys[i] >> TopShift)]++;
        var bucket = (uint)Find(top, ref rank);
        var inBucket = ArrayPool<uint>.Shared.Rent((int)Math.Max(1, top[(int)bucket]));
        try
        {
            var c = 0;
            for (var i = 0; i < count; i++)
                if (keys[i] >> TopShift == bucket) inBucket[c++] = keys[i];
            return SelectLowBits(inBucket, c, rank, bucket << TopShift);
        }
        finally { ArrayPool<uint>.Shared.Return(inBucket); }
    }

    // Up to this many keys, four 8-bit passes over all of them cost less than the 11-bit passes and their
    // bucket scans (a sample and a bracket of a small slice hold a thousand or so).
    private const int SmallCount = 1 << 14;

    /// <summary>The key of ascending rank <paramref name="rank"/> among the first <paramref name="count"/>: four 8-bit radix passes, each over the keys that share the digits found so far.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static uint SelectSmall(uint[] keys, int count, long rank)
    {
        Span<int> histogram = stackalloc int[256];
        uint prefix = 0, mask = 0;
        for (var shift = 24; shift >= 0; shift -= 8)
        {
            histogram.Clear();
            for (var i = 0; i < count; i++)
            {
                var key = keys[i];
                if ((key & mask) == prefix) histogram[(int)((key >> shift) & 0xff)]++;
            }
            var digit = (uint)Find(histogram, ref rank);
            prefix |= digit << shift;
            mask |= 0xffu << shift;
        }
        return prefix;
    }

    /// <summary>The key of ascending rank <paramref name="rank"/> among keys that share <paramref name="prefix"/>'s top 11 bits: bits 10..20, then 0..9.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static uint SelectLowBits(uint[] keys, int count, long rank, uint prefix)
    {
        Span<int> mid = stackalloc int[1 << 11];
        for (var i = 0; i < count; i++) mid[(int)((keys[i] >> 10) & 0x7ff)]++;
        var b2 = (uint)Find(mid, ref rank);
        Span<int> low = stackalloc int[1 << 10];
        for (var i = 0; i < count; i++)
            if (((keys[i] >> 10) & 0x7ff) == b2) low[(int)(keys[i] & 0x3ff)]++;
        var b3 = (uint)Find(low, ref rank);
        return prefix | (b2 << 10) | b3;
    }

    /// <summary>The bucket that holds ascending rank <paramref name="rank"/>; <paramref name="rank"/> becomes the rank within it.</summary>
    private static int Find(Span<int> histogram, ref long rank)
    {
        for (var b = 0; b < histogram.Length; b++)
        {
            if (rank < histogram[b]) return b;
            rank -= histogram[b];
        }
        throw new InvalidOperationException("radix selection: the rank lies beyond the counted elements");
    }
}
