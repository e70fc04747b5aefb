using System.Diagnostics;
using Klf.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Training;

/// <summary>AdamW, clipping and schedule settings (defaults: the KIF reference runs).</summary>
/// <param name="LearningRate">Peak learning rate.</param>
/// <param name="Beta1">AdamW β1.</param>
/// <param name="Beta2">AdamW β2.</param>
/// <param name="Eps">AdamW ε.</param>
/// <param name="WeightDecay">Decoupled weight decay, on the parameters <paramref name="DecayOn"/> selects.</param>
/// <param name="MaxGradNorm">Clip the total L2 norm of trainable gradients to this; ≤ 0 disables clipping (the norm is still reported).</param>
/// <param name="WarmupSteps">Linear warm-up steps (see <see cref="Schedules.LinearWarmupDecay"/>).</param>
/// <param name="TotalSteps">Steps of the schedule; 0 keeps the learning rate constant.</param>
/// <param name="Schedule">Shape of the decay after warm-up (linear to 0 by default).</param>
/// <param name="MinLearningRateRatio">Cosine schedule only: the floor, as a fraction of <paramref name="LearningRate"/>.</param>
/// <param name="DecayOn">Which parameters weight decay applies to. <see cref="WeightDecayScope.All"/> (the default) is a
/// choice of this project, which no KIF reference fixes; <see cref="WeightDecayScope.Matrices"/> is the common
/// alternative (Hugging Face's trainer, nanoGPT) that exempts norm weights and biases.</param>
/// <param name="NonFinite">What a step whose loss or gradient norm is not finite does: stop the training with a
/// <see cref="NonFiniteStepException"/> (the default), or skip the update (<see cref="NonFiniteStep.Skip"/>).</param>
public sealed record OptimizerOptions(
    double LearningRate = 3e-4,
    double Beta1 = 0.9,
    double Beta2 = 0.999,
    double Eps = 1e-8,
    double WeightDecay = 0.01,
    double MaxGradNorm = 1.0,
    int WarmupSteps = 0,
    int TotalSteps = 0,
    LearningRateSchedule Schedule = LearningRateSchedule.Linear,
    double MinLearningRateRatio = 0.0,
    WeightDecayScope DecayOn = WeightDecayScope.All,
    NonFiniteStep NonFinite = NonFiniteStep.Stop)
{
    /// <summary>Learning rate of optimizer step <paramref name="step"/> (0-based).</summary>
    public double LearningRateAt(int step) =>
        TotalSteps <= 0 ? LearningRate
        : Schedule == LearningRateSchedule.Cosine
            ? LearningRate * Schedules.WarmupCosine(step, WarmupSteps, TotalSteps, MinLearningRateRatio)
            : LearningRate * Schedules.LinearWarmupDecay(step, WarmupSteps, TotalSteps);
}

/// <summary>What a training step does when its loss or gradient norm is NaN or infinite.</summary>
public enum NonFiniteStep
{
    /// <summary>Throw <see cref="NonFiniteStepException"/> before the optimizer or any after-clip hook sees the step (the default).</summary>
    Stop,
    /// <summary>Drop the step's gradients and leave the parameters and optimizer state as they were; the
    /// schedule still advances and <see cref="StepMetrics.Skipped"/> is true.</summary>
    Skip,
}

/// <summary>
/// A training step produced a NaN or infinite loss or gradient norm (<see cref="NonFiniteStep.Stop"/>).
/// Thrown before the optimizer step, so the parameters and optimizer state are those of the last good step.
/// </summary>
public sealed class NonFiniteStepException(int step, string what)
    : InvalidOperationException($"training step {step + 1}: {what}; the parameters were not updated")
{
    /// <summary>The 0-based index of the step.</summary>
    public int Step { get; } = step;
}

/// <summary>Which trainable parameters AdamW's weight decay applies to.</summary>
public enum WeightDecayScope
{
    /// <summary>Every trainable parameter (this project's default; a project choice, not a reference value).</summary>
    All,
    /// <summary>Parameters with two or more dimensions only: norm weights and biases (the 1-D tensors) are not decayed.</summary>
    Matrices,
}

/// <summary>How the learning rate falls after the warm-up (see <see cref="Schedules"/>).</summary>
public enum LearningRateSchedule
{
    /// <summary>Linear decay to 0 (<see cref="Schedules.LinearWarmupDecay"/>), the fine-tuning default.</summary>
    Linear,
    /// <summary>Half-cosine decay to <see cref="OptimizerOptions.MinLearningRateRatio"/> (<see cref="Schedules.WarmupCosine"/>), for pre-training.</summary>
    Cosine,
}

/// <summary>
/// What a step hook sees. <see cref="Trainable"/> are the live parameters (owned by the model;
/// do not dispose); their <c>grad()</c> holds the step's gradient (accumulated over micro-batches).
/// </summary>
/// <param name="Step">Index of this optimizer step (0-based).</param>
/// <param name="TotalSteps">Planned steps (0 if unknown).</param>
/// <param name="Loss">Token-weighted data loss of the step (without extra losses).</param>
/// <param name="ExtraLoss">Sum of the extra-loss terms (0 when none).</param>
/// <param name="LearningRate">Learning rate used by this step.</param>
/// <param name="GradNorm">Total L2 gradient norm before clipping; NaN in AfterBackward (not yet computed).</param>
/// <param name="Trainable">Trainable parameters with their model names.</param>
public sealed record StepContext(int Step, int TotalSteps, double Loss, double ExtraLoss, double LearningRate, double GradNorm,
    IReadOnlyList<(string Name, Parameter Parameter)> Trainable);

/// <summary>
/// Hooks of one optimizer step, run in this order inside the step's dispose scope (tensors a hook
/// creates are freed at the end of the step unless it detaches them):
/// extra losses (after the micro-batch backward passes) → <see cref="AfterBackward"/> (raw
/// accumulated gradients) → clipping → <see cref="AfterClip"/> (clipped gradients: what KIF
/// importance uses) → optimizer step → <see cref="AfterOptimizerStep"/> (updated weights; the
/// gradients are still those of this step, clipped; they are zeroed at the start of the next step).
/// </summary>
public sealed class StepHooks
{
    /// <summary>Each returns a scalar tensor added to the loss once per optimizer step (e.g. an orthogonality penalty); it is backpropagated and then freed by the step scope.</summary>
    public List<Func<StepContext, Tensor>> ExtraLosses { get; } = new();

    /// <summary>After all backward passes, before clipping.</summary>
    public List<Action<StepContext>> AfterBackward { get; } = new();

    /// <summary>After clipping, before the optimizer step.</summary>
    public List<Action<StepContext>> AfterClip { get; } = new();

    /// <summary>After the optimizer step.</summary>
    public List<Action<StepContext>> AfterOptimizerStep { get; } = new();
}

/// <summary>Plain metrics of one optimizer step.</summary>
/// <param name="Step">Optimizer step index (0-based).</param>
/// <param name="Loss">Token-weighted data loss.</param>
/// <param name="ExtraLoss">Sum of extra-loss terms.</param>
/// <param name="LearningRate">Learning rate used.</param>
/// <param name="GradNorm">Total gradient norm before clipping.</param>
/// <param name="Tokens">Label tokens (labels ≠ -100) in the step.</param>
/// <param name="Elapsed">Wall time of the step.</param>
/// <param name="ProcessedTokens">
/// Real (non-padding) tokens the model processed in the step: the attention-mask total, plus the
/// decoder's label positions for encoder-decoder models and the choices' tokens for encoder-only ones.
/// The basis of throughput figures.
/// </param>
public sealed record StepMetrics(int Step, double Loss, double ExtraLoss, double LearningRate, double GradNorm, long Tokens, TimeSpan Elapsed, long ProcessedTokens = 0)
{
    /// <summary>True when the step's loss or gradient norm was not finite and <see cref="NonFiniteStep.Skip"/> dropped its update.</summary>
    public bool Skipped { get; init; }
}

/// <summary>
/// Runs optimizer steps on a model: AdamW over the parameters that require grad at construction,
/// gradient accumulation, clipping, schedule and hooks, one <c>torch.NewDisposeScope()</c> per step.
/// Owns the optimizer (and its state tensors): dispose it when training ends.
/// </summary>
/// <remarks>
/// Accumulation rule: the micro-batch losses (each a mean over its label tokens) are weighted by
/// their label-token counts, loss = Σ_i loss_i · n_i / N with N = Σ_i n_i, and each term is
/// backpropagated separately. The gradient is therefore that of the mean over all N label tokens,
/// i.e. equal to one big batch's gradient (up to float rounding) whatever the token counts — with
/// equal counts this is the plain average of the micro-batch losses.
/// Trainable parameters are fixed at construction: build a new runner after changing requires_grad.
/// </remarks>
public sealed class StepRunner : IDisposable
{
    private readonly ILanguageModel _model;
    private readonly AdamW _optimizer;
    private readonly (string Name, Parameter Parameter)[] _trainable;
    private int _step;

    /// <summary>Creates the AdamW optimizer over the model's trainable parameters.</summary>
    public StepRunner(ILanguageModel model, OptimizerOptions options)
    {
        _model = model;
        Options = options;
        // Adapters follow a moved model before the optimizer sees their parameters.
        foreach (var m in model.Module.modules())
            if (m is IFollowsBaseWeight follower) follower.SyncToBase();
        _trainable = model.Module.named_parameters().Where(p => p.parameter.requires_grad).ToArray();
        if (_trainable.Length == 0) throw new InvalidOperationException("the model has no trainable parameters");
        var decayed = _trainable.Where(p => options.DecayOn == WeightDecayScope.All || p.Parameter.dim() >= 2).Select(p => p.Parameter).ToArray();
        var exempt = _trainable.Where(p => options.DecayOn != WeightDecayScope.All && p.Parameter.dim() < 2).Select(p => p.Parameter).ToArray();
        var groups = new List<AdamW.ParamGroup>();
        if (decayed.Length > 0) groups.Add(new AdamW.ParamGroup(decayed, options.LearningRate, options.Beta1, options.Beta2, options.Eps, options.WeightDecay, false, false));
        if (exempt.Length > 0) groups.Add(new AdamW.ParamGroup(exempt, options.LearningRate, options.Beta1, options.Beta2, options.Eps, 0.0, false, false));
        _optimizer = torch.optim.AdamW(groups, options.LearningRate, options.Beta1, options.Beta2, options.Eps, options.WeightDecay, false, false);
    }

    /// <summary>The settings in use.</summary>
    public OptimizerOptions Options { get; }

    /// <summary>Number of optimizer steps taken.</summary>
    public int StepsTaken => _step;

    /// <summary>The parameters the optimizer updates, with their model names (owned by the model).</summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> Trainable => _trainable;

    /// <summary>
    /// One optimizer step over <paramref name="microBatches"/> (on the model's device; the caller
    /// keeps ownership). Puts the model in training mode. With <paramref name="advanceSchedule"/> false
    /// the step uses the current learning rate and leaves the step counter (and so the schedule and
    /// <see cref="StepContext.Step"/>) where it is: interleaved steps on a second stream (Recurrent-KIF's
    /// memory steps) are extra optimizer steps that the schedule does not count.
    /// </summary>
    public StepMetrics Step(IReadOnlyList<LmBatch> microBatches, StepHooks? hooks = null, bool advanceSchedule = true)
    {
        if (microBatches.Count == 0) throw new ArgumentException("no micro-batches", nameof(microBatches));
        var clock = Stopwatch.StartNew();
        using var scope = torch.NewDisposeScope();
        _optimizer.zero_grad();
        _model.Module.train();
        var counts = microBatches.Select(b => b.LabelTokenCount).ToArray();
        var total = counts.Sum();
        var processed = microBatches.Sum(b => b.AttentionMask.sum().ToInt64() + (b.Choices?.Mask.sum().ToInt64() ?? 0))
            + (_model.Family == ModelFamily.EncoderDecoder ? total : 0);
        if (total == 0) throw new InvalidOperationException("the step's batches carry no label tokens");
        var lr = Options.LearningRateAt(_step);
        double loss = 0;
        for (var i = 0; i < microBatches.Count; i++)
        {
            if (counts[i] == 0) continue;
            var weight = (double)counts[i] / total;
            var l = _model.ComputeLoss(microBatches[i]);
            var scaled = l.mul(weight);
            scaled.backward();
            loss += l.ToDouble() * weight;
        }
        var ctx = new StepContext(_step, Options.TotalSteps, loss, 0.0, lr, double.NaN, _trainable);
        double extra = 0;
        if (hooks != null)
            foreach (var f in hooks.ExtraLosses)
            {
                var e = f(ctx);
                e.backward();
                extra += e.ToDouble();
            }
        ctx = ctx with { ExtraLoss = extra };
        if (hooks != null) foreach (var h in hooks.AfterBackward) h(ctx);
        var norm = torch.nn.utils.clip_grad_norm_(_trainable.Select(p => p.Parameter),
            Options.MaxGradNorm > 0 ? Options.MaxGradNorm : double.PositiveInfinity);
        ctx = ctx with { GradNorm = norm };
        // Checked before any after-clip hook (importance) or the optimizer reads the gradients, so a
        // non-finite step changes nothing that outlives it.
        if (!double.IsFinite(loss) || !double.IsFinite(extra) || !double.IsFinite(norm))
        {
            var what = !double.IsFinite(loss) ? $"the loss is {loss}" : !double.IsFinite(extra) ? $"the extra loss is {extra}" : $"the gradient norm is {norm}";
            if (Options.NonFinite == NonFiniteStep.Stop) throw new NonFiniteStepException(_step, what);
            _optimizer.zero_grad();
            var skipped = new StepMetrics(ctx.Step, loss, extra, lr, norm, total, clock.Elapsed, processed) { Skipped = true };
            if (advanceSchedule) _step++;
            return skipped;
        }
        if (hooks != null) foreach (var h in hooks.AfterClip) h(ctx);
        foreach (var g in _optimizer.ParamGroups) g.LearningRate = lr;
        _optimizer.step();
        if (hooks != null) foreach (var h in hooks.AfterOptimizerStep) h(ctx);
        if (advanceSchedule) _step++;
        return new StepMetrics(ctx.Step, loss, extra, lr, norm, total, clock.Elapsed, processed);
    }

    /// <summary>Disposes the optimizer and its state.</summary>
    public void Dispose() => _optimizer.Dispose();
}
