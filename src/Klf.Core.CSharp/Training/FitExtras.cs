namespace Klf.Training;

/// <summary>
/// Best-validation checkpointing for one <see cref="Trainer.Run"/>: the validation loss is measured
/// every <paramref name="EvalEvery"/> optimizer steps and after the last one; with
/// <paramref name="KeepBest"/> the trainable weights of the lowest loss are kept in memory and written
/// back into the model when training ends (the KIF reference loads its best checkpoint before
/// identification and fusion). Deterministic: evaluation uses no randomness and leaves the
/// training's random streams untouched.
/// </summary>
/// <param name="Examples">Held-out examples of the current task (owned by the caller).</param>
/// <param name="EvalEvery">Optimizer steps between evaluations (≥ 1); the last step is always evaluated.</param>
/// <param name="KeepBest">Restore the best weights at the end (false: only measure).</param>
/// <param name="BatchSize">Examples per evaluation batch.</param>
public sealed record ValidationSet(IReadOnlyList<LmExample> Examples, int EvalEvery = 10, bool KeepBest = true, int BatchSize = 16)
{
    /// <summary>Throws <see cref="ArgumentException"/> for an empty set or an interval below 1.</summary>
    public void Validate()
    {
        if (Examples is null || Examples.Count == 0) throw new ArgumentException("best-validation needs validation examples, and the set is empty");
        if (EvalEvery < 1) throw new ArgumentException($"the validation interval must be at least 1 step, got {EvalEvery}");
        if (BatchSize < 1) throw new ArgumentException($"the validation batch size must be at least 1, got {BatchSize}");
    }
}

/// <summary>
/// A second stream of training steps interleaved with the main one (Recurrent-KIF's outer steps):
/// after every <paramref name="Every"/> main optimizer steps, <paramref name="Before"/> runs, then
/// <paramref name="Steps"/> optimizer steps on batches drawn from <paramref name="Examples"/> (each a
/// fresh seeded draw of distinct examples, as a freshly shuffled loader gives), then <paramref name="After"/>.
/// The extra steps use the same optimizer at the current learning rate and do not advance the
/// schedule; main steps after the last multiple of <paramref name="Every"/> get no interleaved steps.
/// </summary>
/// <param name="Examples">The stream's examples (e.g. the replay memory); owned by the caller.</param>
/// <param name="Every">Main steps per round (Q ≥ 1).</param>
/// <param name="Steps">Interleaved steps per round (M ≥ 1).</param>
/// <param name="Hooks">Hooks of the interleaved steps (the main steps have their own).</param>
/// <param name="Before">Called before a round's interleaved steps (after its main steps).</param>
/// <param name="After">Called after a round's interleaved steps (Recurrent-KIF merges here).</param>
/// <param name="BatchSize">Examples per interleaved batch (0: the main batch size).</param>
/// <param name="Seed">Seed of the batch draws.</param>
public sealed record InterleavedSteps(IReadOnlyList<LmExample> Examples, int Every, int Steps, StepHooks? Hooks = null,
    Action? Before = null, Action? After = null, int BatchSize = 0, int Seed = 0)
{
    /// <summary>Throws <see cref="ArgumentException"/> for an empty stream or a count below 1.</summary>
    public void Validate()
    {
        if (Examples is null || Examples.Count == 0) throw new ArgumentException("interleaved steps need examples, and the stream is empty");
        if (Every < 1) throw new ArgumentException($"interleaved steps: main steps per round must be at least 1, got {Every}");
        if (Steps < 1) throw new ArgumentException($"interleaved steps: steps per round must be at least 1, got {Steps}");
        if (BatchSize < 0) throw new ArgumentException($"interleaved steps: batch size must be at least 0, got {BatchSize}");
    }
}

/// <summary>Optional parts of a <see cref="Trainer.Run"/>; every one may be null.</summary>
/// <param name="Hooks">Hooks of the main steps (e.g. KIF importance tracking).</param>
/// <param name="OnStep">Sees each main step's metrics as it is produced.</param>
/// <param name="Validation">Best-validation checkpointing.</param>
/// <param name="Interleave">A second, interleaved stream of steps.</param>
public sealed record FitExtras(StepHooks? Hooks = null, Action<StepMetrics>? OnStep = null, ValidationSet? Validation = null,
    InterleavedSteps? Interleave = null);

/// <summary>One validation measurement.</summary>
/// <param name="Step">Main optimizer steps completed when it was measured (1-based: after step <c>Step</c>).</param>
/// <param name="Loss">Mean cross-entropy over the validation examples' answer tokens.</param>
public sealed record ValidationPoint(int Step, double Loss);

/// <summary>What <see cref="Trainer.Run"/> did (plain data).</summary>
/// <param name="Steps">Metrics of each main optimizer step.</param>
/// <param name="InterleavedSteps">Optimizer steps taken on the interleaved stream.</param>
/// <param name="Validation">Every validation measurement, in order (empty without validation).</param>
/// <param name="Kept">The measurement whose weights the model holds at the end: the best one with
/// <see cref="ValidationSet.KeepBest"/>, else the last; null without validation.</param>
public sealed record FitResult(IReadOnlyList<StepMetrics> Steps, int InterleavedSteps, IReadOnlyList<ValidationPoint> Validation, ValidationPoint? Kept);
