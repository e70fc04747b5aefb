namespace Klf.Adapters;

/// <summary>
/// Configuration of one LoRA adapter, with PEFT's meaning and defaults of the KIF reference runs.
/// </summary>
/// <param name="R">Rank r of the update ΔW = B·A (A: r×in, B: out×r).</param>
/// <param name="Alpha">lora_alpha; the update is scaled by Alpha / R.</param>
/// <param name="Dropout">Dropout probability applied to the adapter's input (training mode only).</param>
/// <param name="TargetModules">
/// PEFT list semantics: a Linear whose module path equals a name or ends with "." + name is
/// adapted (e.g. "q_proj", "v_proj", "self_attn.q_proj"). Ignored when <paramref name="TargetRegex"/> is set.
/// </param>
/// <param name="TargetRegex">PEFT string semantics: a Linear whose full module path fully matches this regex is adapted.</param>
/// <param name="AdapterName">Adapter name (PEFT default "default").</param>
public sealed record LoraConfig(
    int R = 8,
    double Alpha = 16,
    double Dropout = 0.05,
    string[]? TargetModules = null,
    string? TargetRegex = null,
    string AdapterName = "default")
{
    /// <summary>Alpha / R, the multiplier of B·A.</summary>
    public double Scaling => Alpha / R;

    /// <summary>The target names in effect ("q_proj","v_proj" when none are given, PEFT's default for LLaMA and T5 is q/v).</summary>
    public string[] EffectiveTargets => TargetModules is { Length: > 0 } ? TargetModules : new[] { "q_proj", "v_proj" };

    /// <summary>Whether a module path is targeted by this configuration.</summary>
    public bool Matches(string modulePath)
    {
        if (TargetRegex != null)
            return System.Text.RegularExpressions.Regex.IsMatch(modulePath, "^(?:" + TargetRegex + ")$");
        return EffectiveTargets.Any(t => modulePath == t || modulePath.EndsWith("." + t, StringComparison.Ordinal));
    }
}
