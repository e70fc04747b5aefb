using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Adapters;
using Klf.Checkpoints;
using Klf.Formats;
using Klf.Fusion;
using Klf.Importance;
using Klf.Models;
using Klf.SkillUnits;
using Klf.Tokenizers;

namespace Klf.Kif;

/// <summary>
/// Offline KIF fusion of two saved models, the one before a task (θ̄_{k−1}) and the one after it (θ_k),
/// with their importance profiles, into a new folder: the step <see cref="KifSession.EndTask"/> takes
/// in memory (<see cref="KifStep.Fuse"/>), for models trained elsewhere or by <c>klf train --importance</c>.
/// Full models give a Klf checkpoint (manifest with the fusion record, tokenizer files,
/// <see cref="ImportanceFile"/>); LoRA adapters give a PEFT adapter folder with
/// <see cref="AdapterRecordFile"/> and <see cref="ImportanceFile"/>. <c>klf fuse</c> is this class
/// behind flags.
/// </summary>
public static class CheckpointFusion
{
    /// <summary>The accumulated importance profile Â_k in the output folder.</summary>
    public const string ImportanceFile = "importance.json";

    /// <summary>The fusion record of a fused LoRA adapter (a full model keeps it in its manifest).</summary>
    public const string AdapterRecordFile = "fusion.json";

    /// <summary>The record's name of each category, in the order records and summaries list them.</summary>
    public static IReadOnlyList<(UnitCategory Category, string Name)> CategoryNames { get; } =
        [(UnitCategory.Shared, "shared"), (UnitCategory.PreviousOnly, "previous_only"), (UnitCategory.CurrentOnly, "current_only"), (UnitCategory.Neither, "neither")];

    /// <summary>
    /// The partitioner both profiles were computed with; profiles of different partitioners are an
    /// <see cref="InvalidDataException"/> naming both files and partitioners.
    /// </summary>
    public static string RecordedPartitioner(string previousImportance, string currentImportance)
    {
        var (previous, _) = ImportanceProfile.ReadHeader(previousImportance);
        var (current, _) = ImportanceProfile.ReadHeader(currentImportance);
        if (previous != current)
            throw new InvalidDataException(
                $"the importance profiles use different skill units: {previousImportance} was computed with partitioner {previous}, {currentImportance} with {current}");
        return previous;
    }

    /// <summary>KIF's reference rule for a partitioner: the adaptive rule for LoRA rank-1 units (KIF-LoRA), the static rule otherwise.</summary>
    public static string DefaultRuleFor(string partitioner) =>
        partitioner == LoraRank1Partitioner.PartitionerName ? "kif-adaptive" : "kif-static";

    /// <summary>
    /// Fuses <see cref="CheckpointFusionRequest.Previous"/> and <see cref="CheckpointFusionRequest.Current"/>
    /// unit by unit and writes the output folder. Everything is checked before anything is written:
    /// folders of different kinds or architectures, profiles of another unit map, malformed profiles
    /// and non-finite scores are errors naming the file; a fusion that would produce NaN/Inf is refused
    /// (<see cref="UnsafeFusionException"/>). On any error no output folder exists.
    /// </summary>
    public static CheckpointFusionResult Run(CheckpointFusionRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var options = request.Options ?? throw new ArgumentException("the request has no options");
        static string Full(string p) => Path.GetFullPath(p).TrimEnd(Path.DirectorySeparatorChar);
        if (Full(request.Output) == Full(request.Previous) || Full(request.Output) == Full(request.Current))
            throw new ArgumentException($"{request.Output} would replace an input checkpoint: choose another output folder");
        if (!(options.TopFraction is >= 0.0 and <= 1.0)) throw new ArgumentException($"the top fraction must lie in [0, 1], got {options.TopFraction}");
        if (!(options.Gamma is >= 0.0 and <= 1.0)) throw new ArgumentException($"γ must lie in [0, 1], got {options.Gamma}");
        bool previousIsAdapter = IsAdapter(request.Previous), currentIsAdapter = IsAdapter(request.Current);
        if (previousIsAdapter != currentIsAdapter)
            throw new ArgumentException($"{request.Previous} and {request.Current} must both be model folders or both LoRA adapter folders");
        return currentIsAdapter ? FuseAdapters(request, options) : FuseModels(request, options);
    }

    /// <summary>
    /// λ per unit grouped by value (4 decimals, ascending) when there are at most 8 distinct values;
    /// null for a continuous λ (the adaptive rule) or a rule without a single λ (NaN).
    /// </summary>
    public static IReadOnlyList<(double Lambda, int Units)>? LambdaCounts(FusionReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var lambdas = report.Units.Select(u => u.Lambda).ToArray();
        if (lambdas.Any(double.IsNaN)) return null;
        var groups = lambdas.GroupBy(l => Math.Round(l, 4)).OrderBy(g => g.Key).Select(g => (g.Key, g.Count())).ToArray();
        return groups.Length > 8 ? null : groups;
    }

    /// <summary>The name of a normalisation scope in records and on the command line (global, layer, module-type).</summary>
    public static string ScopeName(NormalisationScope scope) => scope switch
    {
        NormalisationScope.Layer => "layer",
        NormalisationScope.ModuleType => "module-type",
        _ => "global",
    };

    private static CheckpointFusionResult FuseModels(CheckpointFusionRequest request, KifOptions options)
    {
        // θ̄_{k−1}: load, copy the units' parameters, free the model; then θ_k, fused in place.
        var previousModel = LoadChecked(request.Previous, request.Device);
        JsonObject previousConfig;
        SkillUnitMap previousMap;
        ParameterSnapshot snapshot;
        try
        {
            previousMap = options.Partitioner.Partition(previousModel);
            RequireUnits(previousMap, request.Previous);
            previousConfig = previousModel.ConfigJson();
            snapshot = ParameterSnapshot.Take(previousModel, UnitParameters(previousMap));
        }
        finally { previousModel.Dispose(); }
        using var _ = snapshot;
        using var model = LoadChecked(request.Current, request.Device);
        var differences = ConfigDifferences(previousConfig, model.ConfigJson());
        if (differences.Count > 0)
            throw new InvalidDataException($"{request.Current}: not the architecture of {request.Previous}: the model configs differ in {string.Join(", ", differences)}");
        var map = options.Partitioner.Partition(model);
        if (map.Fingerprint != previousMap.Fingerprint)
            throw new InvalidDataException($"{request.Current}: its skill units (map {map.Fingerprint}) differ from those of {request.Previous} (map {previousMap.Fingerprint})");
        var (categories, report, accumulated) = FuseInPlace(request, options, map, snapshot, model);
        var result = new CheckpointFusionResult(map, categories, report, accumulated, false, Path.GetFullPath(request.Output));
        var tmp = Directory.CreateTempSubdirectory("klf-fuse-");
        try
        {
            var profilePath = Path.Combine(tmp.FullName, ImportanceFile);
            accumulated.Save(profilePath);
            var tokenizerFiles = TokenizerLoader.FilesIn(request.Current);
            var tokenizer = tokenizerFiles.Count == 0 ? null : TokenizerLoader.FromFolder(request.Current);
            Checkpoint.Save(model, request.Output, Record(request, options, result, []), [.. tokenizerFiles, profilePath], tokenizer: tokenizer);
        }
        finally
        {
            try { tmp.Delete(true); } catch (IOException) { }
        }
        return result;
    }

    private static CheckpointFusionResult FuseAdapters(CheckpointFusionRequest request, KifOptions options)
    {
        // One base model: the previous adapter is loaded and copied, then the current one is loaded
        // over it and fused in place; the fused adapter is saved in PEFT layout.
        if (AdapterShape(request.Previous) != AdapterShape(request.Current))
            throw new InvalidDataException($"{request.Current}: adapter ({AdapterShape(request.Current)}) differs from {request.Previous} ({AdapterShape(request.Previous)})");
        var baseDir = request.BaseModel is { Length: > 0 } b ? b : RecordedBase(request.Current);
        using var model = LoadChecked(baseDir, request.Device);
        var lora = Lora.LoadAdapter(model.Module, request.Previous);
        var map = options.Partitioner.Partition(model);
        RequireUnits(map, request.Previous);
        using var snapshot = ParameterSnapshot.Take(model, UnitParameters(map));
        lora.LoadAdapter(request.Current, "default");
        var (categories, report, accumulated) = FuseInPlace(request, options, map, snapshot, model);
        var result = new CheckpointFusionResult(map, categories, report, accumulated, true, Path.GetFullPath(request.Output));
        var record = Record(request, options, result, [new("base", baseDir)]);
        var taskType = PeftAdapterConfig.TaskTypeOf(model.Family);
        AtomicFile.WriteFolder(request.Output, dir =>
        {
            lora.SaveAdapter(dir, "default", taskType, Path.GetFullPath(baseDir));
            foreach (var f in TokenizerLoader.FilesIn(request.Current)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            accumulated.Save(Path.Combine(dir, ImportanceFile));
            AtomicFile.WriteAllText(Path.Combine(dir, AdapterRecordFile), record.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
        return result;
    }

    /// <summary>KIF's step on the loaded model; the profiles are checked against the map before the model changes.</summary>
    private static (UnitCategory[], FusionReport, ImportanceProfile) FuseInPlace(
        CheckpointFusionRequest request, KifOptions options, SkillUnitMap map, ParameterSnapshot previousWeights, ILanguageModel model)
    {
        var (previousProfile, previousScores) = LoadProfile(request.PreviousImportance, map);
        var (currentProfile, currentScores) = LoadProfile(request.CurrentImportance, map);
        var step = KifStep.Fuse(model, previousWeights, null, map, previousScores, currentScores, options, request.Seed);
        var history = new[] { previousProfile, currentProfile }
            .SelectMany(p => Enumerable.Range(0, p.History.Count).Select(i => new TaskImportance(p.History[i].Task, p.HistoryAlignedTo(map, i))))
            .ToArray();
        return (step.Categories, step.Report, ImportanceProfile.FromMap(map, step.Accumulated, history));
    }

    /// <summary>A profile for <paramref name="map"/> with its scores aligned to it; every problem is an error naming the file.</summary>
    private static (ImportanceProfile, double[]) LoadProfile(string path, SkillUnitMap map)
    {
        try
        {
            var profile = ImportanceProfile.Load(path, map);
            var scores = profile.AlignTo(map);
            for (var i = 0; i < scores.Length; i++)
                if (!double.IsFinite(scores[i])) throw new InvalidDataException($"{path}: unit {map.Units[i].Id} has score {scores[i]}");
            return (profile, scores);
        }
        catch (Exception e) when (e is not (InvalidDataException or FileNotFoundException))
        {
            throw new InvalidDataException($"{path}: malformed importance profile ({e.Message})", e);
        }
    }

    /// <summary>The fusion record: settings, inputs, units per category, λ counts, the task history.</summary>
    private static JsonObject Record(CheckpointFusionRequest request, KifOptions options, CheckpointFusionResult result, IReadOnlyList<KeyValuePair<string, string>> moreInputs)
    {
        var r = result.Report;
        var fusion = new JsonObject { ["rule"] = r.Rule };
        if (options.Rule is KifAdaptiveRule adaptive) fusion["tau"] = adaptive.Temperature;
        if (request.RuleParameters.Count > 0)
            fusion["parameters"] = new JsonObject(request.RuleParameters.Select(p => new KeyValuePair<string, JsonNode?>(p.Key, p.Value)));
        fusion["normalisation"] = ScopeName(options.Normalisation);
        fusion["partitioner"] = result.Map.Partitioner;
        fusion["fingerprint"] = result.Map.Fingerprint;
        fusion["units"] = result.Map.Count;
        fusion["top_fraction"] = options.TopFraction;
        fusion["gamma"] = options.Gamma;
        fusion["seed"] = request.Seed;
        var inputs = new List<KeyValuePair<string, string>>
        {
            new("previous", request.Previous), new("current", request.Current),
            new("previous_importance", request.PreviousImportance), new("current_importance", request.CurrentImportance),
        };
        foreach (var (key, path) in inputs.Concat(moreInputs)) fusion[key] = Path.GetFullPath(path);
        fusion["categories"] = new JsonObject(CategoryNames.Select(c => new KeyValuePair<string, JsonNode?>(c.Name, r.CountOf(c.Category))));
        if (LambdaCounts(r) is { } counts)
            fusion["lambda_counts"] = new JsonObject(counts.Select(c => new KeyValuePair<string, JsonNode?>(c.Lambda.ToString("0.####", CultureInfo.InvariantCulture), c.Units)));
        fusion["elements"] = r.ElementCount;
        fusion["elapsed_ms"] = r.Elapsed.TotalMilliseconds;
        return new JsonObject
        {
            ["fusion"] = fusion,
            ["tasks"] = new JsonArray(result.Accumulated.History.Select(h => (JsonNode?)JsonValue.Create(h.Task)).ToArray()),
        };
    }

    /// <summary>Whether a folder holds a LoRA adapter (PEFT layout) rather than a model; errors name the folder.</summary>
    private static bool IsAdapter(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir}: folder not found");
        if (File.Exists(Path.Combine(dir, "config.json"))) return false;
        if (File.Exists(Path.Combine(dir, "adapter_config.json"))) return true;
        throw new FileNotFoundException($"{dir}: neither a model folder (config.json) nor a LoRA adapter folder (adapter_config.json)");
    }

    /// <summary>Loads a model folder, verifying the file hashes first when it is a Klf checkpoint (manifest.json).</summary>
    private static ILanguageModel LoadChecked(string dir, TorchSharp.torch.Device? device)
    {
        if (File.Exists(Path.Combine(dir, Checkpoint.ManifestFile))) Checkpoint.ReadManifest(dir);
        return ModelFolder.Load(dir, device);
    }

    /// <summary>The base model folder an adapter records (<c>base_model_name_or_path</c>), when that is a folder here.</summary>
    private static string RecordedBase(string adapterDir)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(adapterDir, "adapter_config.json")));
        return config?["base_model_name_or_path"] is JsonValue v && v.GetValueKind() == JsonValueKind.String && Directory.Exists(v.GetValue<string>())
            ? v.GetValue<string>()
            : throw new ArgumentException($"{adapterDir}: the adapter's base model is not a folder here: give the base model folder (klf fuse --base DIR)");
    }

    private static string[] UnitParameters(SkillUnitMap map) =>
        map.Units.SelectMany(u => u.Slices).Select(s => s.Parameter).Distinct().ToArray();

    private static void RequireUnits(SkillUnitMap map, string dir)
    {
        if (map.Count == 0)
            throw new ArgumentException($"{dir}: the partitioner {map.Partitioner} finds no skill units in this model (LoRA partitioners need LoRA adapters)");
    }

    /// <summary>A LoRA adapter's settings as text, to compare two adapters.</summary>
    private static string AdapterShape(string dir)
    {
        var c = LoraModel.ReadConfig(dir);
        var targets = c.TargetRegex ?? string.Join(",", c.EffectiveTargets);
        return $"r={c.R}, alpha={c.Alpha}, targets={targets}";
    }

    /// <summary>The top-level config fields in which two model configs differ, sorted.</summary>
    private static List<string> ConfigDifferences(JsonObject a, JsonObject b) =>
        a.Select(kv => kv.Key).Concat(b.Select(kv => kv.Key)).Distinct().Order(StringComparer.Ordinal)
            .Where(k => !JsonNode.DeepEquals(a[k], b[k])).ToList();
}
