using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Adapters;

/// <summary>
/// One base <see cref="Linear"/> (frozen) with one or more named LoRA adapters:
/// y = base(x) + Σ_{active, unmerged a} dropout_a(x) · A_aᵀ · B_aᵀ · (alpha_a / r_a).
/// </summary>
/// <remarks>
/// <para>TorchSharp's <see cref="Linear"/> is sealed and models hold it in typed fields
/// (<c>public Linear q_proj</c>), so a wrapper cannot take its place in the tree. Instead the
/// adapter matrices are registered as children of the base Linear itself and a forward hook adds
/// the update. Consequences: the base weight keeps its key (<c>…q_proj.weight</c>), adapters are
/// <c>…q_proj.lora_A.&lt;adapter&gt;.weight</c> (r, in) and <c>…q_proj.lora_B.&lt;adapter&gt;.weight</c>
/// (out, r) — PEFT's in-memory names minus the <c>base_layer</c> level; model.to(device/dtype),
/// train()/eval() and Dispose reach the adapters because they are in the module tree; this works
/// for Linear children of fields, ModuleList, ModuleDict alike.</para>
/// <para>One TorchSharp limitation: <c>Linear</c>'s own <c>to(device/dtype)</c> converts its weight and
/// bias but not modules registered under it. The adapters therefore follow their base weight
/// lazily: every forward and every accessor first moves them to the base weight's device and dtype
/// when these differ (<see cref="SyncToBase"/>; the <c>StepRunner</c> does it before building its
/// optimizer). As with TorchSharp's own <c>to()</c>, a move creates new Parameter objects: build
/// optimizers after moving the model.</para>
/// <para>Requirement on models: call the Linear through <c>call(x)</c> (which runs hooks), never
/// <c>forward(x)</c> (which TorchSharp defines to skip hooks).</para>
/// <para>Owns no tensors itself: A and B belong to the model's module tree and are disposed with it.</para>
/// </remarks>
public sealed class LoraLinear
{
    // The lora_A / lora_B modules in the model's tree; through IFollowsBaseWeight the trainer can
    // bring the adapter to its base weight without knowing LoRA.
    private sealed class Container : nn.Module, Klf.Models.IFollowsBaseWeight
    {
        private readonly Action _sync;
        public Container(string name, Action sync) : base(name) { _sync = sync; }
        public void SyncToBase() => _sync();
        public void Add(string key, nn.Module m) => register_module(key, m);
        public Linear Get(string key) => (Linear)named_children().First(c => c.name == key).module;
    }

    private sealed class AdapterState
    {
        public required int R;
        public required double Alpha;
        public required double Dropout;
        public bool RsLora;
        public bool Active = true;
        public bool Merged;
        public double Scaling => LoraConfig.ScalingOf(R, Alpha, RsLora);
    }

    private readonly Container _a;
    private readonly Container _b;
    private readonly Dictionary<string, AdapterState> _adapters = new(StringComparer.Ordinal);
    private readonly List<string> _order = new();
    private readonly nn.HookableModule<Func<nn.Module<Tensor, Tensor>, Tensor, Tensor>, Func<nn.Module<Tensor, Tensor>, Tensor, Tensor, Tensor>>.HookRemover _hook;

    /// <summary>Wraps <paramref name="baseLayer"/> (no adapter yet). Use <see cref="Lora.Apply"/> rather than this directly.</summary>
    /// <param name="modulePath">The module's path in its model, e.g. <c>model.layers.0.self_attn.q_proj</c>.</param>
    /// <param name="baseLayer">The Linear to adapt; its parameters are not touched here.</param>
    internal LoraLinear(string modulePath, Linear baseLayer)
    {
        Path = modulePath;
        Base = baseLayer;
        _a = new Container("lora_A", SyncToBase);
        _b = new Container("lora_B", SyncToBase);
        baseLayer.register_module("lora_A", _a);
        baseLayer.register_module("lora_B", _b);
        _hook = baseLayer.register_forward_hook(AddAdapters);
    }

    /// <summary>Module path of the base Linear in its model (HF naming).</summary>
    public string Path { get; }

    /// <summary>The wrapped Linear; its weight (out, in) keeps its key and is frozen by <see cref="Lora.Apply"/>.</summary>
    public Linear Base { get; }

    /// <summary>Adapter names, in the order they were added.</summary>
    public IReadOnlyList<string> AdapterNames => _order;

    /// <summary>Whether an adapter of that name exists on this module.</summary>
    public bool HasAdapter(string adapter) => _adapters.ContainsKey(adapter);

    /// <summary>
    /// Adds an adapter: A (r, in) kaiming-uniform with a = √5 (as PEFT), B (out, r) zeros, on the base
    /// weight's device and dtype, trainable and active. Scaled by alpha / r, or alpha / √r when
    /// <paramref name="rsLora"/> (PEFT's <c>use_rslora</c>).
    /// </summary>
    public void AddAdapter(string adapter, int r, double alpha, double dropout, bool rsLora = false)
    {
        if (r <= 0) throw new ArgumentOutOfRangeException(nameof(r), "LoRA rank must be positive");
        if (_adapters.ContainsKey(adapter)) throw new InvalidOperationException($"{Path}: adapter '{adapter}' already exists");
        if (adapter.Contains('.') || adapter.Length == 0) throw new ArgumentException("adapter names cannot be empty or contain '.'", nameof(adapter));
        var w = Base.weight!;
        var (outF, inF) = (w.shape[0], w.shape[1]);
        var a = nn.Linear(inF, r, hasBias: false, device: w.device, dtype: w.dtype);
        var b = nn.Linear(r, outF, hasBias: false, device: w.device, dtype: w.dtype);
        using (no_grad())
        {
            nn.init.kaiming_uniform_(a.weight!, Math.Sqrt(5));
            b.weight!.zero_();
        }
        _a.Add(adapter, a);
        _b.Add(adapter, b);
        _adapters[adapter] = new AdapterState { R = r, Alpha = alpha, Dropout = dropout, RsLora = rsLora };
        _order.Add(adapter);
    }

    /// <summary>A of an adapter: (r, in), same dtype/device as the base weight. Owned by the model; do not dispose.</summary>
    public Parameter LoraA(string adapter) { State(adapter); SyncToBase(); return _a.Get(adapter).weight!; }

    /// <summary>B of an adapter: (out, r). Owned by the model; do not dispose.</summary>
    public Parameter LoraB(string adapter) { State(adapter); SyncToBase(); return _b.Get(adapter).weight!; }

    /// <summary>
    /// The dtype the adapters keep and compute in when it is not the base weight's (a base held in
    /// bfloat16 under float32 adapters, <see cref="LowPrecisionBase"/>): the forward returns the base
    /// output cast to it plus the adapters. Null (the default): the adapters follow the base's dtype.
    /// </summary>
    public ScalarType? ComputeDtype { get; internal set; }

    /// <summary>
    /// Moves the adapter matrices to the base weight's device and dtype (or <see cref="ComputeDtype"/>)
    /// if they differ (after <c>model.to(…)</c>), keeping requires_grad. A no-op when already in place.
    /// </summary>
    public void SyncToBase()
    {
        var w = Base.weight!;
        var dtype = ComputeDtype ?? w.dtype;
        foreach (var c in new[] { _a, _b })
            foreach (var (_, m) in c.named_children())
            {
                var p = ((Linear)m).weight!;
                if (p.dtype == dtype && p.device_type == w.device_type && p.device_index == w.device_index) continue;
                var trainable = p.requires_grad;
                m.to(dtype);
                m.to(w.device);
                ((Linear)m).weight!.requires_grad_(trainable);
            }
    }

    /// <summary>Rank of an adapter.</summary>
    public int Rank(string adapter) => State(adapter).R;

    /// <summary>alpha / r of an adapter.</summary>
    public double Scaling(string adapter) => State(adapter).Scaling;

    /// <summary>Whether the adapter contributes to the forward pass (when not merged).</summary>
    public bool IsActive(string adapter) => State(adapter).Active;

    /// <summary>Whether the adapter is currently folded into the base weight.</summary>
    public bool IsMerged(string adapter) => State(adapter).Merged;

    /// <summary>
    /// Turns an adapter's contribution on or off. Throws for a merged adapter (its update lives in
    /// the base weight; unmerge first).
    /// </summary>
    public void SetActive(string adapter, bool active)
    {
        var s = State(adapter);
        if (s.Merged && !active) throw new InvalidOperationException($"{Path}: adapter '{adapter}' is merged; unmerge it before deactivating");
        s.Active = active;
    }

    /// <summary>Sets requires_grad of the adapter's A and B.</summary>
    public void SetTrainable(string adapter, bool trainable)
    {
        LoraA(adapter).requires_grad_(trainable);
        LoraB(adapter).requires_grad_(trainable);
    }

    /// <summary>B·A·scaling, (out, in), a fresh tensor without grad history; the caller disposes it.</summary>
    public Tensor DeltaWeight(string adapter)
    {
        var s = State(adapter);
        using var _ = no_grad();
        using var ba = LoraB(adapter).matmul(LoraA(adapter));
        return ba.mul(s.Scaling);
    }

    /// <summary>
    /// Folds the adapter into the base weight in place (W += B·A·scale, under no_grad) and stops
    /// adding it in forward. In float32, W + Δ − Δ is not always bit-identical to W (rounding);
    /// see <see cref="Unmerge"/>.
    /// </summary>
    public void Merge(string adapter)
    {
        var s = State(adapter);
        if (s.Merged) throw new InvalidOperationException($"{Path}: adapter '{adapter}' is already merged");
        using (no_grad())
        using (var d = DeltaWeight(adapter))
            Base.weight!.add_(d);
        s.Merged = true;
        s.Active = true;
    }

    /// <summary>
    /// Subtracts the adapter from the base weight (W −= B·A·scale) and resumes adding it in forward.
    /// Exact up to float rounding: |W_after − W_before| ≤ one ulp of |W| + |Δ| per element.
    /// </summary>
    public void Unmerge(string adapter)
    {
        var s = State(adapter);
        if (!s.Merged) throw new InvalidOperationException($"{Path}: adapter '{adapter}' is not merged");
        using (no_grad())
        using (var d = DeltaWeight(adapter))
            Base.weight!.sub_(d);
        s.Merged = false;
    }

    /// <summary>Removes the forward hook: the adapters stay registered (and saved) but no longer act. Irreversible.</summary>
    internal void Detach() => _hook.remove();

    private AdapterState State(string adapter) =>
        _adapters.TryGetValue(adapter, out var s) ? s : throw new KeyNotFoundException($"{Path}: no adapter '{adapter}' (has: {string.Join(", ", _order)})");

    private Tensor AddAdapters(nn.Module<Tensor, Tensor> module, Tensor input, Tensor output)
    {
        // Intermediates are disposed as soon as they are consumed (autograd keeps what it needs),
        // so inference outside a dispose scope does not pile up handles.
        SyncToBase();
        var result = ComputeDtype is { } c && output.dtype != c ? output.to(c) : output;
        var adapterInput = ComputeDtype is { } ci && input.dtype != ci ? input.to(ci) : input;
        foreach (var name in _order)
        {
            var s = _adapters[name];
            if (!s.Active || s.Merged) continue;
            var x = s.Dropout > 0 && Base.training ? nn.functional.dropout(adapterInput, s.Dropout, true) : adapterInput;
            using var h = _a.Get(name).forward(x);      // (…, r)
            if (!ReferenceEquals(x, adapterInput)) x.Dispose();
            using var u = _b.Get(name).forward(h);      // (…, out)
            var next = result.add(u, alpha: s.Scaling);
            if (!ReferenceEquals(result, output)) result.Dispose();
            result = next;
        }
        if (!ReferenceEquals(adapterInput, input)) adapterInput.Dispose();
        if (!ReferenceEquals(result, output)) output.Dispose();
        return result;
    }
}
