using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training;

/// <summary>
/// Causal language modelling on a packed token stream (pre-training): batches of fixed windows cut
/// from one long array of ids, with the loss on every token.
/// </summary>
/// <remarks>
/// "Loss on every token" needs no new loss: a decoder-only <see cref="LmBatch"/> whose labels equal
/// its input ids (no -100) makes <see cref="ILanguageModel.ComputeLoss"/> (which shifts by one, as
/// Hugging Face does) predict token t + 1 from tokens 0..t at every position. A window of
/// <c>seqLen + 1</c> tokens therefore yields exactly <c>seqLen</c> predicted tokens; its first
/// token is context only. No padding: every attention-mask entry is 1.
/// </remarks>
public static class CausalWindows
{
    /// <summary>
    /// A batch of windows <c>stream[s .. s + seqLen]</c> (inclusive, seqLen + 1 tokens) for each
    /// start s: InputIds = Labels (B, seqLen + 1), AttentionMask all ones; int64 on
    /// <paramref name="device"/> (CPU when null). The caller owns (disposes) the batch.
    /// </summary>
    public static LmBatch Batch(IReadOnlyList<int> stream, IReadOnlyList<long> starts, int seqLen, Device? device = null)
    {
        if (starts.Count == 0) throw new ArgumentException("no windows", nameof(starts));
        if (seqLen < 1) throw new ArgumentOutOfRangeException(nameof(seqLen), seqLen, "must be at least 1");
        int b = starts.Count, t = seqLen + 1;
        var ids = new long[b * t];
        for (var i = 0; i < b; i++)
        {
            var s = starts[i];
            if (s < 0 || s + t > stream.Count)
                throw new ArgumentOutOfRangeException(nameof(starts), s, $"window {i} [{s}, {s + t}) lies outside the stream of {stream.Count} tokens");
            for (var j = 0; j < t; j++) ids[i * t + j] = stream[(int)(s + j)];
        }
        var dev = device ?? CPU;
        var input = torch.tensor(ids, new long[] { b, t }, ScalarType.Int64, dev);
        return new LmBatch(input, torch.ones(new long[] { b, t }, ScalarType.Int64, dev), input.clone());
    }

    /// <summary>
    /// <paramref name="count"/> window starts drawn uniformly from [0, streamLength − seqLen − 1]
    /// with <paramref name="rng"/> (one <c>NextInt64</c> each; a seeded <see cref="Random"/> gives the
    /// same starts in every process).
    /// </summary>
    public static long[] SampleStarts(Random rng, int streamLength, int seqLen, int count)
    {
        var room = (long)streamLength - seqLen;   // valid starts: 0 .. room - 1
        if (room < 1) throw new ArgumentException($"a stream of {streamLength} tokens is too short for windows of {seqLen + 1}");
        var starts = new long[count];
        for (var i = 0; i < count; i++) starts[i] = rng.NextInt64(room);
        return starts;
    }

    /// <summary>
    /// Starts of consecutive windows that predict every token of the stream after the first exactly
    /// once (stride seqLen, the last partial window dropped). With <paramref name="maxWindows"/> &gt; 0
    /// and more windows than that, that many are kept, evenly spaced over the stream (deterministic).
    /// </summary>
    public static long[] EvaluationStarts(int streamLength, int seqLen, int maxWindows = 0)
    {
        if (seqLen < 1) throw new ArgumentOutOfRangeException(nameof(seqLen), seqLen, "must be at least 1");
        var n = Math.Max(0, (streamLength - 1) / seqLen);
        var all = Enumerable.Range(0, n).Select(k => (long)k * seqLen).ToArray();
        if (maxWindows <= 0 || n <= maxWindows) return all;
        return Enumerable.Range(0, maxWindows).Select(i => all[(int)((long)i * n / maxWindows)]).ToArray();
    }

    /// <summary>
    /// Mean next-token cross-entropy over the windows at <paramref name="starts"/> (every window has
    /// seqLen targets, so this is the per-token mean), in batches of <paramref name="batchSize"/>,
    /// under no_grad and in eval mode (the training mode is restored). NaN when there are no windows.
    /// </summary>
    public static double EvaluateLoss(ILanguageModel model, IReadOnlyList<int> stream, IReadOnlyList<long> starts, int seqLen, int batchSize = 16)
    {
        if (starts.Count == 0) return double.NaN;
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        var device = Trainer.DeviceOf(model);
        var wasTraining = model.Module.training;
        model.Module.eval();
        double sum = 0;
        try
        {
            using var _ = torch.no_grad();
            for (var s = 0; s < starts.Count; s += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                var chunk = starts.Skip(s).Take(batchSize).ToArray();
                using var batch = Batch(stream, chunk, seqLen, device);
                sum += model.ComputeLoss(batch).ToDouble() * chunk.Length;
            }
        }
        finally
        {
            model.Module.train(wasTraining);
        }
        return sum / starts.Count;
    }
}
