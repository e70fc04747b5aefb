using System.Text.RegularExpressions;

namespace Klf.Adapters;

/// <summary>
/// Configuration of one LoRA adapter, with PEFT's meaning of each field (<c>adapter_config.json</c>;
/// read and checked by <see cref="PeftAdapterConfig"/>).
/// </summary>
/// <param name="R">Rank r of the update ΔW = B·A (A: r×in, B: out×r); <paramref name="RankPattern"/> overrides it per module.</param>
/// <param name="Alpha">lora_alpha; the update is scaled by Alpha / R (Alpha / √R with <paramref name="UseRsLora"/>); <paramref name="AlphaPattern"/> overrides it per module.</param>
/// <param name="Dropout">Dropout probability applied to the adapter's input (training mode only).</param>
/// <param name="TargetModules">
/// PEFT list semantics: a Linear whose module path equals a name or ends with "." + name is
/// adapted (e.g. "q_proj", "v_proj", "self_attn.q_proj"). Ignored when <paramref name="TargetRegex"/> is set.
/// </param>
/// <param name="TargetRegex">PEFT string semantics: a Linear whose full module path fully matches this regex is adapted.</param>
/// <param name="AdapterName">Adapter name (PEFT default "default").</param>
/// <param name="UseRsLora">PEFT <c>use_rslora</c>: rank-stabilised scaling Alpha / √r instead of Alpha / r.</param>
/// <param name="RankPattern">PEFT <c>rank_pattern</c>: regex → rank; the first key (in order) with <c>(.*\.)?(key)$</c> matching a module path sets its rank.</param>
/// <param name="AlphaPattern">PEFT <c>alpha_pattern</c>: regex → alpha, matched as <paramref name="RankPattern"/>.</param>
/// <param name="ExcludeModules">PEFT <c>exclude_modules</c> as a list: modules named so (equal or ending with "." + name) are not adapted.</param>
/// <param name="ExcludeRegex">PEFT <c>exclude_modules</c> as a string: modules whose path fully matches it are not adapted.</param>
/// <param name="LayersToTransform">PEFT <c>layers_to_transform</c>: only modules in these layer indices are adapted (needs list targets).</param>
/// <param name="LayersPattern">PEFT <c>layers_pattern</c>: the name(s) of the layer list before the index (e.g. "layers", "h"); none: any segment.</param>
public sealed record LoraConfig(
    int R = 8,
    double Alpha = 16,
    double Dropout = 0.05,
    string[]? TargetModules = null,
    string? TargetRegex = null,
    string AdapterName = "default",
    bool UseRsLora = false,
    IReadOnlyList<KeyValuePair<string, int>>? RankPattern = null,
    IReadOnlyList<KeyValuePair<string, double>>? AlphaPattern = null,
    string[]? ExcludeModules = null,
    string? ExcludeRegex = null,
    int[]? LayersToTransform = null,
    string[]? LayersPattern = null)
{
    /// <summary>The project's LoRA convention, written once: α = 2r, dropout 0.05 (KIF-LoRA's α = 16 at r = 8), on <paramref name="targets"/> (q and v when none).</summary>
    public static LoraConfig ForRank(int r, string[]? targets = null, string adapterName = "default") =>
        new(R: r, Alpha: 2.0 * r, Dropout: 0.05, TargetModules: targets is { Length: > 0 } ? targets : null, AdapterName: adapterName);

    /// <summary>
    /// The attention query and value projections of a family, PEFT's default LoRA targets for it:
    /// <c>q_proj</c>, <c>v_proj</c> (LLaMA), <c>q</c>, <c>v</c> (T5), <c>query</c>, <c>value</c> (BERT).
    /// </summary>
    public static string[] DefaultTargets(Klf.Models.ModelFamily family) => family switch
    {
        Klf.Models.ModelFamily.DecoderOnly => ["q_proj", "v_proj"],
        Klf.Models.ModelFamily.EncoderOnly => ["query", "value"],
        _ => ["q", "v"],
    };

    /// <summary>The multiplier of B·A for a module of rank <see cref="R"/> and alpha <see cref="Alpha"/>: Alpha / R, or Alpha / √R with rsLoRA.</summary>
    public double Scaling => ScalingOf(R, Alpha, UseRsLora);

    /// <summary>Alpha / r, or Alpha / √r when <paramref name="rsLora"/> (PEFT's <c>use_rslora</c>).</summary>
    public static double ScalingOf(int r, double alpha, bool rsLora) => rsLora ? alpha / Math.Sqrt(r) : alpha / r;

    /// <summary>The target names in effect ("q_proj","v_proj" when none are given, PEFT's default for LLaMA and T5 is q/v).</summary>
    public string[] EffectiveTargets => TargetModules is { Length: > 0 } ? TargetModules : new[] { "q_proj", "v_proj" };

    /// <summary>The rank of the module at <paramref name="modulePath"/>: its <see cref="RankPattern"/> entry, else <see cref="R"/>.</summary>
    public int RankFor(string modulePath) => PatternValue(RankPattern, modulePath, R);

    /// <summary>The alpha of the module at <paramref name="modulePath"/>: its <see cref="AlphaPattern"/> entry, else <see cref="Alpha"/>.</summary>
    public double AlphaFor(string modulePath) => PatternValue(AlphaPattern, modulePath, Alpha);

    /// <summary>The scaling of the module at <paramref name="modulePath"/> (its rank and alpha, rsLoRA or not).</summary>
    public double ScalingFor(string modulePath) => ScalingOf(RankFor(modulePath), AlphaFor(modulePath), UseRsLora);

    /// <summary>Whether a module path is adapted: targeted, not excluded, and in a transformed layer when <see cref="LayersToTransform"/> is set.</summary>
    public bool Matches(string modulePath)
    {
        var targeted = TargetRegex != null
            ? Regex.IsMatch(modulePath, "^(?:" + TargetRegex + ")$")
            : EffectiveTargets.Any(t => NamedBy(modulePath, t));
        if (!targeted) return false;
        if (ExcludeRegex != null && Regex.IsMatch(modulePath, "^(?:" + ExcludeRegex + ")$")) return false;
        if (ExcludeModules != null && ExcludeModules.Any(e => NamedBy(modulePath, e))) return false;
        if (LayersToTransform is { } layers)
        {
            var index = LayerIndex(modulePath, LayersPattern);
            if (index is null || !layers.Contains(index.Value)) return false;
        }
        return true;
    }

    /// <summary>
    /// The layer index of a module path as PEFT finds it: the number after the last
    /// <c>.&lt;segment&gt;.</c> (greedy, so for <c>encoder.block.0.layer.1.SelfAttention.q</c> it is 1),
    /// or after <c>.&lt;pattern&gt;.</c> for one of <paramref name="patterns"/>; null when there is none.
    /// </summary>
    public static int? LayerIndex(string modulePath, string[]? patterns)
    {
        var regexes = patterns is { Length: > 0 }
            ? patterns.Select(p => @"^.*\." + Regex.Escape(p) + @"\.(\d+)\.")
            : new[] { @"^.*\.[^.]*\.(\d+)\." };
        foreach (var rx in regexes)
        {
            var m = Regex.Match(modulePath, rx);
            if (m.Success) return int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        }
        return null;
    }

    private static bool NamedBy(string path, string name) => path == name || path.EndsWith("." + name, StringComparison.Ordinal);

    private static T PatternValue<T>(IReadOnlyList<KeyValuePair<string, T>>? pattern, string modulePath, T fallback)
    {
        if (pattern is null) return fallback;
        foreach (var (key, value) in pattern)
            if (Regex.IsMatch(modulePath, @"^(.*\.)?(" + key + ")$")) return value;
        return fallback;
    }
}
