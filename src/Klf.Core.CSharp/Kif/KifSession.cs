using Klf.Fusion;
using Klf.Importance;
using Klf.Models;
using Klf.SkillUnits;
using Klf.Training;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Klf.Kif;

/// <summary>What KIF identified and did after one task (plain data).</summary>
/// <param name="Task">The task's name.</param>
/// <param name="TaskIndex">1-based position in the sequence.</param>
/// <param name="RawScores">S_k: unit scores from the element scores Ī ⊙ Ū, aligned with the map.</param>
/// <param name="Normalised">Ŝ_k: normalised unit scores in [0,1].</param>
/// <param name="ImportantCurrent">Units in the top fraction of Ŝ_k.</param>
/// <param name="ImportantPrevious">Units in the top fraction of Â_{k−1}; null for the first task.</param>
/// <param name="Fusion">The fusion report; null for the first task (θ̄_1 = θ_1).</param>
/// <param name="Accumulated">Â_k after this task.</param>
/// <param name="StepsCounted">Optimizer steps whose gradients entered the importance.</param>
public sealed record KifTaskResult(string Task, int TaskIndex, double[] RawScores, double[] Normalised, bool[] ImportantCurrent,
    bool[]? ImportantPrevious, FusionReport? Fusion, double[] Accumulated, int StepsCounted);

/// <summary>
/// The KIF loop around any training: <see cref="BeginTask"/> snapshots θ̄_{k−1} and starts
/// importance tracking on the step hooks it returns; train with those hooks; <see cref="EndTask"/>
/// scores the skill units, normalises and classifies them, fuses θ̄_{k−1} with θ_k in place
/// (from the second task on) and accumulates importance. Owns the tracker's buffers and the
/// snapshots: dispose it when the sequence ends.
/// </summary>
public sealed class KifSession : IDisposable
{
    private readonly ILanguageModel _model;
    private readonly ImportanceTracker _tracker;
    private ParameterSnapshot? _previous;
    private ParameterSnapshot? _baseline;
    private StepHooks? _hooks;
    private string? _task;
    private bool _disposed;

    /// <summary>A session for <paramref name="model"/>; nothing is allocated until the first task begins.</summary>
    public KifSession(ILanguageModel model, KifOptions? options = null)
    {
        _model = model;
        History = _history.AsReadOnly();
        Options = options ?? KifOptions.FullFineTuning();
        Options.Importance.Validate();
        _tracker = new ImportanceTracker(Options.Importance);
    }

    /// <summary>The settings in use.</summary>
    public KifOptions Options { get; }

    /// <summary>The skill units, fixed when the first task begins (from the parameters trainable then).</summary>
    public SkillUnitMap? Map { get; private set; }

    /// <summary>Â after the last completed task (null before the first).</summary>
    public double[]? Accumulated { get; private set; }

    private readonly List<KifTaskResult> _history = new();

    /// <summary>Results of the completed tasks, in order (restored entries carry no fusion report).</summary>
    // A read-only view (a caller cannot cast it back to the list and change the record).
    public IReadOnlyList<KifTaskResult> History { get; }

    /// <summary>
    /// Starts task <paramref name="task"/>: fixes the unit map (first task), snapshots the units'
    /// parameters (θ̄_{k−1}), resets importance and attaches the tracker to <paramref name="hooks"/>
    /// (a new set when null). Returns the hooks to pass to the trainer.
    /// </summary>
    public StepHooks BeginTask(string task, StepHooks? hooks = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_task != null) throw new InvalidOperationException($"task '{_task}' has not ended");
        Map ??= Options.Partitioner.Partition(_model);
        if (Map.Count == 0) throw new InvalidOperationException("the model has no trainable parameters to form skill units");
        var names = Map.Units.SelectMany(u => u.Slices).Select(s => s.Parameter).Distinct().ToArray();
        if (Options.KeepBaseline && _baseline == null) _baseline = ParameterSnapshot.Take(_model, names);
        _previous?.Dispose();
        _previous = ParameterSnapshot.Take(_model, names);
        _tracker.Reset();
        _hooks = hooks ?? new StepHooks();
        _tracker.Attach(_hooks, _model.Module.named_parameters().Where(p => names.Contains(p.name)).Select(p => (p.name, p.parameter)));
        _task = task;
        return _hooks;
    }

    /// <summary>
    /// Ends the current task: Ŝ_k from the tracked importance; for k = 1, Â_1 = Ŝ_1 and the model is
    /// left as trained; for k &gt; 1 the model is fused in place with θ̄_{k−1} by the rule and
    /// Â_k = minmax(γ·Â_{k−1} + (1−γ)·Ŝ_k). A fusion that would produce NaN/Inf throws
    /// <see cref="UnsafeFusionException"/> and leaves the model as trained; call
    /// <see cref="AbortTask"/> before beginning another task.
    /// </summary>
    public KifTaskResult EndTask()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_task == null || Map == null || _previous == null || _hooks == null) throw new InvalidOperationException("no task has begun");
        _tracker.Detach();
        double[] raw;
        using (NewDisposeScope())
            raw = UnitScores.Compute(Map, _model, _tracker.ElementScores());
        var current = ImportanceMath.Normalise(Map, raw, Options.Normalisation);
        KifTaskResult result;
        if (Accumulated == null)
        {
            result = new KifTaskResult(_task, _history.Count + 1, raw, current, ImportanceMath.TopFraction(current, Options.TopFraction),
                null, null, current, _tracker.StepsCounted);
        }
        else
        {
            var step = KifStep.Fuse(_model, _previous, _baseline, Map, Accumulated, current, Options, Options.Seed + _history.Count);
            result = new KifTaskResult(_task, _history.Count + 1, raw, current, step.ImportantCurrent, step.ImportantPrevious,
                step.Report, step.Accumulated, _tracker.StepsCounted);
        }
        Accumulated = result.Accumulated;
        _history.Add(result);
        _previous.Dispose();
        _previous = null;
        _task = null;
        _hooks = null;
        return result;
    }

    /// <summary>
    /// Abandons the current task (e.g. training failed): detaches the tracker and drops the
    /// snapshot; no fusion, no accumulation. The model keeps whatever training did to it.
    /// </summary>
    public void AbortTask()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _tracker.Detach();
        _previous?.Dispose();
        _previous = null;
        _task = null;
        _hooks = null;
    }

    /// <summary>The accumulated importance as a profile keyed by unit id (with the map's fingerprint).</summary>
    public ImportanceProfile Profile() =>
        Map != null && Accumulated != null
            ? ImportanceProfile.FromMap(Map, Accumulated, History.Select(h => new TaskImportance(h.Task, h.Normalised)).ToList())
            : throw new InvalidOperationException("no task has been completed");

    /// <summary>Name of the state file <see cref="SaveState"/> writes.</summary>
    public const string StateFile = "kif-state.json";

    /// <summary>Name of the baseline snapshot file (only with <see cref="KifOptions.KeepBaseline"/>).</summary>
    public const string BaselineFile = "kif-baseline.safetensors";

    /// <summary>
    /// Writes what the session carries from one task to the next into <paramref name="folder"/>
    /// (between tasks only): the unit map's partitioner and fingerprint, every completed task's
    /// scores, categories, Â and step count (exact doubles), and the baseline snapshot when kept.
    /// Fusion reports are not stored. Files are written atomically.
    /// </summary>
    public void SaveState(string folder)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_task != null) throw new InvalidOperationException($"task '{_task}' is running; save the state between tasks");
        Directory.CreateDirectory(folder);
        static JsonArray Nums(IEnumerable<double> xs) => new(xs.Select(x => (JsonNode)x).ToArray());
        static JsonNode? Flags(bool[]? xs) => xs == null ? null : new JsonArray(xs.Select(x => (JsonNode)x).ToArray());
        var json = new JsonObject
        {
            ["format"] = "klf-kif-state/1",
            ["partitioner"] = Map?.Partitioner,
            ["fingerprint"] = Map?.Fingerprint,
            ["history"] = new JsonArray(History.Select(h => (JsonNode)new JsonObject
            {
                ["task"] = h.Task,
                ["index"] = h.TaskIndex,
                ["raw"] = Nums(h.RawScores),
                ["normalised"] = Nums(h.Normalised),
                ["importantCurrent"] = Flags(h.ImportantCurrent),
                ["importantPrevious"] = Flags(h.ImportantPrevious),
                ["accumulated"] = Nums(h.Accumulated),
                ["steps"] = h.StepsCounted,
            }).ToArray()),
        };
        Klf.Formats.AtomicFile.WriteAllText(Path.Combine(folder, StateFile), json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = false }));
        if (_baseline != null) _baseline.Save(Path.Combine(folder, BaselineFile));
    }

    /// <summary>
    /// Restores a state written by <see cref="SaveState"/> into a fresh session whose model already
    /// holds the weights saved with it: rebuilds the unit map from the model's trainable parameters,
    /// checks its fingerprint against the file's (a mismatch is an <see cref="InvalidDataException"/>
    /// naming the file and both fingerprints) and restores history, Â and the baseline. The next
    /// <see cref="BeginTask"/> continues as if the earlier tasks had run in this session (restored
    /// history entries carry no fusion report).
    /// </summary>
    public void RestoreState(string folder)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_task != null || _history.Count > 0) throw new InvalidOperationException("restore the state into a fresh session");
        var path = Path.Combine(folder, StateFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"no KIF state at {path}", path);
        JsonNode json;
        try { json = JsonNode.Parse(File.ReadAllText(path))!; }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}"); }
        var history = json["history"]?.AsArray() ?? throw new InvalidDataException($"{path}: no history");
        if (history.Count == 0) return;
        var map = Options.Partitioner.Partition(_model);
        var stored = (string?)json["fingerprint"];
        if (stored != map.Fingerprint)
            throw new InvalidDataException($"{path}: skill-unit map fingerprint {stored} does not match the model's {map.Fingerprint} (partitioner {map.Partitioner})");
        double[] Nums(JsonNode? n, string what) =>
            n?.AsArray().Select(x => (double)x!).ToArray() is { } a && a.Length == map.Count ? a
                : throw new InvalidDataException($"{path}: {what} must hold {map.Count} numbers");
        bool[]? Flags(JsonNode? n) => n?.AsArray().Select(x => (bool)x!).ToArray();
        foreach (var h in history)
        {
            var task = (string?)h!["task"] ?? throw new InvalidDataException($"{path}: a history entry has no task");
            _history.Add(new KifTaskResult(task, (int)h["index"]!, Nums(h["raw"], $"{task}.raw"), Nums(h["normalised"], $"{task}.normalised"),
                Flags(h["importantCurrent"]) ?? throw new InvalidDataException($"{path}: {task} has no importantCurrent"),
                Flags(h["importantPrevious"]), null, Nums(h["accumulated"], $"{task}.accumulated"), (int)h["steps"]!));
        }
        Map = map;
        Accumulated = _history[^1].Accumulated;
        var baseline = Path.Combine(folder, BaselineFile);
        if (Options.KeepBaseline)
        {
            if (!File.Exists(baseline)) throw new FileNotFoundException($"{folder}: the options keep a baseline but {BaselineFile} is missing", baseline);
            _baseline = ParameterSnapshot.Load(baseline, Trainer.DeviceOf(_model));
        }
    }

    /// <summary>Frees the tracker buffers and snapshots.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _tracker.Dispose();
        _previous?.Dispose();
        _baseline?.Dispose();
    }
}
