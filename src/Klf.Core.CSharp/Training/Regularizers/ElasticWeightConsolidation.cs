using Klf.Formats;
using Klf.Models;
using Klf.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training.Regularizers;

/// <summary>
/// Elastic weight consolidation: a diagonal empirical Fisher accumulated over tasks and the
/// quadratic penalty (λ/2) · Σ F · (θ − θ*)² towards the parameters θ* after the latest task.
/// Owns its Fisher and anchor tensors: dispose it.
/// </summary>
public sealed class ElasticWeightConsolidation : IDisposable
{
    /// <summary>The project's λ (EWC strength): no KIF reference fixes one.</summary>
    public const double DefaultLambda = 5000.0;

    /// <summary>The project's number of training examples sampled for each Fisher estimate.</summary>
    public const int DefaultSamples = 32;

    /// <summary>File of <see cref="Save"/> in a state folder.</summary>
    public const string StateFile = "ewc.safetensors";

    private readonly ILanguageModel _model;
    private readonly int _samples;
    private readonly int _seed;
    private readonly Dictionary<string, Tensor> _fisher = new();
    private readonly Dictionary<string, Tensor> _anchor = new();

    /// <summary>
    /// EWC on <paramref name="model"/>'s trainable parameters with strength <paramref name="lambda"/>,
    /// estimating each Fisher from <paramref name="samples"/> training examples drawn with
    /// <paramref name="seed"/>.
    /// </summary>
    public ElasticWeightConsolidation(ILanguageModel model, double lambda = DefaultLambda, int samples = DefaultSamples, int seed = 17)
    {
        if (!(lambda >= 0 && double.IsFinite(lambda))) throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite and ≥ 0");
        if (samples < 1) throw new ArgumentOutOfRangeException(nameof(samples), samples, "at least one Fisher example");
        _model = model;
        Lambda = lambda;
        _samples = samples;
        _seed = seed;
    }

    /// <summary>λ.</summary>
    public double Lambda { get; }

    /// <summary>The accumulated diagonal Fisher by parameter name (float32 like the parameters; owned by this object).</summary>
    public IReadOnlyDictionary<string, Tensor> Fisher => _fisher;

    /// <summary>θ* by parameter name: the parameters after the latest consolidated task (owned by this object).</summary>
    public IReadOnlyDictionary<string, Tensor> Anchor => _anchor;

    /// <summary>
    /// Estimates the empirical Fisher of the trainable parameters at the current θ from
    /// min(samples, |train|) seeded training examples, one example per batch (eval mode, no
    /// dropout): F_task = (1/N) Σ_n (∂ℓ_n/∂θ)², ℓ_n the example's mean answer-token loss; adds it
    /// to the accumulated Fisher and sets θ* to the current parameters.
    /// </summary>
    public void Consolidate(IReadOnlyList<LmExample> train, TrainerOptions options)
    {
        var trainable = _model.Module.named_parameters().Where(p => p.parameter.requires_grad).ToArray();
        var n = Math.Min(_samples, train.Count);
        if (n == 0 || trainable.Length == 0) return;
        var idx = Enumerable.Range(0, train.Count).ToArray();
        // The stream depends on how many tasks were consolidated, so each task draws its own sample.
        new Random(_seed + _fisher.Count * 7919 + train.Count).Shuffle(idx);
        var layout = BatchLayout.For(_model, options.MaxLength, options.MaxTargetLength, options.Truncation);
        var device = Trainer.DeviceOf(_model);
        var acc = trainable.Select(p => torch.zeros_like(p.parameter).detach()).ToArray();
        _model.Module.eval();
        var used = 0;
        foreach (var i in idx.Take(n))
        {
            using var scope = NewDisposeScope();
            _model.Module.zero_grad();
            using var batch = Batching.Build([train[i]], layout, device);
            if (batch.LabelTokenCount == 0) continue;
            _model.ComputeLoss(batch).backward();
            used++;
            using var _ = no_grad();
            for (var k = 0; k < trainable.Length; k++)
            {
                var g = trainable[k].parameter.grad;
                if (g is not null) acc[k].add_(g.square());
            }
        }
        _model.Module.zero_grad();
        using var ng = no_grad();
        for (var k = 0; k < trainable.Length; k++)
        {
            var (name, p) = trainable[k];
            if (used > 0) acc[k].div_((double)used);
            if (_fisher.TryGetValue(name, out var f)) { f.add_(acc[k]); acc[k].Dispose(); }
            else _fisher[name] = acc[k];
            if (_anchor.TryGetValue(name, out var a)) a.Dispose();
            _anchor[name] = p.detach().clone();
        }
    }

    /// <summary>
    /// (λ/2) · Σ F · (θ − θ*)² over the consolidated parameters, as a differentiable 0-dim scalar
    /// (float32) the caller owns; zero before the first consolidation.
    /// </summary>
    public Tensor Penalty()
    {
        using var scope = NewDisposeScope();
        Tensor? total = null;
        foreach (var (name, p) in _model.Module.named_parameters())
        {
            if (!_fisher.TryGetValue(name, out var f)) continue;
            var term = f.mul((p - _anchor[name]).square()).sum();
            total = total is null ? term : total.add(term);
        }
        var result = total is null ? torch.zeros(Array.Empty<long>(), dtype: ScalarType.Float32) : total.mul(Lambda / 2.0);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Writes the accumulated Fisher and θ* to <c>dir/ewc.safetensors</c> (keys <c>fisher.&lt;name&gt;</c>
    /// and <c>anchor.&lt;name&gt;</c>), atomically; nothing is written before the first consolidation.
    /// </summary>
    public void Save(string dir)
    {
        if (_fisher.Count == 0) return;
        var tensors = _fisher.Select(kv => KeyValuePair.Create("fisher." + kv.Key, kv.Value))
            .Concat(_anchor.Select(kv => KeyValuePair.Create("anchor." + kv.Key, kv.Value)))
            .ToList();
        SafeTensors.Save(Path.Combine(dir, StateFile), tensors);
    }

    /// <summary>
    /// Restores what <see cref="Save"/> wrote (no file = nothing consolidated yet), placing the
    /// tensors on the model's device; a key that is not <c>fisher.</c> or <c>anchor.</c> of a model
    /// parameter is an error naming the file.
    /// </summary>
    public void Load(string dir)
    {
        var path = Path.Combine(dir, StateFile);
        if (!File.Exists(path)) return;
        var names = _model.Module.named_parameters().Select(p => p.name).ToHashSet();
        var device = Trainer.DeviceOf(_model);
        var loaded = SafeTensors.Load(path);
        try
        {
            foreach (var (key, value) in loaded)
            {
                var (target, name) =
                    key.StartsWith("fisher.", StringComparison.Ordinal) ? (_fisher, key[7..])
                    : key.StartsWith("anchor.", StringComparison.Ordinal) ? (_anchor, key[7..])
                    : throw new InvalidDataException($"{path}: unexpected key {key}");
                if (!names.Contains(name)) throw new InvalidDataException($"{path}: {name} is not a parameter of the model");
                var placed = value.to(device);
                placed.DetachFromDisposeScope();
                if (target.TryGetValue(name, out var old)) old.Dispose();
                target[name] = placed;
            }
        }
        finally
        {
            foreach (var t in loaded.Values)
                if (!_fisher.Values.Concat(_anchor.Values).Any(kept => ReferenceEquals(kept, t))) t.Dispose();
        }
    }

    /// <summary>Disposes the Fisher and anchor tensors.</summary>
    public void Dispose()
    {
        foreach (var t in _fisher.Values) t.Dispose();
        foreach (var t in _anchor.Values) t.Dispose();
        _fisher.Clear();
        _anchor.Clear();
    }
}
