using Klf.Fusion;
using Klf.Importance;
using Klf.Models;
using Klf.Training;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Klf.Kif;

/// <summary>What one Recurrent-KIF merge did (plain data).</summary>
/// <param name="Round">1-based round within the task.</param>
/// <param name="InnerThreshold">The inner mask threshold (the (1 − f) global quantile of the inner importance).</param>
/// <param name="OuterThreshold">The outer mask threshold.</param>
/// <param name="Both">Elements important to both.</param>
/// <param name="InnerOnly">Elements important to the current task only.</param>
/// <param name="OuterOnly">Elements important to the memory only.</param>
/// <param name="Neither">Elements important to neither.</param>
public sealed record RecurrentMergeReport(int Round, double InnerThreshold, double OuterThreshold, long Both, long InnerOnly, long OuterOnly, long Neither);

/// <summary>
/// Recurrent-KIF around any training that runs the interleaved steps of <see cref="Trainer.Run"/>:
/// <see cref="BeginTask"/> resets the anchor to the model and returns the hooks of the inner
/// (current-task) steps; <see cref="Interleave"/> describes the outer (memory) steps with their hooks
/// and the merge after each round; <see cref="EndTask"/> moves the anchor to the trained (or
/// best-validation) weights. Both importances are collected on every trainable parameter with the
/// same EMA. Owns two importance trackers and two snapshots (anchor, θ after the inner steps): dispose
/// it when the sequence ends.
/// </summary>
public sealed class RecurrentKifSession : IDisposable
{
    private readonly ILanguageModel _model;
    private readonly ImportanceTracker _inner;
    private readonly ImportanceTracker _outer;
    private readonly StepHooks _innerHooks = new();
    private readonly StepHooks _outerHooks = new();
    private readonly List<RecurrentMergeReport> _merges = new();
    private string[]? _names;
    private ParameterSnapshot? _anchor;
    private ParameterSnapshot? _afterInner;
    private bool _running;
    private bool _disposed;

    /// <summary>A session for <paramref name="model"/>; the trainable parameters are fixed when the first task begins.</summary>
    public RecurrentKifSession(ILanguageModel model, RecurrentKifOptions? options = null)
    {
        _model = model;
        Options = options ?? RecurrentKifOptions.Reference();
        Options.Validate();
        _inner = new ImportanceTracker(Options.Importance);
        _outer = new ImportanceTracker(Options.Importance);
    }

    /// <summary>The settings in use.</summary>
    public RecurrentKifOptions Options { get; }

    /// <summary>Tasks completed.</summary>
    public int TasksCompleted { get; private set; }

    /// <summary>The merges of the current (or last) task, in order.</summary>
    public IReadOnlyList<RecurrentMergeReport> Merges => _merges;

    /// <summary>Steps counted in the inner importance since its last reset (a merge or a new task).</summary>
    public int InnerStepsCounted => _inner.StepsCounted;

    /// <summary>Steps counted in the outer importance since its last reset.</summary>
    public int OuterStepsCounted => _outer.StepsCounted;

    /// <summary>
    /// The element scores Ī ⊙ Ū of the inner (<paramref name="inner"/> true) or outer importance, per
    /// tracked parameter: fresh float32 tensors the caller owns and disposes.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ElementScores(bool inner)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return (inner ? _inner : _outer).ElementScores();
    }

    /// <summary>Names of the parameters the session tracks and merges (fixed at the first task).</summary>
    public IReadOnlyList<string> Parameters => _names ?? [];

    /// <summary>
    /// Starts a task: fixes the trainable parameters (first task), sets the anchor to the model's
    /// weights, resets the inner importance (and the outer one, unless <see cref="RecurrentKifOptions.OuterAcrossTasks"/>)
    /// and returns the hooks for the current-task steps.
    /// </summary>
    public StepHooks BeginTask()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_running) throw new InvalidOperationException("the current task has not ended");
        if (_names is null) Fix();
        _anchor!.Refresh(_model);
        _inner.Reset();
        if (!Options.OuterAcrossTasks) _outer.Reset();
        _merges.Clear();
        _running = true;
        return _innerHooks;
    }

    /// <summary>
    /// The outer steps of the current task on <paramref name="memory"/> (encoded memory examples, owned
    /// by the caller): every <see cref="RecurrentKifOptions.InnerSteps"/> inner steps,
    /// <see cref="RecurrentKifOptions.OuterSteps"/> memory steps, then a merge.
    /// </summary>
    public InterleavedSteps Interleave(IReadOnlyList<LmExample> memory, int batchSize = 0, int seed = 0) =>
        new(memory, Options.InnerSteps, Options.OuterSteps, _outerHooks, BeforeOuter, () => Merge(), batchSize, seed);

    /// <summary>Keeps θ after the round's inner steps (called before the outer steps).</summary>
    public void BeforeOuter()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _afterInner!.Refresh(_model);
    }

    /// <summary>
    /// The merge at the end of a round: masks from the two importances at their global thresholds,
    /// θ ← anchor + c_in ⊙ δ_in + c_out ⊙ δ_out for every tracked parameter (all fused values are
    /// computed and checked for NaN/Inf before any is written; on failure the model keeps its weights and
    /// <see cref="UnsafeFusionException"/> is thrown), then the anchor moves to θ and the inner
    /// importance is reset.
    /// </summary>
    public RecurrentMergeReport Merge()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_running) throw new InvalidOperationException("no task is running");
        var live = ParameterSnapshot.LiveParameters(_model);
        long both = 0, innerOnly = 0, outerOnly = 0, neither = 0;
        double tIn, tOut;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var sIn = _inner.ElementScores();
            var sOut = _outer.ElementScores();
            tIn = RecurrentMerge.TopThreshold(sIn.Values, Options.TopFraction);
            tOut = RecurrentMerge.TopThreshold(sOut.Values, Options.TopFraction);
            var pending = new List<(Tensor Parameter, Tensor Value)>(_names!.Length);
            foreach (var n in _names)
            {
                var p = live[n];
                var merged = RecurrentMerge.Merge(_anchor![n], _afterInner![n], p, sIn[n], sOut[n], tIn, tOut, Options.Table);
                var bad = merged.numel() - merged.isfinite().count_nonzero().item<long>();
                if (bad > 0) throw new UnsafeFusionException("recurrent-kif", n, n, $"{bad} of {merged.numel()} merged values are NaN or infinite");
                var counts = RecurrentMerge.Cells(sIn[n], sOut[n], tIn, tOut).reshape(-1).bincount(null, 4).data<long>().ToArray();
                neither += counts[0]; outerOnly += counts[1]; innerOnly += counts[2]; both += counts[3];
                pending.Add((p, merged));
            }
            foreach (var (p, v) in pending) p.copy_(v);
        }
        _anchor!.Refresh(_model);
        if (Options.ResetInnerAfterMerge) _inner.Reset();
        var report = new RecurrentMergeReport(_merges.Count + 1, tIn, tOut, both, innerOnly, outerOnly, neither);
        _merges.Add(report);
        return report;
    }

    /// <summary>Ends the task: the anchor moves to the model as it now is (after a best-validation restore, too).</summary>
    public void EndTask()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_running) throw new InvalidOperationException("no task is running");
        _anchor!.Refresh(_model);
        _running = false;
        TasksCompleted++;
    }

    /// <summary>Abandons the current task without touching the model.</summary>
    public void AbortTask() => _running = false;

    /// <summary>Name of the state file <see cref="SaveState"/> writes.</summary>
    public const string StateFile = "rkif-state.json";

    /// <summary>Name of the outer-importance file <see cref="SaveState"/> writes.</summary>
    public const string OuterFile = "rkif-outer.safetensors";

    /// <summary>
    /// Writes what the session carries between tasks into <paramref name="folder"/> (between tasks
    /// only, atomically): the task count, the tracked parameter names and the outer importance. The
    /// anchor is the model's weights at a task boundary (<see cref="EndTask"/> sets it so and
    /// <see cref="BeginTask"/> resets it from the model), so the model state saved beside it restores it.
    /// </summary>
    public void SaveState(string folder)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_running) throw new InvalidOperationException("save the state between tasks");
        Directory.CreateDirectory(folder);
        var json = new JsonObject
        {
            ["format"] = "klf-rkif-state/1",
            ["tasks"] = TasksCompleted,
            ["parameters"] = new JsonArray((_names ?? []).Select(n => (JsonNode)n).ToArray()),
        };
        Klf.Formats.AtomicFile.WriteAllText(Path.Combine(folder, StateFile), json.ToJsonString());
        if (_names is not null) _outer.Save(Path.Combine(folder, OuterFile));
    }

    /// <summary>
    /// Restores a state written by <see cref="SaveState"/> into a fresh session whose model holds the
    /// weights saved with it. Tracked names that differ from the model's trainable parameters are an
    /// <see cref="InvalidDataException"/> naming the file.
    /// </summary>
    public void RestoreState(string folder)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_running || TasksCompleted > 0) throw new InvalidOperationException("restore the state into a fresh session");
        var path = Path.Combine(folder, StateFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"no Recurrent-KIF state at {path}", path);
        JsonNode json;
        try { json = JsonNode.Parse(File.ReadAllText(path))!; }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}"); }
        var names = json["parameters"]?.AsArray().Select(n => (string)n!).ToArray() ?? throw new InvalidDataException($"{path}: no parameters");
        TasksCompleted = (int?)json["tasks"] ?? throw new InvalidDataException($"{path}: no task count");
        if (names.Length == 0) return;
        Fix();
        if (!names.SequenceEqual(_names!))
            throw new InvalidDataException($"{path}: the state tracks other parameters than the model's trainable ones ({names.Length} vs {_names!.Length})");
        _outer.Load(Path.Combine(folder, OuterFile));
    }

    /// <summary>Frees the trackers and snapshots.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _inner.Dispose();
        _outer.Dispose();
        _anchor?.Dispose();
        _afterInner?.Dispose();
    }

    private void Fix()
    {
        var trainable = _model.Module.named_parameters().Where(p => p.parameter.requires_grad).ToArray();
        if (trainable.Length == 0) throw new InvalidOperationException("the model has no trainable parameters for Recurrent-KIF");
        _names = trainable.Select(p => p.name).ToArray();
        _inner.Attach(_innerHooks, trainable.Select(p => (p.name, p.parameter)));
        _outer.Attach(_outerHooks, trainable.Select(p => (p.name, p.parameter)));
        _anchor = ParameterSnapshot.Take(_model, _names);
        _afterInner = ParameterSnapshot.Take(_model, _names);
    }
}
