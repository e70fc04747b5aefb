using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using Klf.Formats;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Adapters;

/// <summary>
/// Entry point of LoRA: adapts the Linear layers of any module tree in place.
/// </summary>
/// <remarks>
/// Name mapping (module path <c>P</c>, e.g. <c>model.layers.0.self_attn.q_proj</c>, adapter <c>N</c>):
/// <list type="table">
/// <item><term>base weight</term><description>in memory <c>P.weight</c> (unchanged HF key; PEFT: <c>P.base_layer.weight</c>)</description></item>
/// <item><term>A (r, in)</term><description>in memory <c>P.lora_A.N.weight</c> (as PEFT); file <c>base_model.model.P.lora_A.weight</c></description></item>
/// <item><term>B (out, r)</term><description>in memory <c>P.lora_B.N.weight</c> (as PEFT); file <c>base_model.model.P.lora_B.weight</c></description></item>
/// </list>
/// The file names are exactly PEFT's <c>adapter_model.safetensors</c> keys (adapter name stripped,
/// <c>base_model.model.</c> prefixed), so files load in PEFT and PEFT files load here, provided the
/// module paths are HF's (our models name fields as HF does).
/// </remarks>
public static class Lora
{
    private static readonly ConditionalWeakTable<Linear, LoraLinear> Wrapped = new();
    private static readonly ConditionalWeakTable<nn.Module, LoraModel> Handles = new();

    /// <summary>Prefix PEFT puts before module paths in adapter files.</summary>
    public const string PeftFilePrefix = "base_model.model.";

    /// <summary>
    /// Adds adapter <see cref="LoraConfig.AdapterName"/> to every Linear of <paramref name="root"/>
    /// matched by <paramref name="config"/> (a Linear already wrapped gets one more adapter), then
    /// freezes every parameter of <paramref name="root"/> that is not a LoRA matrix (requires_grad=false).
    /// The new adapter is active and trainable; other adapters keep their state.
    /// Returns the model's LoRA handle (one per root; repeated calls return the same handle).
    /// Throws when nothing matches or when the adapter name is taken.
    /// </summary>
    public static LoraModel Apply(nn.Module root, LoraConfig config)
    {
        var targets = root.named_modules()
            .Where(m => m.module is Linear && !IsLoraPath(m.name) && config.Matches(m.name))
            .Select(m => (m.name, (Linear)m.module))
            .ToList();
        if (targets.Count == 0)
        {
            var linears = root.named_modules().Where(m => m.module is Linear && !IsLoraPath(m.name)).Select(m => m.name).Take(20);
            throw new InvalidOperationException(
                $"LoRA targets [{string.Join(", ", config.TargetRegex is null ? config.EffectiveTargets : new[] { config.TargetRegex })}] match no Linear module. Linear modules: {string.Join(", ", linears)}");
        }
        var handle = Handles.GetValue(root, r => new LoraModel(r));
        if (handle.Configs.ContainsKey(config.AdapterName))
            throw new InvalidOperationException($"adapter '{config.AdapterName}' already exists on this model");
        foreach (var (path, linear) in targets)
        {
            var wrapper = Wrapped.GetValue(linear, l => new LoraLinear(path, l));
            if (wrapper.Path != path)
                throw new InvalidOperationException(
                    $"{path} was already adapted as '{wrapper.Path}' under another root module; apply LoRA from one root (the whole model)");
            wrapper.AddAdapter(config.AdapterName, config.RankFor(path), config.AlphaFor(path), config.Dropout, config.UseRsLora);
            handle.Add(wrapper);
        }
        handle.AddConfig(config);
        foreach (var (name, p) in root.named_parameters())
            if (!IsLoraPath(name)) p.requires_grad_(false);
        return handle;
    }

    /// <summary>
    /// Loads a saved adapter (ours or PEFT's) into <paramref name="root"/> as <paramref name="adapter"/>,
    /// creating it from the file's <c>adapter_config.json</c> when needed (see <see cref="LoraModel.LoadAdapter"/>).
    /// </summary>
    public static LoraModel LoadAdapter(nn.Module root, string directory, string adapter = "default")
    {
        var handle = Find(root) ?? Apply(root, LoraModel.ReadConfig(directory, adapter));
        handle.LoadAdapter(directory, adapter);
        return handle;
    }

    /// <summary>The LoRA handle of a model, or null when <see cref="Apply"/> was never called on it.</summary>
    public static LoraModel? Find(nn.Module root) => Handles.TryGetValue(root, out var h) ? h : null;

    /// <summary>Whether a parameter or module path lies inside LoRA adapter matrices.</summary>
    public static bool IsLoraPath(string path) =>
        path.Split('.').Any(s => s is "lora_A" or "lora_B");

    /// <summary>The in-memory parameter name of A or B (<paramref name="matrix"/> is "lora_A" or "lora_B").</summary>
    public static string MemoryKey(string modulePath, string matrix, string adapter) => $"{modulePath}.{matrix}.{adapter}.weight";

    /// <summary>The PEFT adapter-file key of A or B (<paramref name="matrix"/> is "lora_A" or "lora_B").</summary>
    public static string FileKey(string modulePath, string matrix) => $"{PeftFilePrefix}{modulePath}.{matrix}.weight";
}

/// <summary>
/// The LoRA state of one model: its wrapped modules and adapters. Owns no tensors (the adapter
/// matrices belong to the model's module tree).
/// </summary>
public sealed class LoraModel
{
    private readonly List<LoraLinear> _modules = new();
    private readonly Dictionary<string, LoraConfig> _configs = new(StringComparer.Ordinal);

    internal LoraModel(nn.Module root) => Root = root;

    /// <summary>The adapted model.</summary>
    public nn.Module Root { get; }

    /// <summary>Every wrapped Linear, in model order of first adaptation.</summary>
    public IReadOnlyList<LoraLinear> Modules => _modules;

    /// <summary>Adapter name → its configuration.</summary>
    public IReadOnlyDictionary<string, LoraConfig> Configs => _configs;

    /// <summary>Adapter names in the order they were added.</summary>
    public IReadOnlyList<string> AdapterNames => _configs.Keys.ToList();

    internal void Add(LoraLinear m) { if (!_modules.Contains(m)) _modules.Add(m); }
    internal void AddConfig(LoraConfig c) => _configs[c.AdapterName] = c;

    /// <summary>Modules carrying adapter <paramref name="adapter"/>.</summary>
    public IReadOnlyList<LoraLinear> ModulesOf(string adapter)
    {
        if (!_configs.ContainsKey(adapter)) throw new KeyNotFoundException($"no adapter '{adapter}' (has: {string.Join(", ", _configs.Keys)})");
        return _modules.Where(m => m.HasAdapter(adapter)).ToList();
    }

    /// <summary>
    /// The adapter's parameters with their in-memory names (<c>P.lora_A.N.weight</c>, <c>P.lora_B.N.weight</c>),
    /// A before B for each module. Owned by the model.
    /// </summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> NamedParameters(string adapter) =>
        ModulesOf(adapter).SelectMany(m => new[]
        {
            (Lora.MemoryKey(m.Path, "lora_A", adapter), m.LoraA(adapter)),
            (Lora.MemoryKey(m.Path, "lora_B", adapter), m.LoraB(adapter)),
        }).ToList();

    /// <summary>Moves every adapter to its base weight's device and dtype (see <see cref="LoraLinear.SyncToBase"/>).</summary>
    public void SyncToBase() { foreach (var m in _modules) m.SyncToBase(); }

    /// <summary>Makes exactly these adapters active (PEFT set_adapter / multi-adapter inference).</summary>
    public void SetActiveAdapters(params string[] adapters)
    {
        foreach (var a in adapters) ModulesOf(a);
        foreach (var m in _modules)
            foreach (var a in m.AdapterNames) m.SetActive(a, adapters.Contains(a));
    }

    /// <summary>Makes exactly these adapters trainable (requires_grad); all others, and the base, stay frozen.</summary>
    public void SetTrainableAdapters(params string[] adapters)
    {
        foreach (var a in adapters) ModulesOf(a);
        foreach (var m in _modules)
            foreach (var a in m.AdapterNames) m.SetTrainable(a, adapters.Contains(a));
    }

    /// <summary>
    /// Freezes (false) or unfreezes (true) every parameter of the model that is not a LoRA matrix;
    /// adapters keep their own flags. <see cref="Lora.Apply"/> freezes the base.
    /// </summary>
    public void SetBaseTrainable(bool trainable)
    {
        foreach (var (name, p) in Root.named_parameters())
            if (!Lora.IsLoraPath(name)) p.requires_grad_(trainable);
    }

    /// <summary>Folds the adapter into every base weight it touches (see <see cref="LoraLinear.Merge"/>).</summary>
    public void Merge(string adapter) { foreach (var m in ModulesOf(adapter)) m.Merge(adapter); }

    /// <summary>Undoes <see cref="Merge"/> (see <see cref="LoraLinear.Unmerge"/> for the exactness).</summary>
    public void Unmerge(string adapter) { foreach (var m in ModulesOf(adapter)) m.Unmerge(adapter); }

    /// <summary>
    /// Writes <c>adapter_model.safetensors</c> (PEFT keys, see <see cref="Lora"/>) and
    /// <c>adapter_config.json</c> (PEFT fields) into <paramref name="directory"/>, each atomically.
    /// </summary>
    /// <param name="directory">Created if missing.</param>
    /// <param name="adapter">Adapter to save.</param>
    /// <param name="taskType">PEFT task_type: "CAUSAL_LM" (decoder-only), "SEQ_2_SEQ_LM" (encoder-decoder) or "FEATURE_EXTRACTION" (encoder-only).</param>
    /// <param name="baseModelNameOrPath">Recorded as base_model_name_or_path.</param>
    public void SaveAdapter(string directory, string adapter, string taskType = "CAUSAL_LM", string? baseModelNameOrPath = null)
    {
        var config = _configs.TryGetValue(adapter, out var c) ? c : throw new KeyNotFoundException($"no adapter '{adapter}'");
        Directory.CreateDirectory(directory);
        var tensors = new Dictionary<string, Tensor>();
        foreach (var m in ModulesOf(adapter))
        {
            tensors[Lora.FileKey(m.Path, "lora_A")] = m.LoraA(adapter);
            tensors[Lora.FileKey(m.Path, "lora_B")] = m.LoraB(adapter);
        }
        SafeTensors.Save(Path.Combine(directory, "adapter_model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var json = PeftAdapterConfig.ToJson(config, taskType, baseModelNameOrPath);
        AtomicFile.WriteAllText(Path.Combine(directory, "adapter_config.json"), json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Reads an adapter's <c>adapter_config.json</c> into a <see cref="LoraConfig"/> named
    /// <paramref name="adapter"/>: every LoRA field PEFT defines is honoured or refused by name
    /// (see <see cref="PeftAdapterConfig.Read"/>).
    /// </summary>
    public static LoraConfig ReadConfig(string directory, string adapter = "default") =>
        PeftAdapterConfig.Read(Path.Combine(directory, "adapter_config.json"), adapter);

    /// <summary>
    /// Loads an adapter saved by <see cref="SaveAdapter"/> (or PEFT) into adapter <paramref name="adapter"/>.
    /// When the model has no such adapter it is first created with <see cref="Lora.Apply"/> from the
    /// file's config. Keys must match the modules carrying the adapter exactly: otherwise an
    /// <see cref="InvalidDataException"/> lists the missing and unexpected keys; shapes must match.
    /// Values are copied in place (under no_grad) to the parameters' device and dtype.
    /// </summary>
    public void LoadAdapter(string directory, string adapter = "default")
    {
        if (!_configs.ContainsKey(adapter)) Lora.Apply(Root, ReadConfig(directory, adapter));
        var mods = ModulesOf(adapter);
        if (mods.Any(m => m.IsMerged(adapter))) throw new InvalidOperationException($"adapter '{adapter}' is merged; unmerge before loading");
        var loaded = SafeTensors.Load(Path.Combine(directory, "adapter_model.safetensors"));
        try
        {
            var expected = mods.SelectMany(m => new[]
            {
                (Key: Lora.FileKey(m.Path, "lora_A"), Param: m.LoraA(adapter)),
                (Key: Lora.FileKey(m.Path, "lora_B"), Param: m.LoraB(adapter)),
            }).ToDictionary(e => e.Key, e => e.Param);
            var missing = expected.Keys.Where(k => !loaded.ContainsKey(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
            var unexpected = loaded.Keys.Where(k => !expected.ContainsKey(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new InvalidDataException(
                    $"adapter file in {directory} does not match adapter '{adapter}'.\n  missing keys: [{string.Join(", ", missing)}]\n  unexpected keys: [{string.Join(", ", unexpected)}]");
            var badShapes = expected.Where(e => !e.Value.shape.SequenceEqual(loaded[e.Key].shape))
                .Select(e => $"{e.Key}: model {Shape(e.Value)}, file {Shape(loaded[e.Key])}").ToList();
            if (badShapes.Count > 0) throw new InvalidDataException("adapter shape mismatch: " + string.Join("; ", badShapes));
            using (no_grad())
                foreach (var (key, p) in expected)
                    using (var src = loaded[key].to(p.dtype, p.device))
                        p.copy_(src);
        }
        finally
        {
            foreach (var t in loaded.Values) t.Dispose();
        }
    }

    private static string Shape(Tensor t) => "(" + string.Join(", ", t.shape) + ")";
}
