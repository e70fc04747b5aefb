using System.Collections.Concurrent;

namespace Klf.Fusion;

/// <summary>One numeric parameter of a fusion rule.</summary>
/// <param name="Name">Key in configs and on the command line (kebab-case, e.g. <c>previous-only</c>).</param>
/// <param name="Default">The value used when the parameter is not given (the reference value where one exists).</param>
/// <param name="Description">What it sets.</param>
public sealed record FusionRuleParameter(string Name, double Default, string Description);

/// <summary>A fusion rule known by name: how to build it from numeric parameters.</summary>
/// <param name="Name">The rule's name (the <see cref="IFusionRule.Name"/> of what <paramref name="Create"/> builds).</param>
/// <param name="Description">One line for listings.</param>
/// <param name="Parameters">The parameters it accepts, with defaults.</param>
/// <param name="Create">Builds the rule from a value for every parameter (defaults filled in); throws
/// <see cref="ArgumentException"/> for a value it refuses.</param>
/// <param name="Aliases">Other names that select it (e.g. <c>static</c>).</param>
public sealed record FusionRuleDefinition(string Name, string Description, IReadOnlyList<FusionRuleParameter> Parameters,
    Func<IReadOnlyDictionary<string, double>, IFusionRule> Create, IReadOnlyList<string>? Aliases = null);

/// <summary>
/// The registry of fusion rules: every name a config, <c>klf fuse --rule</c> or a KIF setting may
/// use is resolved here, so rule names are parsed in one place. The shipped rules are registered
/// with their reference defaults; <see cref="Register"/> adds a user's rule (e.g. from an F# script),
/// which then runs through experiments like the shipped ones. Thread-safe.
/// </summary>
public static class FusionRules
{
    private static readonly ConcurrentDictionary<string, FusionRuleDefinition> ByName = new(StringComparer.OrdinalIgnoreCase);
    private static readonly ConcurrentDictionary<string, string> AliasOf = new(StringComparer.OrdinalIgnoreCase);
    private static readonly List<string> Order = new();

    static FusionRules()
    {
        static FusionRuleParameter P(string n, double d, string s) => new(n, d, s);
        Register(new("kif-static", "KIF's static rule: λ by category (shared, previous-only, current-only, neither)",
            [P("shared", 0.3, "λ of units important to both"), P("previous-only", 0.0, "λ of units important to earlier tasks only"),
             P("current-only", 1.0, "λ of units important to the current task only"), P("neither", 0.5, "λ of units important to neither")],
            p => new KifStaticRule(p["shared"], p["previous-only"], p["current-only"], p["neither"]), ["static"]));
        Register(new("kif-adaptive", "KIF-LoRA's adaptive rule: λ = softmax of (Ŝ, Â) / τ",
            [P("tau", 0.25, "temperature τ")], p => new KifAdaptiveRule(p["tau"]), ["adaptive"]));
        Register(new("average", "plain average of the two models", [], _ => new AverageRule()));
        Register(new("task-arithmetic", "base + scale · Σ task vectors", [P("scale", 1.0, "scale of the summed task vectors")],
            p => new TaskArithmeticRule(p["scale"])));
        Register(new("ties", "TIES merging: trim, elect sign, disjoint mean",
            [P("keep", 0.2, "fraction of largest-magnitude task-vector entries kept"), P("scale", 1.0, "scale of the merged task vector")],
            p => new TiesRule(p["keep"], p["scale"])));
        Register(new("dare", "DARE: drop task-vector entries at random and rescale",
            [P("drop", 0.9, "drop rate"), P("scale", 1.0, "scale of the merged task vector")], p => new DareRule(p["drop"], p["scale"])));
        Register(new("magmax", "MagMax: per element, the task vector of largest magnitude",
            [P("scale", 1.0, "scale of the selected task vector")], p => new MagMaxRule(p["scale"])));
    }

    /// <summary>The registered rule names, shipped rules first, then in registration order.</summary>
    public static IReadOnlyList<string> Names { get { lock (Order) return Order.ToArray(); } }

    /// <summary>The definition of each registered rule, in <see cref="Names"/> order.</summary>
    public static IReadOnlyList<FusionRuleDefinition> Definitions => Names.Select(n => ByName[n]).ToArray();

    /// <summary>
    /// Adds a rule (or replaces a user rule of the same name). A name or alias that another rule
    /// already uses is an <see cref="ArgumentException"/>; so is replacing a shipped rule.
    /// </summary>
    public static void Register(FusionRuleDefinition definition)
    {
        ArgumentNullException.ThrowIfNull(definition);
        if (string.IsNullOrWhiteSpace(definition.Name)) throw new ArgumentException("a fusion rule needs a name");
        lock (Order)
        {
            if (ByName.TryGetValue(definition.Name, out var old) && Shipped(old.Name))
                throw new ArgumentException($"fusion rule \"{definition.Name}\" is shipped with Klf; register yours under another name");
            if (AliasOf.TryGetValue(definition.Name, out var owner))
                throw new ArgumentException($"\"{definition.Name}\" is already a name of fusion rule \"{owner}\"");
            foreach (var a in definition.Aliases ?? [])
                if ((ByName.ContainsKey(a) || AliasOf.ContainsKey(a)) && Resolve(a) != definition.Name)
                    throw new ArgumentException($"alias \"{a}\" is already a name of fusion rule \"{Resolve(a)}\"");
            if (!ByName.ContainsKey(definition.Name)) Order.Add(definition.Name);
            ByName[definition.Name] = definition;
            foreach (var a in definition.Aliases ?? []) AliasOf[a] = definition.Name;
        }
    }

    /// <summary>The definition a name or alias selects; an unknown name is an <see cref="ArgumentException"/> listing the known ones.</summary>
    public static FusionRuleDefinition Definition(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var key = name.Trim();
        if (AliasOf.TryGetValue(key, out var target)) key = target;
        return ByName.TryGetValue(key, out var d) ? d
            : throw new ArgumentException($"unknown fusion rule \"{name}\" (known: {string.Join(", ", Names)})");
    }

    /// <summary>
    /// Builds rule <paramref name="name"/> with the given parameters (others at their defaults). A
    /// parameter the rule does not have, or a non-finite value, is an <see cref="ArgumentException"/>
    /// naming the rule and listing its parameters.
    /// </summary>
    public static IFusionRule Create(string name, IReadOnlyDictionary<string, double>? parameters = null)
    {
        var d = Definition(name);
        var values = d.Parameters.ToDictionary(p => p.Name, p => p.Default, StringComparer.OrdinalIgnoreCase);
        foreach (var (k, v) in parameters ?? new Dictionary<string, double>())
        {
            if (!values.ContainsKey(k))
            {
                var known = d.Parameters.Count == 0 ? "it has none" : "its parameters: " + string.Join(", ", d.Parameters.Select(p => p.Name));
                throw new ArgumentException($"fusion rule \"{d.Name}\" has no parameter \"{k}\" ({known})");
            }
            if (!double.IsFinite(v)) throw new ArgumentException($"fusion rule \"{d.Name}\": {k} must be finite, got {v}");
            values[k] = v;
        }
        return d.Create(values);
    }

    private static bool Shipped(string name) =>
        name is "kif-static" or "kif-adaptive" or "average" or "task-arithmetic" or "ties" or "dare" or "magmax";

    private static string Resolve(string nameOrAlias) => AliasOf.TryGetValue(nameOrAlias, out var t) ? t : nameOrAlias;
}
