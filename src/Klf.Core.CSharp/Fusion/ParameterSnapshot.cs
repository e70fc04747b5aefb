using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Detached copies of chosen named parameters of a model (θ̄_{k−1} before a task, or the pre-trained
/// base). Owns its tensors: each is a clone with the parameter's shape, dtype and device, without
/// gradient history, released by <see cref="Dispose"/>. Later training of the model does not change
/// the snapshot.
/// </summary>
public sealed class ParameterSnapshot : IDisposable
{
    private readonly Dictionary<string, Tensor> _tensors;
    private readonly Dictionary<string, double> _maxAbs = new();
    private bool _disposed;

    private ParameterSnapshot(Dictionary<string, Tensor> tensors)
    {
        _tensors = tensors;
        MeasureBounds();
    }

    /// <summary>Copies of the named parameters of <paramref name="model"/> (unknown names throw <see cref="ArgumentException"/>).</summary>
    public static ParameterSnapshot Take(ILanguageModel model, IEnumerable<string> names)
    {
        var live = LiveParameters(model);
        var wanted = names.Distinct().ToList();
        var missing = wanted.Where(n => !live.ContainsKey(n)).ToList();
        if (missing.Count > 0) throw new ArgumentException($"snapshot: the model has no parameter {string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", …" : "")}");
        var copies = new Dictionary<string, Tensor>(wanted.Count);
        using (no_grad())
        {
            foreach (var n in wanted)
            {
                using var detached = live[n].detach();
                var c = detached.clone();
                c.DetachFromDisposeScope(); // owned by the snapshot, not by a caller's dispose scope
                copies[n] = c;
            }
        }
        return new ParameterSnapshot(copies);
    }

    /// <summary>Copies of every trainable parameter (<c>requires_grad</c>) of <paramref name="model"/>.</summary>
    public static ParameterSnapshot TakeTrainable(ILanguageModel model) =>
        Take(model, LiveParameters(model).Where(kv => kv.Value.requires_grad).Select(kv => kv.Key));

    /// <summary>Copies of every parameter of <paramref name="model"/>.</summary>
    public static ParameterSnapshot TakeAll(ILanguageModel model) => Take(model, LiveParameters(model).Keys);

    /// <summary>Writes the copies to a safetensors file atomically (the snapshot is unchanged).</summary>
    public void Save(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Klf.Formats.SafeTensors.Save(path, _tensors);
    }

    /// <summary>
    /// A snapshot read from a file written by <see cref="Save"/>, its tensors placed on
    /// <paramref name="device"/>. The new snapshot owns them (dispose it).
    /// </summary>
    public static ParameterSnapshot Load(string path, Device device)
    {
        var loaded = Klf.Formats.SafeTensors.Load(path);
        var placed = new Dictionary<string, Tensor>(loaded.Count);
        foreach (var (name, t) in loaded)
        {
            var moved = t.to(device);
            if (!ReferenceEquals(moved, t)) t.Dispose();
            moved.DetachFromDisposeScope();
            placed[name] = moved;
        }
        return new ParameterSnapshot(placed);
    }

    /// <summary>The parameter names held, in the order they were taken.</summary>
    public IReadOnlyCollection<string> Names => _tensors.Keys;

    /// <summary>Whether a copy of <paramref name="name"/> is held.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>
    /// The copy of parameter <paramref name="name"/>: owned by the snapshot (do not dispose or modify
    /// it; it is valid until the snapshot is disposed).
    /// </summary>
    public Tensor this[string name]
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _tensors.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"snapshot holds no parameter '{name}'");
        }
    }

    /// <summary>
    /// Overwrites every held copy with the current value of its parameter in <paramref name="model"/>
    /// (in place, no new allocation): the snapshot now holds the model as it is.
    /// </summary>
    public void Refresh(ILanguageModel model)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var live = LiveParameters(model);
        using var _ = no_grad();
        foreach (var (n, t) in _tensors)
            t.copy_(live.TryGetValue(n, out var p) ? p : throw new ArgumentException($"snapshot: the model has no parameter {n}"));
        MeasureBounds();
    }

    /// <summary>
    /// The largest magnitude in the copy of <paramref name="name"/>: NaN when it holds a NaN, +∞ when
    /// it holds an infinity. Measured when the copies are taken, loaded or refreshed, so a fusion can
    /// prove its arithmetic stays finite without reading the copy again.
    /// </summary>
    public double MaxAbs(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _maxAbs.TryGetValue(name, out var m) ? m : throw new KeyNotFoundException($"snapshot holds no parameter '{name}'");
    }

    /// <summary>One min/max pass per copy, one host transfer for all of them.</summary>
    private void MeasureBounds()
    {
        _maxAbs.Clear();
        if (_tensors.Count == 0) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var names = _tensors.Keys.ToArray();
        var extremes = new List<Tensor>(2 * names.Length);
        foreach (var n in names)
        {
            var t = _tensors[n];
            if (t.numel() == 0) { extremes.Add(zeros(2, dtype: ScalarType.Float64, device: t.device)); continue; }
            var (lo, hi) = aminmax(t);
            extremes.Add(stack([lo.to_type(ScalarType.Float64), hi.to_type(ScalarType.Float64)]));
        }
        var values = cat(extremes.Select(e => e.to(CPU)).ToList()).data<double>().ToArray();
        for (var i = 0; i < names.Length; i++)
        {
            double lo = values[2 * i], hi = values[2 * i + 1];
            _maxAbs[names[i]] = double.IsNaN(lo) || double.IsNaN(hi) ? double.NaN : Math.Max(Math.Abs(lo), Math.Abs(hi));
        }
    }

    /// <summary>
    /// Writes every held copy back into its parameter of <paramref name="model"/> with <c>copy_</c>
    /// under no_grad: the same Parameter objects, so optimizers and references survive.
    /// </summary>
    public void RestoreTo(ILanguageModel model)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var live = LiveParameters(model);
        using var _ = no_grad();
        foreach (var (n, t) in _tensors)
            (live.TryGetValue(n, out var p) ? p : throw new ArgumentException($"snapshot: the model has no parameter {n}")).copy_(t);
    }

    /// <summary>Total number of elements held.</summary>
    public long ElementCount => _tensors.Values.Sum(t => t.numel());

    /// <summary>Releases every copy.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _tensors.Values) t.Dispose();
        _tensors.Clear();
    }

    /// <summary>The model's parameters by full name (the live Parameter objects; not owned by the caller).</summary>
    internal static Dictionary<string, Tensor> LiveParameters(ILanguageModel model)
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (n, p) in model.Module.named_parameters()) d.TryAdd(n, p);
        return d;
    }
}
