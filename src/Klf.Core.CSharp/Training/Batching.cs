using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training;

/// <summary>One supervised example: prompt and answer token ids (no special tokens, no padding).</summary>
/// <param name="PromptIds">Prompt tokens (BOS, if the model wants one, included by the tokenizer).</param>
/// <param name="AnswerIds">Answer tokens; the batcher appends EOS.</param>
public sealed record LmExample(int[] PromptIds, int[] AnswerIds);

/// <summary>How examples become tensors.</summary>
/// <param name="Family">Decoder-only or encoder-decoder layout.</param>
/// <param name="PadTokenId">Padding id of inputs (labels are padded with -100).</param>
/// <param name="EosTokenId">Appended after the answer (both families) and after the prompt (encoder-decoder).</param>
/// <param name="MaxLength">Decoder-only: cap on prompt + answer + EOS. Encoder-decoder: cap on prompt + EOS.</param>
/// <param name="MaxTargetLength">Encoder-decoder only: cap on answer + EOS.</param>
/// <param name="Truncation">Which prompt tokens are dropped when the prompt does not fit.</param>
public sealed record BatchLayout(ModelFamily Family, int PadTokenId, int EosTokenId, int MaxLength = 512, int MaxTargetLength = 128,
    PromptTruncation Truncation = PromptTruncation.DropMiddle)
{
    /// <summary>The layout a model asks for (its family, pad and EOS ids).</summary>
    public static BatchLayout For(ILanguageModel model, int maxLength = 512, int maxTargetLength = 128,
        PromptTruncation truncation = PromptTruncation.DropMiddle) =>
        new(model.Family, model.PadTokenId, model.EosTokenId, maxLength, maxTargetLength, truncation);
}

/// <summary>
/// Turns examples into <see cref="LmBatch"/>es and plans length-bucketed batch orders. Pure except
/// for the tensors it returns.
/// </summary>
/// <remarks>
/// Truncation: the prompt is cut by <see cref="BatchLayout.Truncation"/> (by default its middle is
/// dropped, see <see cref="PromptCut"/>); the answer is kept whole. Only when the answer plus EOS alone
/// exceeds the cap is the answer cut on the right (its first tokens kept; EOS then dropped).
/// </remarks>
public static class Batching
{
    /// <summary>Label value that carries no loss.</summary>
    public const int IgnoreIndex = -100;

    /// <summary>
    /// Decoder-only sequence of one example after truncation: (input ids, labels), equal length,
    /// labels = -100 on the prompt, the answer tokens and EOS elsewhere.
    /// </summary>
    public static (int[] Ids, int[] Labels) DecoderOnlySequence(LmExample e, int eos, int maxLength,
        PromptTruncation truncation = PromptTruncation.DropMiddle)
    {
        var answer = e.AnswerIds.Append(eos).ToArray();
        if (answer.Length > maxLength) answer = answer.Take(maxLength).ToArray();
        var room = maxLength - answer.Length;
        var prompt = PromptCut.Apply(e.PromptIds, room, truncation);
        var ids = prompt.Concat(answer).ToArray();
        var labels = Enumerable.Repeat(IgnoreIndex, prompt.Length).Concat(answer).ToArray();
        return (ids, labels);
    }

    /// <summary>Encoder-decoder pair after truncation: encoder input = prompt + EOS, labels = answer + EOS.</summary>
    public static (int[] Input, int[] Labels) EncoderDecoderPair(LmExample e, int eos, int maxSource, int maxTarget,
        PromptTruncation truncation = PromptTruncation.DropMiddle)
    {
        var room = Math.Max(0, maxSource - 1);
        var prompt = PromptCut.Apply(e.PromptIds, room, truncation);
        var input = prompt.Append(eos).ToArray();
        var labels = e.AnswerIds.Append(eos).Take(maxTarget).ToArray();
        return (input, labels);
    }

    /// <summary>Length used for bucketing: the padded length this example needs (source length for encoder-decoder).</summary>
    public static int Length(LmExample e, BatchLayout layout) => layout.Family == ModelFamily.DecoderOnly
        ? Math.Min(e.PromptIds.Length + e.AnswerIds.Length + 1, layout.MaxLength)
        : Math.Min(e.PromptIds.Length + 1, layout.MaxLength);

    /// <summary>
    /// Builds one right-padded batch. Decoder-only: InputIds/AttentionMask/Labels (B, T), T = longest
    /// sequence. Encoder-decoder: InputIds/AttentionMask (B, S), Labels (B, L). All int64 on
    /// <paramref name="device"/> (CPU when null); the caller owns (disposes) the batch.
    /// </summary>
    public static LmBatch Build(IReadOnlyList<LmExample> examples, BatchLayout layout, Device? device = null)
    {
        if (examples.Count == 0) throw new ArgumentException("empty batch", nameof(examples));
        int[][] inputs, labels;
        if (layout.Family == ModelFamily.DecoderOnly)
        {
            var seqs = examples.Select(e => DecoderOnlySequence(e, layout.EosTokenId, layout.MaxLength, layout.Truncation)).ToArray();
            inputs = seqs.Select(s => s.Ids).ToArray();
            labels = seqs.Select(s => s.Labels).ToArray();
        }
        else
        {
            var pairs = examples.Select(e => EncoderDecoderPair(e, layout.EosTokenId, layout.MaxLength, layout.MaxTargetLength, layout.Truncation)).ToArray();
            inputs = pairs.Select(p => p.Input).ToArray();
            labels = pairs.Select(p => p.Labels).ToArray();
        }
        int b = examples.Count, t = inputs.Max(s => s.Length), l = labels.Max(s => s.Length);
        var ids = new long[b * t];
        var mask = new long[b * t];
        var lab = new long[b * l];
        Array.Fill(ids, layout.PadTokenId);
        Array.Fill(lab, IgnoreIndex);
        for (var i = 0; i < b; i++)
        {
            for (var j = 0; j < inputs[i].Length; j++) { ids[i * t + j] = inputs[i][j]; mask[i * t + j] = 1; }
            for (var j = 0; j < labels[i].Length; j++) lab[i * l + j] = labels[i][j];
        }
        var dev = device ?? CPU;
        return new LmBatch(
            torch.tensor(ids, new long[] { b, t }, ScalarType.Int64, dev),
            torch.tensor(mask, new long[] { b, t }, ScalarType.Int64, dev),
            torch.tensor(lab, new long[] { b, l }, ScalarType.Int64, dev));
    }

    /// <summary>
    /// Length-bucketed batch plan over indices 0..lengths.Length-1: shuffle all indices with
    /// <paramref name="seed"/>; cut them into pools of <paramref name="poolBatches"/> × batch size;
    /// sort each pool by length (stable, ascending) and cut it into batches of
    /// <paramref name="batchSize"/> (a pool's last batch may be smaller); finally shuffle the order
    /// of all batches with the same RNG. Every index appears in exactly one batch.
    /// </summary>
    public static int[][] PlanBuckets(IReadOnlyList<int> lengths, int batchSize, int seed, int poolBatches = 50)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize));
        if (poolBatches <= 0) throw new ArgumentOutOfRangeException(nameof(poolBatches));
        var rng = new Random(seed);
        var idx = Enumerable.Range(0, lengths.Count).ToArray();
        Shuffle(idx, rng);
        var pool = batchSize * poolBatches;
        var batches = new List<int[]>();
        for (var start = 0; start < idx.Length; start += pool)
        {
            var sorted = idx.Skip(start).Take(pool).OrderBy(i => lengths[i]).ToArray();   // OrderBy is stable
            for (var s = 0; s < sorted.Length; s += batchSize)
                batches.Add(sorted.Skip(s).Take(batchSize).ToArray());
        }
        var order = batches.ToArray();
        Shuffle(order, rng);
        return order;
    }

    private static void Shuffle<T>(T[] a, Random rng)
    {
        for (var i = a.Length - 1; i > 0; i--)
        {
            var j = rng.Next(i + 1);
            (a[i], a[j]) = (a[j], a[i]);
        }
    }
}
