using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Raw access to contiguous float32 tensors in CPU memory for the fusion kernels of
/// <see cref="CpuFusionKernels"/>, and the split of element ranges over the cores. Tensors on other
/// devices or of other dtypes never come here: the rules keep their torch form for them.
/// </summary>
public static class CpuTensors
{
    /// <summary>
    /// Whether the fusion rules use the CPU kernels where they apply (default true). Set false to run
    /// every rule through its torch operations instead (a comparison, or a check of the kernels); the
    /// results are the same bits either way.
    /// </summary>
    public static bool Enabled { get; set; } = true;

    /// <summary>
    /// Whether every given tensor (nulls skipped) is a contiguous float32 tensor on the CPU with the
    /// element count of the first, and the kernels are <see cref="Enabled"/>.
    /// </summary>
    public static bool Eligible(params Tensor?[] tensors)
    {
        if (!Enabled) return false;
        long n = -1;
        foreach (var t in tensors)
        {
            if (t is null) continue;
            if (t.device_type != DeviceType.CPU || t.dtype != ScalarType.Float32 || !t.is_contiguous()) return false;
            var count = t.numel();
            if (n < 0) n = count;
            else if (count != n) return false;
        }
        return n >= 0;
    }

    /// <summary>
    /// The address of the first element of a contiguous CPU tensor (its storage offset included).
    /// Valid while the tensor lives and is not resized; the caller keeps it alive.
    /// </summary>
    public static unsafe float* Pointer(Tensor tensor)
    {
        if (tensor.numel() == 0) return null;
        // A one-element view: its byte span starts at the tensor's first element, whatever its size
        // (a span of the whole tensor is limited to 2 GiB).
        using var flat = tensor.view(-1);
        using var first = flat.narrow(0, 0, 1);
        fixed (byte* p = first.bytes) return (float*)p;
    }

    /// <summary>Below this many elements a kernel runs on the calling thread.</summary>
    public const long ParallelThreshold = 1L << 16;

    /// <summary>
    /// Calls <paramref name="body"/>(start, length) over [0, <paramref name="n"/>) in chunks, on the
    /// cores when <paramref name="parallel"/> and the range holds at least <paramref name="grain"/>
    /// items (default <see cref="ParallelThreshold"/>), else on this thread. Chunk starts are multiples
    /// of 64 items so vector loops see aligned splits.
    /// </summary>
    public static void For(long n, bool parallel, Action<long, long> body, long grain = ParallelThreshold)
    {
        var workers = parallel && n >= Math.Max(2, grain) ? Math.Max(1, Math.Min(Environment.ProcessorCount, torch.get_num_threads())) : 1;
        if (workers == 1)
        {
            body(0, n);
            return;
        }
        var chunk = (n + workers - 1) / workers;
        if (chunk > 64) chunk = (chunk + 63) / 64 * 64;
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
        {
            var start = w * chunk;
            var length = Math.Min(chunk, n - start);
            if (length > 0) body(start, length);
        });
    }

    /// <summary>
    /// Runs <paramref name="body"/> for each index in [0, <paramref name="count"/>) on the cores
    /// (many small items: one slice per item, each on one thread).
    /// </summary>
    public static void ForEach(int count, Action<int> body)
    {
        var workers = Math.Max(1, Math.Min(Environment.ProcessorCount, torch.get_num_threads()));
        if (workers == 1 || count == 1)
        {
            for (var i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = workers }, body);
    }
}
