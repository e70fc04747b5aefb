namespace Klf.Importance;

/// <summary>Which Taylor term of the loss change scores an element (w: weight, g: its gradient).</summary>
public enum ImportanceOrder
{
    /// <summary>First order: s = |w·g|.</summary>
    First,
    /// <summary>
    /// Second order (the KIF-LoRA default; the reference code's <c>param_mix</c>): s = |w·g − ½(w·g)²|.
    /// </summary>
    Second,
}

/// <summary>The training-step hook the tracker listens on.</summary>
public enum ImportanceHookPoint
{
    /// <summary>
    /// After the optimizer step (the default, as the reference code): the weights are the updated
    /// ones, the gradient is the step's clipped gradient (StepRunner zeroes it only at the next step).
    /// </summary>
    AfterOptimizerStep,
    /// <summary>After clipping, before the optimizer step: the weights the gradient was computed at.</summary>
    AfterClip,
}

/// <summary>
/// Settings of <see cref="ImportanceTracker"/>. Defaults follow the KIF / TaSL reference code.
/// </summary>
/// <param name="Order">Sensitivity formula (default <see cref="ImportanceOrder.Second"/>, KIF-LoRA).</param>
/// <param name="Beta1">EMA factor of the smoothed sensitivity Ī ← β1·Ī + (1−β1)·s (0.85).</param>
/// <param name="Beta2">EMA factor of the uncertainty Ū ← β2·Ū + (1−β2)·|s − Ī| (0.85).</param>
/// <param name="SkipFirstStep">Do not count optimizer step 0 (default true, as the reference).</param>
/// <param name="SkipLastStep">Do not count the last planned step (Step = TotalSteps − 1; needs
/// TotalSteps &gt; 0 in the step context, otherwise nothing is skipped). Default false, as the
/// reference: the TaSL / KIF trainer gates on <c>0 &lt; global_step &lt; max_steps</c> before its step
/// counter moves, so with 0-based steps it skips only the very first step and counts the last one.</param>
/// <param name="HookPoint">Where <c>ImportanceTracker.Attach</c> hooks in (default after the optimizer step).</param>
public sealed record ImportanceOptions(
    ImportanceOrder Order = ImportanceOrder.Second,
    double Beta1 = 0.85,
    double Beta2 = 0.85,
    bool SkipFirstStep = true,
    bool SkipLastStep = false,
    ImportanceHookPoint HookPoint = ImportanceHookPoint.AfterOptimizerStep)
{
    /// <summary>Throws when a β is outside (0, 1).</summary>
    public void Validate()
    {
        if (!(Beta1 > 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "β1 must lie in (0, 1)");
        if (!(Beta2 > 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "β2 must lie in (0, 1)");
    }

    /// <summary>Whether optimizer step <paramref name="step"/> of <paramref name="totalSteps"/> (0: unknown) is counted.</summary>
    public bool Counts(int step, int totalSteps) =>
        !(SkipFirstStep && step == 0) && !(SkipLastStep && totalSteps > 0 && step == totalSteps - 1);
}
