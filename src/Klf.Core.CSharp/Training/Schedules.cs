namespace Klf.Training;

/// <summary>Learning-rate schedules as pure functions of the optimizer-step index.</summary>
public static class Schedules
{
    /// <summary>
    /// Linear warm-up then linear decay to 0, exactly Hugging Face's
    /// <c>get_linear_schedule_with_warmup</c>: the optimizer step with index <paramref name="step"/>
    /// (0-based, = steps already taken) uses lr × m, where m = step / W for step &lt; W and
    /// m = max(0, (T − step) / max(1, T − W)) afterwards (W = warm-up steps, T = total steps).
    /// Hence with W &gt; 0 the first step has m = 0, m = 1 at step W, and m reaches 0 at step T.
    /// </summary>
    public static double LinearWarmupDecay(int step, int warmupSteps, int totalSteps)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step));
        if (step < warmupSteps) return (double)step / Math.Max(1, warmupSteps);
        return Math.Max(0.0, (double)(totalSteps - step) / Math.Max(1, totalSteps - warmupSteps));
    }
}
