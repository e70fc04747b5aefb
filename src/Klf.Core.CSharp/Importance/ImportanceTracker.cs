using Klf.Fusion;
using Klf.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Importance;

/// <summary>
/// Collects KIF element importance during the training of one task: for every parameter that is
/// trainable when <c>Attach</c> is called, it keeps two detached float32 buffers of the
/// parameter's shape on its device, the smoothed sensitivity Ī and the uncertainty Ū, and updates
/// them in place after each counted optimizer step:
/// s = |w·g| (first order) or |w·g − ½(w·g)²| (second order),
/// Ī ← β1·Ī + (1−β1)·s, then Ū ← β2·Ū + (1−β2)·|s − Ī| with the <em>updated</em> Ī.
/// </summary>
/// <remarks>
/// <para>EMA order: the TaSL / KIF reference code (<c>RankAllocator.update_ipt</c> in TaSL's
/// <c>utils/lora_importance.py</c>, and the same in its LoRA-tailored variant and in Recurrent-KIF's
/// <c>IPTScore</c>) assigns <c>exp_avg_ipt</c> first and then uses it in
/// <c>(ipt - exp_avg_ipt).abs()</c>, i.e. the new Ī. This class does the same.</para>
/// <para>Hook point: the reference trainer calls <c>update_score</c> right after
/// <c>optimizer.step()</c> (and the scheduler step), before <c>zero_grad</c>: the weights are the
/// updated ones and the gradient is the step's clipped one. <see cref="ImportanceHookPoint.AfterOptimizerStep"/>
/// reproduces that; <see cref="ImportanceHookPoint.AfterClip"/> is offered as the alternative.</para>
/// <para>A tracked parameter without a gradient in a counted step is scored with g = 0 (s = 0: Ī and
/// Ū decay). Parameters that become trainable after <c>Attach</c> are ignored.</para>
/// <para>Memory: the buffers (2 per tracked parameter) are allocated once, in <c>Attach</c>,
/// and owned by this object until <see cref="Dispose"/>; <see cref="Update"/> frees its temporaries
/// before returning, so the live tensor count does not change across steps.</para>
/// </remarks>
public sealed class ImportanceTracker : IDisposable
{
    private readonly List<(string Name, Parameter Parameter, Tensor Sensitivity, Tensor Uncertainty)> _tracked = new();
    private readonly Action<StepContext> _hook;
    private StepHooks? _hooks;
    private bool _disposed;

    /// <summary>Creates a detached tracker; call <c>Attach</c> (or <see cref="Track"/> and <see cref="Update"/>).</summary>
    public ImportanceTracker(ImportanceOptions? options = null)
    {
        Options = options ?? new ImportanceOptions();
        Options.Validate();
        _hook = Update;
    }

    /// <summary>The settings in use.</summary>
    public ImportanceOptions Options { get; }

    /// <summary>Optimizer steps seen by <see cref="Update"/> since construction or <see cref="Reset"/>.</summary>
    public int StepsSeen { get; private set; }

    /// <summary>Steps that updated the buffers (seen minus skipped).</summary>
    public int StepsCounted { get; private set; }

    /// <summary>Names of the tracked parameters, in model order.</summary>
    public IReadOnlyList<string> Names => _tracked.Select(t => t.Name).ToArray();

    /// <summary>
    /// Starts tracking the parameters of <paramref name="trainable"/> that require grad now (typically
    /// <c>model.Module.named_parameters()</c>) and adds <see cref="Update"/> to the hook list chosen by
    /// <see cref="ImportanceOptions.HookPoint"/>. Allocates the buffers (zeros). Call once.
    /// </summary>
    public void Attach(StepHooks hooks, IEnumerable<(string Name, Parameter Parameter)> trainable)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_hooks != null) throw new InvalidOperationException("the tracker is already attached");
        Track(trainable);
        _hooks = hooks;
        HookList(hooks).Add(_hook);
    }

    /// <summary>
    /// <see cref="Attach(StepHooks, IEnumerable{ValueTuple{string, Parameter}})"/> over
    /// <paramref name="module"/>'s <c>named_parameters()</c>.
    /// </summary>
    public void Attach(StepHooks hooks, nn.Module module) =>
        Attach(hooks, module.named_parameters().Select(p => (p.name, p.parameter)));

    /// <summary>Removes the hook (the buffers are kept). Safe to call when not attached.</summary>
    public void Detach()
    {
        if (_hooks == null) return;
        HookList(_hooks).Remove(_hook);
        _hooks = null;
    }

    /// <summary>
    /// Allocates buffers for the parameters of <paramref name="trainable"/> that require grad and are
    /// not yet tracked, without hooking anywhere (for driving <see cref="Update"/> by hand).
    /// </summary>
    public void Track(IEnumerable<(string Name, Parameter Parameter)> trainable)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var (name, p) in trainable)
        {
            if (!p.requires_grad || _tracked.Any(t => t.Name == name)) continue;
            var i = torch.zeros(p.shape, ScalarType.Float32, p.device).DetachFromDisposeScope();
            var u = torch.zeros(p.shape, ScalarType.Float32, p.device).DetachFromDisposeScope();
            _tracked.Add((name, p, i, u));
        }
    }

    /// <summary>
    /// The hook body: if <see cref="ImportanceOptions.Counts"/> accepts <c>ctx.Step</c> of
    /// <c>ctx.TotalSteps</c>, updates Ī and Ū of every tracked parameter from its current value and
    /// <c>grad</c>, in place under no_grad. Only <c>Step</c> and <c>TotalSteps</c> of the context are read.
    /// </summary>
    public void Update(StepContext ctx)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        StepsSeen++;
        if (!Options.Counts(ctx.Step, ctx.TotalSteps)) return;
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var b1 = Options.Beta1;
        var b2 = Options.Beta2;
        foreach (var (_, p, sens, unc) in _tracked)
        {
            var g = p.grad;
            if (g is null)
            {
                sens.mul_(b1);                                  // s = 0
                unc.mul_(b2).add_(sens, alpha: 1 - b2);         // |0 − Ī| = Ī (Ī ≥ 0)
                continue;
            }
            if (CpuTensors.Eligible(p, g, sens, unc))
            {
                unsafe
                {
                    CpuImportanceKernel.Update(CpuTensors.Pointer(p), CpuTensors.Pointer(g), CpuTensors.Pointer(sens), CpuTensors.Pointer(unc),
                        sens.numel(), Options.Order == ImportanceOrder.Second, b1, b2);
                }
                continue;
            }
            // One temporary (s) per parameter; every other operation is in place.
            var w = p.dtype == ScalarType.Float32 ? p : p.to(ScalarType.Float32);
            var s = w.mul(g.dtype == ScalarType.Float32 ? g : g.to(ScalarType.Float32));   // w·g
            if (Options.Order == ImportanceOrder.Second) s.addcmul_(s, s, -0.5);         // w·g − ½(w·g)²
            s.abs_();
            sens.lerp_(s, 1 - b1);                              // Ī ← β1·Ī + (1−β1)·s  (= Ī + (1−β1)(s − Ī))
            s.sub_(sens).abs_();                                // |s − Ī| with the new Ī (reference order)
            unc.lerp_(s, 1 - b2);                               // Ū ← β2·Ū + (1−β2)·|s − Ī|
        }
        StepsCounted++;
    }

    /// <summary>Zeroes Ī, Ū and the step counters (a new task); the tracked set and the hook stay.</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var _ = torch.no_grad();
        foreach (var t in _tracked)
        {
            t.Sensitivity.zero_();
            t.Uncertainty.zero_();
        }
        StepsSeen = 0;
        StepsCounted = 0;
    }

    /// <summary>
    /// Element scores Ī ⊙ Ū per tracked parameter name: fresh float32 tensors of the parameter's shape
    /// on its device, detached. The caller owns and disposes them (they are registered in the caller's
    /// current dispose scope, if any, like any new tensor).
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ElementScores()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var _ = torch.no_grad();
        var result = new Dictionary<string, Tensor>(_tracked.Count);
        foreach (var t in _tracked) result[t.Name] = t.Sensitivity.mul(t.Uncertainty);
        return result;
    }

    /// <summary>
    /// The live buffers of parameter <paramref name="name"/>: Ī and Ū (float32, the parameter's shape
    /// and device). Owned by the tracker: do not dispose or modify them; they change at every counted
    /// step and die with the tracker. Throws <see cref="KeyNotFoundException"/> for an untracked name.
    /// </summary>
    public (Tensor Sensitivity, Tensor Uncertainty) Buffers(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var t in _tracked) if (t.Name == name) return (t.Sensitivity, t.Uncertainty);
        throw new KeyNotFoundException($"parameter '{name}' is not tracked");
    }

    /// <summary>
    /// Writes Ī and Ū of every tracked parameter to a safetensors file atomically (keys
    /// <c>sensitivity.NAME</c> and <c>uncertainty.NAME</c>; metadata <c>steps_seen</c>, <c>steps_counted</c>),
    /// so an accumulating importance survives a resumed run bit for bit.
    /// </summary>
    public void Save(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var tensors = _tracked.Select(t => new KeyValuePair<string, Tensor>("sensitivity." + t.Name, t.Sensitivity))
            .Concat(_tracked.Select(t => new KeyValuePair<string, Tensor>("uncertainty." + t.Name, t.Uncertainty)));
        var meta = new Dictionary<string, string>
        {
            ["steps_seen"] = StepsSeen.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["steps_counted"] = StepsCounted.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        Klf.Formats.SafeTensors.Save(path, tensors, meta);
    }

    /// <summary>
    /// Restores buffers written by <see cref="Save"/> into the tracked parameters' buffers (copy_, in
    /// place). The file must hold exactly the tracked names with their shapes; otherwise an
    /// <see cref="InvalidDataException"/> names the file and the first difference.
    /// </summary>
    public void Load(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (_, meta) = Klf.Formats.SafeTensors.ReadHeader(path);
        var loaded = Klf.Formats.SafeTensors.Load(path);
        try
        {
            if (loaded.Count != 2 * _tracked.Count)
                throw new InvalidDataException($"{path}: {loaded.Count} importance buffers for {_tracked.Count} tracked parameters");
            using var _ = torch.no_grad();
            foreach (var t in _tracked)
                foreach (var (prefix, buffer) in new[] { ("sensitivity.", t.Sensitivity), ("uncertainty.", t.Uncertainty) })
                {
                    if (!loaded.TryGetValue(prefix + t.Name, out var v)) throw new InvalidDataException($"{path}: no {prefix}{t.Name}");
                    if (!v.shape.SequenceEqual(buffer.shape)) throw new InvalidDataException($"{path}: {prefix}{t.Name} has shape ({string.Join(", ", v.shape)}), the parameter ({string.Join(", ", buffer.shape)})");
                    buffer.copy_(v);
                }
            int Count(string key) => meta.TryGetValue(key, out var x) && int.TryParse(x, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var n) && n >= 0
                ? n : throw new InvalidDataException($"{path}: metadata {key} is missing or not a count");
            StepsSeen = Count("steps_seen");
            StepsCounted = Count("steps_counted");
        }
        finally
        {
            foreach (var v in loaded.Values) v.Dispose();
        }
    }

    /// <summary>Detaches the hook and disposes the buffers. The parameters belong to the model and are untouched.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        Detach();
        foreach (var t in _tracked)
        {
            t.Sensitivity.Dispose();
            t.Uncertainty.Dispose();
        }
        _tracked.Clear();
        _disposed = true;
    }

    private List<Action<StepContext>> HookList(StepHooks hooks) =>
        Options.HookPoint == ImportanceHookPoint.AfterClip ? hooks.AfterClip : hooks.AfterOptimizerStep;
}
