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

    /// <summary>
    /// Linear warm-up then cosine decay to a floor, as Hugging Face's
    /// <c>get_cosine_with_min_lr_schedule_with_warmup</c> (one half cosine): m = step / W for
    /// step &lt; W; afterwards, with p = min(1, (step − W) / max(1, T − W)),
    /// m = r + (1 − r) · ½ (1 + cos(π p)), where r = <paramref name="minRatio"/> ∈ [0, 1]. Hence m = 1
    /// at step W and m = r from step T on.
    /// </summary>
    public static double WarmupCosine(int step, int warmupSteps, int totalSteps, double minRatio)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step));
        if (minRatio is < 0 or > 1 || double.IsNaN(minRatio)) throw new ArgumentOutOfRangeException(nameof(minRatio), minRatio, "must lie in [0, 1]");
        if (step < warmupSteps) return (double)step / Math.Max(1, warmupSteps);
        var progress = Math.Min(1.0, (double)(step - warmupSteps) / Math.Max(1, totalSteps - warmupSteps));
        return minRatio + (1 - minRatio) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
