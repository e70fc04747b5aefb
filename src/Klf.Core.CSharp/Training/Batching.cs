using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training;

/// <summary>One supervised example: prompt and answer token ids (no padding).</summary>
/// <param name="PromptIds">Prompt tokens (BOS, if the model wants one, included by the tokenizer). Encoder-only
/// models: the whole input as the tokenizer frames it (<c>[CLS] … [SEP]</c>).</param>
/// <param name="AnswerIds">Answer tokens; for generating models the batcher appends EOS. Encoder-only
/// models: one of <paramref name="Choices"/>, framed the same way.</param>
/// <param name="Choices">The candidate answers (encoder-only models: required, each framed as the prompt);
/// null for generation.</param>
public sealed record LmExample(int[] PromptIds, int[] AnswerIds, int[][]? Choices = null);

/// <summary>How examples become tensors.</summary>
/// <param name="Family">Decoder-only or encoder-decoder layout.</param>
/// <param name="PadTokenId">Padding id of inputs (labels are padded with -100).</param>
/// <param name="EosTokenId">Appended after the answer (both families) and after the prompt (encoder-decoder).</param>
/// <param name="MaxLength">Decoder-only: cap on prompt + answer + EOS. Encoder-decoder: cap on prompt + EOS.
/// Encoder-only: cap on the input and on each choice.</param>
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

    /// <summary>
    /// Encoder-only input after truncation: a framed sequence (first and last token, e.g. <c>[CLS]</c> and
    /// <c>[SEP]</c>, kept) whose inner tokens are cut by <paramref name="truncation"/> to fit <paramref name="maxLength"/>.
    /// </summary>
    public static int[] EncoderSequence(int[] ids, int maxLength, PromptTruncation truncation = PromptTruncation.DropMiddle)
    {
        if (ids.Length <= maxLength) return ids;
        if (maxLength < 2) throw new ArgumentException($"an encoder input needs room for its first and last token, and the cap is {maxLength}", nameof(maxLength));
        var inner = PromptCut.Apply(ids[1..^1], maxLength - 2, truncation);
        return [ids[0], .. inner, ids[^1]];
    }

    /// <summary>Length used for bucketing: the padded length this example needs (source length for encoder-decoder and encoder-only).</summary>
    public static int Length(LmExample e, BatchLayout layout) => layout.Family switch
    {
        ModelFamily.DecoderOnly => Math.Min(e.PromptIds.Length + e.AnswerIds.Length + 1, layout.MaxLength),
        ModelFamily.EncoderOnly => Math.Min(e.PromptIds.Length, layout.MaxLength),
        _ => Math.Min(e.PromptIds.Length + 1, layout.MaxLength),
    };

    /// <summary>
    /// Builds one right-padded batch. Decoder-only: InputIds/AttentionMask/Labels (B, T), T = longest
    /// sequence. Encoder-decoder: InputIds/AttentionMask (B, S), Labels (B, L). All int64 on
    /// <paramref name="device"/> (CPU when null); the caller owns (disposes) the batch.
    /// </summary>
    public static LmBatch Build(IReadOnlyList<LmExample> examples, BatchLayout layout, Device? device = null)
    {
        if (examples.Count == 0) throw new ArgumentException("empty batch", nameof(examples));
        if (layout.Family == ModelFamily.EncoderOnly) return BuildChoices(examples, layout, device ?? CPU);
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
    /// An encoder-only batch: InputIds/AttentionMask (B, T) of the inputs (<see cref="EncoderSequence"/>),
    /// Labels (B) the index of each answer among the batch's distinct choices, and
    /// <see cref="LmBatch.Choices"/>: their ids and mask (C, L) and which belong to which example (B, C).
    /// Throws <see cref="ArgumentException"/> for an example without choices or whose answer is not one of them.
    /// </summary>
    private static LmBatch BuildChoices(IReadOnlyList<LmExample> examples, BatchLayout layout, Device device)
    {
        var distinct = new List<int[]>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var allowedOf = new List<int>[examples.Count];
        var gold = new long[examples.Count];
        for (var i = 0; i < examples.Count; i++)
        {
            var e = examples[i];
            if (e.Choices is not { Length: > 0 } choices)
                throw new ArgumentException($"example {i} of the batch has no choices: an encoder-only model scores an example's candidate answers", nameof(examples));
            allowedOf[i] = new List<int>(choices.Length);
            gold[i] = -1;
            foreach (var c in choices)
            {
                var key = string.Join(',', c);
                if (!index.TryGetValue(key, out var k))
                {
                    index[key] = k = distinct.Count;
                    distinct.Add(EncoderSequence(c, layout.MaxLength, layout.Truncation));
                }
                allowedOf[i].Add(k);
                if (gold[i] < 0 && c.AsSpan().SequenceEqual(e.AnswerIds)) gold[i] = k;
            }
            if (gold[i] < 0) throw new ArgumentException($"example {i} of the batch: its answer is not one of its {choices.Length} choices", nameof(examples));
        }
        var (ids, mask) = Padded(examples.Select(e => EncoderSequence(e.PromptIds, layout.MaxLength, layout.Truncation)).ToArray(), layout.PadTokenId, device);
        var (cids, cmask) = Padded(distinct, layout.PadTokenId, device);
        var allowed = new bool[examples.Count * distinct.Count];
        for (var i = 0; i < examples.Count; i++)
            foreach (var k in allowedOf[i]) allowed[i * distinct.Count + k] = true;
        return new LmBatch(ids, mask, torch.tensor(gold, new long[] { examples.Count }, ScalarType.Int64, device))
        {
            Choices = new ChoiceBatch(cids, cmask, torch.tensor(allowed, new long[] { examples.Count, distinct.Count }, device: device)),
        };
    }

    // Right-padded (N, T) ids and their 1/0 mask, int64 on the device.
    private static (Tensor Ids, Tensor Mask) Padded(IReadOnlyList<int[]> rows, int pad, Device device)
    {
        int n = rows.Count, t = rows.Max(r => r.Length);
        var ids = new long[n * t];
        var mask = new long[n * t];
        Array.Fill(ids, pad);
        for (var i = 0; i < n; i++)
            for (var j = 0; j < rows[i].Length; j++) { ids[i * t + j] = rows[i][j]; mask[i * t + j] = 1; }
        return (torch.tensor(ids, new long[] { n, t }, ScalarType.Int64, device), torch.tensor(mask, new long[] { n, t }, ScalarType.Int64, device));
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
