using Klf.Formats;
using System.Text.Json.Nodes;
using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>
/// A strict-load failure: the checkpoint's keys do not match the model's. Lists every missing
/// key (in the model, not in the files), unexpected key (in the files, not in the model) and
/// shape mismatch.
/// </summary>
public sealed class CheckpointMismatchException(string source, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> shapeMismatches)
    : Exception(Format(source, missing, unexpected, shapeMismatches))
{
    /// <summary>Model keys the checkpoint lacks.</summary>
    public IReadOnlyList<string> Missing { get; } = missing;
    /// <summary>Checkpoint keys the model does not have.</summary>
    public IReadOnlyList<string> Unexpected { get; } = unexpected;
    /// <summary>Keys present in both with different shapes, as "key: checkpoint [..] vs model [..]".</summary>
    public IReadOnlyList<string> ShapeMismatches { get; } = shapeMismatches;

    private static string Format(string source, IReadOnlyList<string> m, IReadOnlyList<string> u, IReadOnlyList<string> s)
    {
        var lines = new List<string> { $"{source}: checkpoint does not match the model ({m.Count} missing, {u.Count} unexpected, {s.Count} with another shape)." };
        if (m.Count > 0) lines.Add("Missing keys: " + string.Join(", ", m));
        if (u.Count > 0) lines.Add("Unexpected keys: " + string.Join(", ", u));
        if (s.Count > 0) lines.Add("Shape mismatches: " + string.Join("; ", s));
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>
/// Hugging Face weight folders: <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>. Loads strictly into a model's own parameters (in place,
/// under no_grad, converting floating dtypes) and saves in the same layout.
/// </summary>
public static class HfWeights
{
    /// <summary>The single-file weights name.</summary>
    public const string SingleFile = "model.safetensors";
    /// <summary>The shard index name.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>
    /// Checkpoint keys that Hugging Face itself ignores on load, per <c>model_type</c>: LLaMA
    /// checkpoints written before transformers 4.31 carry the RoPE buffer
    /// <c>model.layers.N.self_attn.rotary_emb.inv_freq</c> (recomputed, not learned); some T5
    /// checkpoints carry an unused decoder cross-attention position bias; BERT checkpoints carry a pooler
    /// that sentence encoders do not use, and older ones the <c>embeddings.position_ids</c> buffer.
    /// </summary>
    public static IReadOnlyDictionary<string, System.Text.RegularExpressions.Regex> IgnoredKeys { get; } =
        new Dictionary<string, System.Text.RegularExpressions.Regex>
        {
            ["llama"] = new(@"\.rotary_emb\.inv_freq$"),
            ["t5"] = new(@"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$"),
            // The pooler (first token, dense, tanh) of BERT checkpoints: sentence embeddings do not use it;
            // position_ids is a buffer older checkpoints saved.
            ["bert"] = new(@"^(pooler\.dense\.(weight|bias)|embeddings\.position_ids)$"),
        };

    /// <summary>Whether a checkpoint key is neither the model's nor an alias but one HF ignores (see <see cref="IgnoredKeys"/>).</summary>
    public static bool IsIgnored(ILanguageModel model, string key) =>
        IgnoredKeys.TryGetValue(model.ModelType, out var rx) && rx.IsMatch(key);

    /// <summary>
    /// The weight files of a folder and which keys each holds (null = all keys of a single file).
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither weights layout is present; names the folder and the files looked for.</exception>
    public static IReadOnlyList<string> WeightFiles(string folder)
    {
        var single = Path.Combine(folder, SingleFile);
        var index = Path.Combine(folder, IndexFile);
        if (File.Exists(index))
        {
            JsonObject map;
            try { map = JsonNode.Parse(File.ReadAllText(index))!["weight_map"]!.AsObject(); }
            catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException)
            {
                throw new InvalidDataException($"{index}: not a valid shard index (expected an object with a \"weight_map\" of key → file)");
            }
            var files = map.Select(kv => kv.Value!.GetValue<string>()).Distinct().ToList();
            foreach (var f in files)
                if (!File.Exists(Path.Combine(folder, f)))
                    throw new FileNotFoundException($"{index}: lists shard '{f}', which is not in {folder}");
            return files.Select(f => Path.Combine(folder, f)).ToList();
        }
        if (File.Exists(single)) return [single];
        throw new FileNotFoundException($"{folder}: no weights found (looked for {SingleFile} and {IndexFile})");
    }

    /// <summary>
    /// The model's own checkpoint entries: parameters and persistent buffers by their full names,
    /// without LoRA adapter matrices (those are saved as PEFT adapters by
    /// <see cref="Klf.Adapters.LoraModel.SaveAdapter"/>; a merged adapter is part of the base weights).
    /// The tensors are the live ones (not copies); do not dispose them.
    /// </summary>
    public static Dictionary<string, Tensor> LiveStateDict(ILanguageModel model) =>
        model.Module.state_dict().Where(kv => !Klf.Adapters.Lora.IsLoraPath(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);

    /// <summary>
    /// Loads the weights of <paramref name="folder"/> into <paramref name="model"/> in place.
    /// With <paramref name="strict"/>, any missing or unexpected key or shape mismatch throws a
    /// <see cref="CheckpointMismatchException"/> before any parameter is changed; tied aliases
    /// (<see cref="ILanguageModel.TiedAliases"/>) may be present or absent, and keys HF ignores
    /// (<see cref="IgnoredKeys"/>) are skipped. Floating values are
    /// converted to each parameter's dtype. Returns the keys that were loaded.
    /// </summary>
    public static IReadOnlyList<string> LoadInto(ILanguageModel model, string folder, bool strict = true)
    {
        var live = LiveStateDict(model);
        var files = WeightFiles(folder);
        Match(model, folder, strict); // every header first, so a bad checkpoint changes nothing
        var loaded = new List<string>();
        using var _ = torch.no_grad();
        foreach (var f in files)
        {
            var tensors = SafeTensors.Load(f, k => live.ContainsKey(k));
            try
            {
                foreach (var (k, src) in tensors)
                {
                    live[k].copy_(src);
                    loaded.Add(k);
                }
            }
            finally
            {
                foreach (var t in tensors.Values) t.Dispose();
            }
        }
        return loaded;
    }

    /// <summary>
    /// Where each of <paramref name="model"/>'s checkpoint entries (<see cref="LiveStateDict"/>) lives
    /// in the weight files of <paramref name="folder"/>, read from the headers only: the file and its
    /// header entry. The checks of <see cref="LoadInto"/>: a shape mismatch, and with
    /// <paramref name="strict"/> a missing or unexpected key, is a <see cref="CheckpointMismatchException"/>.
    /// The model may live on the meta device (no storage): only names and shapes are read.
    /// </summary>
    public static IReadOnlyDictionary<string, (string File, SafeTensorInfo Info)> Match(ILanguageModel model, string folder, bool strict = true)
    {
        var live = LiveStateDict(model);
        var found = new Dictionary<string, (string File, SafeTensorInfo Info)>();
        foreach (var f in WeightFiles(folder))
            foreach (var info in SafeTensors.ReadHeader(f).Tensors)
                found[info.Name] = (f, info);
        var missing = live.Keys.Where(k => !found.ContainsKey(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var unexpected = found.Keys.Where(k => !live.ContainsKey(k) && !model.TiedAliases.ContainsKey(k) && !IsIgnored(model, k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var shapes = found.Values.Where(e => live.TryGetValue(e.Info.Name, out var t) && !t.shape.SequenceEqual(e.Info.Shape))
            .Select(e => $"{e.Info.Name}: checkpoint [{string.Join(",", e.Info.Shape)}] vs model [{string.Join(",", live[e.Info.Name].shape)}]").ToList();
        if (shapes.Count > 0 || (strict && (missing.Count > 0 || unexpected.Count > 0)))
            throw new CheckpointMismatchException(folder, missing, unexpected, shapes);
        return found.Where(kv => live.ContainsKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
    }

    /// <summary>The names of <paramref name="model"/>'s checkpoint entries in the order <see cref="SaveStreamed"/> asks for them (ordinal).</summary>
    public static IReadOnlyList<string> EntryOrder(ILanguageModel model) =>
        LiveStateDict(model).Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>
    /// Saves a model's checkpoint entries in the layout of <see cref="Save"/>, pulling each tensor
    /// from <paramref name="tensorOf"/> when its turn comes (it is written and disposed at once), so
    /// a model larger than memory can be written: <paramref name="model"/> only gives the names,
    /// shapes, dtypes and config (it may live on the meta device).
    /// </summary>
    public static void SaveStreamed(ILanguageModel model, string folder, Func<string, Tensor> tensorOf, long? maxShardBytes = null)
    {
        Directory.CreateDirectory(folder);
        var live = LiveStateDict(model);
        var entries = EntryOrder(model)
            .Select(name => (Name: name, Type: live[name].dtype, Shape: live[name].shape, Bytes: live[name].numel() * live[name].ElementSize)).ToList();
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        var shards = new List<List<(string Name, ScalarType Type, long[] Shape, long Bytes)>> { new() };
        long size = 0;
        foreach (var e in entries)
        {
            if (maxShardBytes is { } max && size > 0 && size + e.Bytes > max) { shards.Add([]); size = 0; }
            shards[^1].Add(e);
            size += e.Bytes;
        }
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), model.ConfigJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        void Write(string file, List<(string Name, ScalarType Type, long[] Shape, long Bytes)> shard) =>
            SafeTensors.SaveStreamed(file, shard.Select(e => (e.Name, e.Type, e.Shape)).ToList(), i => tensorOf(shard[i].Name), meta);
        if (shards.Count == 1)
        {
            Write(Path.Combine(folder, SingleFile), shards[0]);
            File.Delete(Path.Combine(folder, IndexFile));
            return;
        }
        var weightMap = new JsonObject();
        long total = 0;
        for (var i = 0; i < shards.Count; i++)
        {
            var name = $"model-{i + 1:00000}-of-{shards.Count:00000}.safetensors";
            Write(Path.Combine(folder, name), shards[i]);
            foreach (var e in shards[i]) { weightMap[e.Name] = name; total += e.Bytes; }
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = weightMap };
        AtomicFile.WriteAllText(Path.Combine(folder, IndexFile), index.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        File.Delete(Path.Combine(folder, SingleFile));
    }

    /// <summary>
    /// Saves the model's parameters and persistent buffers to <paramref name="folder"/> in Hugging
    /// Face layout: <c>model.safetensors</c>, or shards of at most <paramref name="maxShardBytes"/>
    /// with an index, plus <c>config.json</c>. Every file is written atomically. Tied aliases are not
    /// written (as <c>save_pretrained</c> does). Stale weight files of the other layout are removed.
    /// </summary>
    public static void Save(ILanguageModel model, string folder, long? maxShardBytes = null)
    {
        var live = LiveStateDict(model);
        SaveStreamed(model, folder, name => live[name].alias(), maxShardBytes);
    }
}
