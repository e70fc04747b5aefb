using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Klf.Fusion;

/// <summary>
/// The k-th largest magnitude of a difference of two float32 arrays in CPU memory, exactly (the value
/// <c>kthvalue</c> over |x − y| gives), by selection on the magnitudes' bits (a non-negative float's
/// bits order as its value). Large inputs are not materialised: a strided sample brackets the answer,
/// one vector pass over the inputs counts the elements above the bracket and gathers those inside it
/// (a few per cent), and the selection runs on those (on all of |x − y| when the bracket misses,
/// which its width makes rare). The selection buckets keys linearly between the range's ends (about
/// four keys per bucket, at most 2,048 buckets) and descends into the rank's bucket, so each level
/// keeps a small share of its keys whatever their distribution; duplicates cost nothing. TIES' trim
/// threshold.
/// </summary>
public static unsafe class CpuSelection
{
    private const int BucketBits = 11;
    private const long SelectDirectly = 1L << 12;
    private const long SampleSize = 1L << 13;
    private const int SortBelow = 48;

    /// <summary>
    /// The <paramref name="k"/>-th largest of |x[i] − y[i]| over <paramref name="n"/> elements
    /// (1 ≤ k ≤ n; inputs finite), on the cores when <paramref name="parallel"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float KthLargestAbsDifference(float* x, float* y, long n, long k, bool parallel = true)
    {
        if (k < 1 || k > n) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must lie in [1, {n}]");
        if (n <= SelectDirectly) return SelectAll(x, y, n, k);
        // A sample of a sixteenth, at most SampleSize: small slices (a neuron unit's thousands of
        // elements) gain as much from the bracket as large ones.
        var m = (int)Math.Min(SampleSize, n / 16);
        var stride = n / m;
        var sample = ArrayPool<uint>.Shared.Rent(m);
        uint lo, hi;
        double rank = (double)(n - k) / n * (m - 1);
        var margin = 4.0 * Math.Sqrt(m * ((double)k / n) * (1.0 - (double)k / n)) + 8.0;
        try
        {
            uint smallest = uint.MaxValue, largest = 0;
            for (long j = 0; j < m; j++)
            {
                var key = Key(x[j * stride] - y[j * stride]);
                sample[j] = key;
                smallest = Math.Min(smallest, key);
                largest = Math.Max(largest, key);
            }
            (lo, hi) = SelectPair(sample, m, (long)Math.Max(0, Math.Floor(rank - margin)), (long)Math.Min(m - 1, Math.Ceiling(rank + margin)), smallest, largest);
        }
        finally { ArrayPool<uint>.Shared.Return(sample); }
        var capacity = (int)Math.Min(n, 4.0 * margin / m * n + 4096);
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
            // One range (a small slice, or one core): its keys as they are, without a merged copy.
            if (parts.Count == 1) return BitConverter.UInt32BitsToSingle(SelectInRange(parts[0].Inside, (int)within, within - (k - above), lo, hi));
            var inside = ArrayPool<uint>.Shared.Rent((int)within);
            try
            {
                var at = 0;
                foreach (var p in parts)
                {
                    Array.Copy(p.Inside, 0, inside, at, p.Count);
                    at += p.Count;
                }
                return BitConverter.UInt32BitsToSingle(SelectInRange(inside, (int)within, within - (k - above), lo, hi));
            }
            finally { ArrayPool<uint>.Shared.Return(inside); }
        }
        finally
        {
            foreach (var p in parts) ArrayPool<uint>.Shared.Return(p.Inside);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Key(float difference) => BitConverter.SingleToUInt32Bits(MathF.Abs(difference));

    /// <summary>Every |x − y| as bits, then the selection.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float SelectAll(float* x, float* y, long n, long k)
    {
        if (n > Array.MaxLength) throw new NotSupportedException($"a TIES slice of {n} elements is larger than one array can hold");
        var keys = ArrayPool<uint>.Shared.Rent((int)n);
        try
        {
            uint smallest = uint.MaxValue, largest = 0;
            for (long i = 0; i < n; i++)
            {
                var key = Key(x[i] - y[i]);
                keys[i] = key;
                smallest = Math.Min(smallest, key);
                largest = Math.Max(largest, key);
            }
            return BitConverter.UInt32BitsToSingle(SelectInRange(keys, (int)n, n - k, smallest, largest));
        }
        finally { ArrayPool<uint>.Shared.Return(keys); }
    }

    // For each 8-bit mask, the lanes it selects first (vpermd indices): a branch-free compaction.
    private static readonly int[] CompactLanes = BuildCompactLanes();

    private static int[] BuildCompactLanes()
    {
        var table = new int[256 * 8];
        for (var mask = 0; mask < 256; mask++)
        {
            var at = 0;
            for (var lane = 0; lane < 8; lane++) if ((mask & (1 << lane)) != 0) table[mask * 8 + at++] = lane;
        }
        return table;
    }

    /// <summary>
    /// Over one range: how many |x − y| lie above <paramref name="hi"/> (bits), and the bits of those
    /// in [lo, hi] in a pooled array (overflow: more than <paramref name="capacity"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (long Above, uint[] Inside, int Count, bool Overflow) Bracket(float* x, float* y, long n, uint lo, uint hi, int capacity)
    {
        var keys = ArrayPool<uint>.Shared.Rent(Math.Max(1, capacity) + 8);
        var count = 0;
        long above = 0;
        long i = 0;
        if (Avx2.IsSupported)
        {
            // Non-negative floats compare as their bits; as signed integers here (the sign bit is 0).
            // In-bracket keys are written with a permutation to the front and a full-width store (the
            // array has 8 spare slots), so the loop has no data-dependent branch; above counts as −1 lanes.
            var vlo = Vector256.Create((int)lo - 1);
            var vhi = Vector256.Create((int)hi);
            var aboveLanes = Vector256<int>.Zero;
            var limit = keys.Length - 8;
            fixed (uint* k = keys)
            fixed (int* table = CompactLanes)
            {
                for (; i + 8 <= n && count <= limit; i += 8)
                {
                    var v = Vector256.Abs(Vector256.Load(x + i) - Vector256.Load(y + i)).AsInt32();
                    var over = Vector256.GreaterThan(v, vhi);
                    aboveLanes += over;
                    var mask = (Vector256.GreaterThan(v, vlo) & ~over).ExtractMostSignificantBits();
                    Avx2.PermuteVar8x32(v, Vector256.Load(table + mask * 8)).Store((int*)k + count);
                    count += BitOperations.PopCount(mask);
                }
            }
            for (var lane = 0; lane < 8; lane++) above -= aboveLanes.GetElement(lane);
            if (count > capacity) return (above, keys, count, true);
        }
        for (; i < n; i++)
        {
            var v = Key(x[i] - y[i]);
            if (v > hi) above++;
            else if (v >= lo)
            {
                if (count >= capacity) return (above, keys, count, true);
                keys[count++] = v;
            }
        }
        return (above, keys, count, false);
    }

    /// <summary>
    /// The key of ascending rank <paramref name="rank"/> among the first <paramref name="count"/> of
    /// <paramref name="keys"/> (non-negative floats' bits), which are not modified.
    /// </summary>
    public static uint Select(uint[] keys, int count, long rank)
    {
        if (rank < 0 || rank >= count || count > keys.Length) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must lie in [0, {count})");
        uint smallest = uint.MaxValue, largest = 0;
        for (var i = 0; i < count; i++)
        {
            smallest = Math.Min(smallest, keys[i]);
            largest = Math.Max(largest, keys[i]);
        }
        return SelectInRange(keys, count, rank, smallest, largest);
    }

    /// <summary>The keys of ascending ranks <paramref name="first"/> ≤ <paramref name="second"/> among keys in [lo, hi]: one histogram for both.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (uint, uint) SelectPair(uint[] keys, int count, long first, long second, uint lo, uint hi)
    {
        if (lo == hi) return (lo, lo);
        Span<int> histogram = stackalloc int[1 << BucketBits];
        var shift = Count(keys, count, lo, hi, histogram, out var buckets);
        return (Descend(keys, count, first, lo, hi, shift, histogram[..buckets]), Descend(keys, count, second, lo, hi, shift, histogram[..buckets]));
    }

    /// <summary>The key of ascending rank <paramref name="rank"/> among <paramref name="count"/> keys, all in [lo, hi] (not modified).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static uint SelectInRange(uint[] keys, int count, long rank, uint lo, uint hi)
    {
        if (lo == hi) return lo;
        Span<int> histogram = stackalloc int[1 << BucketBits];
        var shift = Count(keys, count, lo, hi, histogram, out var buckets);
        return Descend(keys, count, rank, lo, hi, shift, histogram[..buckets]);
    }

    /// <summary>The histogram of keys in [lo, hi] (lo &lt; hi) in the first <paramref name="buckets"/> of <paramref name="histogram"/>; returns the shift.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Count(uint[] keys, int count, uint lo, uint hi, Span<int> histogram, out int buckets)
    {
        var shift = Shift(lo, hi, count);
        buckets = (int)((hi - lo) >> shift) + 1;
        var counted = histogram[..buckets];
        counted.Clear();
        for (var i = 0; i < count; i++) counted[(int)((keys[i] - lo) >> shift)]++;
        return shift;
    }

    /// <summary>
    /// With the first level's histogram counted: the bucket holding the rank, its keys gathered, then
    /// the same on them (11 bits fewer each level) until one value or a few keys are left.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static uint Descend(uint[] keys, int count, long rank, uint lo, uint hi, int shift, Span<int> histogram)
    {
        var bucket = (uint)Find(histogram, ref rank);
        if (shift == 0) return lo + bucket;
        var size = histogram[(int)bucket];
        var gathered = ArrayPool<uint>.Shared.Rent(size);
        try
        {
            Span<int> next = stackalloc int[1 << BucketBits];
            var source = keys;
            while (true)
            {
                var start = lo + (bucket << shift);
                var end = Math.Min(hi, start + ((1u << shift) - 1));
                var c = 0;
                for (var i = 0; i < count; i++)
                {
                    var key = source[i];
                    if (key - start <= end - start) gathered[c++] = key;
                }
                (source, count, lo, hi) = (gathered, c, start, end);
                if (count <= SortBelow)
                {
                    Array.Sort(gathered, 0, count);
                    return gathered[rank];
                }
                if (lo == hi) return lo;
                shift = Shift(lo, hi, count);
                var buckets = (int)((hi - lo) >> shift) + 1;
                var h = next[..buckets];
                h.Clear();
                for (var i = 0; i < count; i++) h[(int)((gathered[i] - lo) >> shift)]++;
                bucket = (uint)Find(h, ref rank);
                if (shift == 0) return lo + bucket;
            }
        }
        finally { ArrayPool<uint>.Shared.Return(gathered); }
    }

    /// <summary>
    /// The right shift that maps [lo, hi] onto at most a quarter as many buckets as there are keys
    /// (at least 2^6, at most 2^11): finding the rank's bucket is a serial scan, so it must not
    /// cost more than the counting.
    /// </summary>
    private static int Shift(uint lo, uint hi, int count)
    {
        var bits = Math.Clamp(BitOperations.Log2((uint)Math.Max(1, count)) - 2, 6, BucketBits);
        return Math.Max(0, 32 - BitOperations.LeadingZeroCount(hi - lo) - bits);
    }

    /// <summary>The bucket that holds ascending rank <paramref name="rank"/>; <paramref name="rank"/> becomes the rank within it.</summary>
    private static int Find(Span<int> histogram, ref long rank)
    {
        for (var b = 0; b < histogram.Length; b++)
        {
            if (rank < histogram[b]) return b;
            rank -= histogram[b];
        }
        throw new InvalidOperationException("selection: the rank lies beyond the counted elements");
    }
}
