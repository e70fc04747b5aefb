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
/// Neither model is loaded whole: a skeleton on the meta device gives the units, and the checkpoint is
/// fused tensor by tensor (read from both folders' shards, fused, written, freed), so the peak memory
/// is a few times the largest tensor and a checkpoint larger than memory fuses; the values are those
/// of the in-memory step, bit for bit.
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
        // Tensor by tensor: the models are never loaded. A skeleton of the current model on the meta
        // device (no storage) gives the unit map, the checkpoint entries and the config; each entry
        // is read from both folders when its turn comes, fused in memory, written and freed.
        var previousConfig = ReadConfig(request.Previous);
        var currentConfig = ReadConfig(request.Current);
        var differences = ConfigDifferences(previousConfig, currentConfig);
        if (differences.Count > 0)
            throw new InvalidDataException($"{request.Current}: not the architecture of {request.Previous}: the model configs differ in {string.Join(", ", differences)}");
        VerifyManifest(request.Previous);
        VerifyManifest(request.Current);
        using var skeleton = LanguageModels.FromConfig(currentConfig, Path.Combine(request.Current, "config.json"), TorchSharp.torch.META);
        var map = options.Partitioner.Partition(skeleton);
        RequireUnits(map, request.Previous);
        var previousEntries = HfWeights.Match(skeleton, request.Previous);
        var currentEntries = HfWeights.Match(skeleton, request.Current);
        var (previousProfile, previousScores) = LoadProfile(request.PreviousImportance, map);
        var (currentProfile, currentScores) = LoadProfile(request.CurrentImportance, map);
        var (_, _, categories, accumulatedScores) = KifStep.Plan(map, previousScores, currentScores, options);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (reports, slicesOf) = Units(map, previousScores, currentScores, categories, options.Rule, request.Seed);
        var state = HfWeights.LiveStateDict(skeleton);
        var device = request.Device ?? TorchSharp.torch.CPU;
        long elements = 0;
        // One open reader per shard: the kernel then sees each file as one sequential stream. Entries
        // are read into reused buffers, one per dtype, role (θ_k, θ̄_{k−1}) and prefetch slot, as large
        // as the largest entry of that dtype: fresh allocations would cost a page fault per page each.
        var readers = new Dictionary<string, SafeTensorsReader>();
        var buffers = new Dictionary<(string DType, int Role, int Slot), TorchSharp.torch.Tensor>();
        var largest = currentEntries.Values.Concat(previousEntries.Values).GroupBy(e => e.Info.DType)
            .ToDictionary(g => g.Key, g => g.Max(e => e.Info.Shape.Aggregate(1L, (a, b) => a * b)));
        TorchSharp.torch.Tensor Read((string File, SafeTensorInfo Info) entry, string name, int role, int slot)
        {
            SafeTensorsReader file;
            TorchSharp.torch.Tensor buffer;
            lock (readers)
            {
                if (!readers.TryGetValue(entry.File, out file!)) readers[entry.File] = file = new SafeTensorsReader(entry.File);
                if (!buffers.TryGetValue((entry.Info.DType, role, slot), out buffer!))
                    buffers[(entry.Info.DType, role, slot)] = buffer =
                        TorchSharp.torch.empty(largest[entry.Info.DType], SafeTensors.FromName(entry.Info.DType, entry.File).Type)
                            .DetachFromDisposeScope();   // the first read may run inside the writer's per-entry scope
            }
            using var raw = file.Read(entry.Info, buffer);
            return raw.to(state[name].dtype, device);   // as loading the folder into the model would
        }
        // θ_k's tensor, and θ̄_{k−1}'s when the entry is fused; the next entry's are read meanwhile.
        using var reader = new TensorPrefetcher(HfWeights.EntryOrder(skeleton), (name, slot) =>
        {
            var current = Read(currentEntries[name], name, 0, slot);
            if (!slicesOf.ContainsKey(name)) return [current];
            try { return [current, Read(previousEntries[name], name, 1, slot)]; }
            catch { current.Dispose(); throw; }
        });
        TorchSharp.torch.Tensor Fused(string name)
        {
            var pair = reader.Take(name);
            var current = pair[0];
            if (pair.Length == 1) return current;
            using var previous = pair[1];
            try
            {
                elements += TensorFusion.Fuse(options.Rule, current, previous, null, slicesOf[name]);
                return current;
            }
            catch
            {
                current.Dispose();
                throw;
            }
        }

        var history = History(map, previousProfile, currentProfile);
        var accumulated = ImportanceProfile.FromMap(map, accumulatedScores, history);
        var tmp = Directory.CreateTempSubdirectory("klf-fuse-");
        try
        {
            var profilePath = Path.Combine(tmp.FullName, ImportanceFile);
            accumulated.Save(profilePath);
            var tokenizerFiles = TokenizerLoader.FilesIn(request.Current);
            var tokenizer = tokenizerFiles.Count == 0 ? null : TokenizerLoader.FromFolder(request.Current);
            CheckpointFusionResult? result = null;
            Checkpoint.SaveStreamed(skeleton, request.Output, Fused, () =>
            {
                // Every weight is fused and written: the report and the record are complete.
                var report = FusionReport.Of(options.Rule.Name, reports, elements, clock.Elapsed);
                result = new CheckpointFusionResult(map, categories, report, accumulated, false, Path.GetFullPath(request.Output));
                return Record(request, options, result, []);
            }, [.. tokenizerFiles, profilePath], MaxShardBytes(request.Current), tokenizer);
            return result!;
        }
        finally
        {
            reader.Dispose();
            foreach (var r in readers.Values) r.Dispose();
            foreach (var b in buffers.Values) b.Dispose();
            try { tmp.Delete(true); } catch (IOException) { }
        }
    }

    private static CheckpointFusionResult FuseAdapters(CheckpointFusionRequest request, KifOptions options)
    {
        // The base model is never loaded: a skeleton on the meta device carries the adapter's modules,
        // which give the unit map and check both adapter files' keys and shapes; the adapters' own
        // tensors (small) are read, fused in memory and saved in PEFT layout.
        if (AdapterShape(request.Previous) != AdapterShape(request.Current))
            throw new InvalidDataException($"{request.Current}: adapter ({AdapterShape(request.Current)}) differs from {request.Previous} ({AdapterShape(request.Previous)})");
        var baseDir = request.BaseModel is { Length: > 0 } b ? b : RecordedBase(request.Current);
        using var skeleton = LanguageModels.FromConfig(ReadConfig(baseDir), Path.Combine(baseDir, "config.json"), TorchSharp.torch.META);
        var lora = Lora.LoadAdapter(skeleton.Module, request.Previous);
        lora.LoadAdapter(request.Current, "default");
        var map = options.Partitioner.Partition(skeleton);
        RequireUnits(map, request.Previous);
        var (previousProfile, previousScores) = LoadProfile(request.PreviousImportance, map);
        var (currentProfile, currentScores) = LoadProfile(request.CurrentImportance, map);
        var (_, _, categories, accumulatedScores) = KifStep.Plan(map, previousScores, currentScores, options);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (reports, slicesOf) = Units(map, previousScores, currentScores, categories, options.Rule, request.Seed);

        // Memory key of each adapter matrix → its key in the PEFT file.
        var fileKey = lora.ModulesOf("default")
            .SelectMany(m => new[] { "lora_A", "lora_B" }.Select(x => (Memory: Lora.MemoryKey(m.Path, x, "default"), File: Lora.FileKey(m.Path, x))))
            .ToDictionary(k => k.Memory, k => k.File);
        var state = skeleton.Module.named_parameters().ToDictionary(p => p.name, p => p.parameter.dtype);
        var previous = SafeTensors.Load(Path.Combine(request.Previous, "adapter_model.safetensors"));
        var current = SafeTensors.Load(Path.Combine(request.Current, "adapter_model.safetensors"));
        try
        {
            var fused = current.ToDictionary(kv => kv.Key, kv => kv.Value);
            long elements = 0;
            foreach (var (name, slices) in slicesOf)
            {
                var key = fileKey.TryGetValue(name, out var k) ? k : throw new InvalidDataException($"{request.Current}: unit parameter {name} is not an adapter matrix");
                var cur = current[key].to(state[name], request.Device ?? TorchSharp.torch.CPU);
                using var prev = previous[key].to(state[name], request.Device ?? TorchSharp.torch.CPU);
                elements += TensorFusion.Fuse(options.Rule, cur, prev, null, slices);
                fused[key] = cur;
            }
            var report = FusionReport.Of(options.Rule.Name, reports, elements, clock.Elapsed);
            var history = History(map, previousProfile, currentProfile);
            var accumulated = ImportanceProfile.FromMap(map, accumulatedScores, history);
            var result = new CheckpointFusionResult(map, categories, report, accumulated, true, Path.GetFullPath(request.Output));
            var record = Record(request, options, result, [new("base", baseDir)]);
            var adapterConfig = PeftAdapterConfig.ToJson(LoraModel.ReadConfig(request.Previous), PeftAdapterConfig.TaskTypeOf(skeleton.Family), Path.GetFullPath(baseDir));
            AtomicFile.WriteFolder(request.Output, dir =>
            {
                SafeTensors.Save(Path.Combine(dir, "adapter_model.safetensors"), fused, new Dictionary<string, string> { ["format"] = "pt" });
                AtomicFile.WriteAllText(Path.Combine(dir, "adapter_config.json"), adapterConfig.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                foreach (var f in TokenizerLoader.FilesIn(request.Current)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
                accumulated.Save(Path.Combine(dir, ImportanceFile));
                AtomicFile.WriteAllText(Path.Combine(dir, AdapterRecordFile), record.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            });
            foreach (var (key, t) in fused) if (!ReferenceEquals(t, current[key])) t.Dispose();
            return result;
        }
        finally
        {
            foreach (var t in previous.Values) t.Dispose();
            foreach (var t in current.Values) t.Dispose();
        }
    }

    /// <summary>Each unit's report entry and, per parameter, the slices to fuse with their contexts and λ.</summary>
    private static (UnitFusionReport[] Reports, Dictionary<string, List<SliceToFuse>> SlicesOf) Units(
        SkillUnitMap map, double[] previousScores, double[] currentScores, UnitCategory[] categories, IFusionRule rule, long seed)
    {
        var reports = new UnitFusionReport[map.Count];
        var slicesOf = new Dictionary<string, List<SliceToFuse>>();
        for (var i = 0; i < map.Count; i++)
        {
            var unit = map.Units[i];
            var context = new UnitFusionContext(unit, previousScores[i], currentScores[i], categories[i], ModelFusion.UnitSeed(seed, unit.Id));
            var lambda = rule.LambdaFor(context);
            reports[i] = new UnitFusionReport(unit.Id, categories[i], lambda, previousScores[i], currentScores[i]);
            foreach (var slice in unit.Slices)
            {
                if (!slicesOf.TryGetValue(slice.Parameter, out var list)) slicesOf[slice.Parameter] = list = new();
                list.Add(new SliceToFuse(unit, slice, context, lambda));
            }
        }
        return (reports, slicesOf);
    }

    /// <summary>Both profiles' task histories, aligned with the map.</summary>
    private static TaskImportance[] History(SkillUnitMap map, ImportanceProfile previous, ImportanceProfile current) =>
        new[] { previous, current }
            .SelectMany(p => Enumerable.Range(0, p.History.Count).Select(i => new TaskImportance(p.History[i].Task, p.HistoryAlignedTo(map, i))))
            .ToArray();

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

    /// <summary>A model folder's config.json; errors name the file.</summary>
    private static JsonObject ReadConfig(string dir)
    {
        var path = Path.Combine(dir, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{dir}: no config.json in the model folder", path);
        try { return JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException($"{path}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message})"); }
    }

    /// <summary>A Klf checkpoint's files are checked against its manifest's hashes; other folders pass.</summary>
    private static void VerifyManifest(string dir)
    {
        if (File.Exists(Path.Combine(dir, Checkpoint.ManifestFile))) Checkpoint.ReadManifest(dir);
    }

    /// <summary>Shards of the output: as large as the current model's largest shard when it is sharded, else one file.</summary>
    private static long? MaxShardBytes(string dir)
    {
        var files = HfWeights.WeightFiles(dir);
        return files.Count > 1 ? files.Max(f => new FileInfo(f).Length) : null;
    }

    /// <summary>Whether a folder holds a LoRA adapter (PEFT layout) rather than a model; errors name the folder.</summary>
    private static bool IsAdapter(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir}: folder not found");
        if (File.Exists(Path.Combine(dir, "config.json"))) return false;
        if (File.Exists(Path.Combine(dir, "adapter_config.json"))) return true;
        throw new FileNotFoundException($"{dir}: neither a model folder (config.json) nor a LoRA adapter folder (adapter_config.json)");
    }

    /// <summary>The base model folder an adapter records (<c>base_model_name_or_path</c>), when that is a folder here.</summary>
    private static string RecordedBase(string adapterDir)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(adapterDir, "adapter_config.json")));
        return config?["base_model_name_or_path"] is JsonValue v && v.GetValueKind() == JsonValueKind.String && Directory.Exists(v.GetValue<string>())
            ? v.GetValue<string>()
            : throw new ArgumentException($"{adapterDir}: the adapter's base model is not a folder here: give the base model folder (klf fuse --base DIR)");
    }

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
