using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training;

/// <summary>Settings of <see cref="Trainer.Fit"/>.</summary>
/// <param name="BatchSize">Examples per micro-batch.</param>
/// <param name="AccumulationSteps">Micro-batches per optimizer step.</param>
/// <param name="Epochs">Passes over the data (ignored when <paramref name="MaxSteps"/> &gt; 0).</param>
/// <param name="MaxSteps">Exact number of optimizer steps (cycling over epochs as needed); 0 = use epochs.</param>
/// <param name="Seed">Seeds torch (dropout, …) and the batch plan (epoch e uses Seed + e).</param>
/// <param name="PoolBatches">Batches per length-bucketing pool.</param>
/// <param name="Optimizer">AdamW / clipping / warm-up settings; TotalSteps is filled in by Fit.</param>
/// <param name="MaxLength">See <see cref="BatchLayout.MaxLength"/>.</param>
/// <param name="MaxTargetLength">See <see cref="BatchLayout.MaxTargetLength"/>.</param>
/// <param name="Truncation">See <see cref="BatchLayout.Truncation"/>; evaluation cuts prompts the same way.</param>
public sealed record TrainerOptions(
    int BatchSize = 8,
    int AccumulationSteps = 1,
    int Epochs = 1,
    int MaxSteps = 0,
    int Seed = 42,
    int PoolBatches = 50,
    OptimizerOptions? Optimizer = null,
    int MaxLength = 512,
    int MaxTargetLength = 128,
    PromptTruncation Truncation = PromptTruncation.DropMiddle)
{
    /// <summary>A copy with another seed (for languages without C#'s <c>with</c>, e.g. one seed per task).</summary>
    public TrainerOptions WithSeed(int seed) => this with { Seed = seed };

    /// <summary>A copy with another step budget (for languages without C#'s <c>with</c>).</summary>
    public TrainerOptions WithMaxSteps(int maxSteps) => this with { MaxSteps = maxSteps };
}

/// <summary>The default training loop and evaluation loss.</summary>
public static class Trainer
{
    /// <summary>Device of the model's first parameter (CPU for a parameterless module).</summary>
    public static Device DeviceOf(ILanguageModel model) =>
        model.Module.parameters().FirstOrDefault()?.device ?? CPU;

    /// <summary>Seeds torch's CPU generator and, when CUDA is present, every CUDA generator.</summary>
    public static void Seed(long seed)
    {
        torch.manual_seed(seed);
        if (torch.cuda.is_available()) torch.cuda.manual_seed_all(seed);
    }

    /// <summary>Number of optimizer steps <see cref="Fit"/> will take for <paramref name="exampleCount"/> examples.</summary>
    public static int PlannedSteps(int exampleCount, TrainerOptions o)
    {
        if (o.MaxSteps > 0) return o.MaxSteps;
        var batches = (exampleCount + o.BatchSize - 1) / o.BatchSize;
        return o.Epochs * ((batches + o.AccumulationSteps - 1) / o.AccumulationSteps);
    }

    /// <summary>
    /// Trains <paramref name="model"/> on <paramref name="train"/>: seeds torch with
    /// <see cref="TrainerOptions.Seed"/>, plans length-bucketed batches per epoch, groups
    /// <see cref="TrainerOptions.AccumulationSteps"/> micro-batches per optimizer step (an epoch's
    /// last step may have fewer) and runs a <see cref="StepRunner"/>. Batches are built on the
    /// model's device and disposed after their step. Returns one metrics record per step;
    /// <paramref name="onStep"/> sees each as it is produced. (<see cref="Run"/> adds best-validation
    /// checkpoints and interleaved steps.)
    /// </summary>
    public static IReadOnlyList<StepMetrics> Fit(ILanguageModel model, IReadOnlyList<LmExample> train, TrainerOptions options,
        StepHooks? hooks = null, Action<StepMetrics>? onStep = null) =>
        Run(model, train, options, new FitExtras(hooks, onStep)).Steps;

    /// <summary>
    /// <see cref="Fit"/> with its optional parts (<see cref="FitExtras"/>): hooks, a step callback,
    /// best-validation checkpointing (the model ends with the weights of the lowest validation loss)
    /// and a second stream of interleaved steps. The validation loss is measured after every
    /// <see cref="ValidationSet.EvalEvery"/> main steps and after the last; with interleaved steps, only
    /// at the end of a round (after its <see cref="InterleavedSteps.After"/>) or after the last step,
    /// so that a kept state is always a merged one. The best weights are a detached copy of the
    /// trainable parameters, owned and freed here.
    /// </summary>
    public static FitResult Run(ILanguageModel model, IReadOnlyList<LmExample> train, TrainerOptions options, FitExtras? extras = null)
    {
        if (train.Count == 0) throw new ArgumentException("no training examples", nameof(train));
        extras ??= new FitExtras();
        extras.Validation?.Validate();
        extras.Interleave?.Validate();
        var total = PlannedSteps(train.Count, options);
        var opt = (options.Optimizer ?? new OptimizerOptions()) with { TotalSteps = total };
        var layout = BatchLayout.For(model, options.MaxLength, options.MaxTargetLength, options.Truncation);
        var device = DeviceOf(model);
        var lengths = train.Select(e => Batching.Length(e, layout)).ToArray();
        Seed(options.Seed);
        using var runner = new StepRunner(model, opt);
        using var keeper = extras.Validation is { } v ? new BestWeights(model, v, options) : null;
        var interleave = extras.Interleave;
        var draws = interleave is null ? null : new Random(interleave.Seed);
        var interleaved = 0;
        var metrics = new List<StepMetrics>(total);
        for (var epoch = 0; metrics.Count < total; epoch++)
        {
            var plan = Batching.PlanBuckets(lengths, options.BatchSize, options.Seed + epoch, options.PoolBatches);
            for (var s = 0; s < plan.Length && metrics.Count < total; s += options.AccumulationSteps)
            {
                var group = plan.Skip(s).Take(options.AccumulationSteps).ToArray();
                var m = Step(runner, group.Select(g => g.Select(i => train[i]).ToArray()), layout, device, extras.Hooks, true);
                metrics.Add(m);
                extras.OnStep?.Invoke(m);
                var done = metrics.Count;
                var roundEnd = interleave is not null && done % interleave.Every == 0;
                if (roundEnd)
                {
                    interleave!.Before?.Invoke();
                    var size = Math.Min(interleave.BatchSize > 0 ? interleave.BatchSize : options.BatchSize, interleave.Examples.Count);
                    for (var k = 0; k < interleave.Steps; k++)
                    {
                        var batch = Draw(draws!, interleave.Examples.Count, size).Select(i => interleave.Examples[i]).ToArray();
                        Step(runner, [batch], layout, device, interleave.Hooks, false);
                        interleaved++;
                    }
                    interleave.After?.Invoke();
                }
                if (interleave is null || roundEnd || done == total) keeper?.Measure(done, done == total);
            }
        }
        var kept = keeper?.Finish();
        return new FitResult(metrics, interleaved, keeper?.Points ?? [], kept);
    }

    // One optimizer step over micro-batches built from example groups; the batches are freed after it.
    private static StepMetrics Step(StepRunner runner, IEnumerable<LmExample[]> groups, BatchLayout layout, Device device,
        StepHooks? hooks, bool advanceSchedule)
    {
        var batches = new List<LmBatch>();
        try
        {
            foreach (var g in groups) batches.Add(Batching.Build(g, layout, device));
            return runner.Step(batches, hooks, advanceSchedule);
        }
        finally
        {
            foreach (var b in batches) b.Dispose();
        }
    }

    // `size` distinct indices of 0..count-1, uniformly at random (a partial Fisher–Yates shuffle).
    private static int[] Draw(Random rng, int count, int size)
    {
        var idx = Enumerable.Range(0, count).ToArray();
        for (var i = 0; i < size; i++)
        {
            var j = rng.Next(i, count);
            (idx[i], idx[j]) = (idx[j], idx[i]);
        }
        return idx[..size];
    }

    /// <summary>
    /// Mean cross-entropy over all label tokens of <paramref name="examples"/> (token-weighted over
    /// batches), under no_grad and in eval mode; the previous training mode is restored. Batches are
    /// formed in length order (deterministic, little padding).
    /// </summary>
    public static double EvaluateLoss(ILanguageModel model, IReadOnlyList<LmExample> examples, int batchSize = 16,
        int maxLength = 512, int maxTargetLength = 128, PromptTruncation truncation = PromptTruncation.DropMiddle)
    {
        if (examples.Count == 0) throw new ArgumentException("no examples", nameof(examples));
        var layout = BatchLayout.For(model, maxLength, maxTargetLength, truncation);
        var device = DeviceOf(model);
        var order = Enumerable.Range(0, examples.Count).OrderBy(i => Batching.Length(examples[i], layout)).ToArray();
        var wasTraining = model.Module.training;
        model.Module.eval();
        double sum = 0;
        long tokens = 0;
        try
        {
            using var _ = torch.no_grad();
            for (var s = 0; s < order.Length; s += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                using var batch = Batching.Build(order.Skip(s).Take(batchSize).Select(i => examples[i]).ToArray(), layout, device);
                var n = batch.LabelTokenCount;
                if (n == 0) continue;
                sum += model.ComputeLoss(batch).ToDouble() * n;
                tokens += n;
            }
        }
        finally
        {
            model.Module.train(wasTraining);
        }
        return tokens == 0 ? double.NaN : sum / tokens;
    }
}
