using Klf.Formats;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Models;

namespace Klf.Checkpoints;

/// <summary>What a checkpoint's <c>manifest.json</c> records.</summary>
/// <param name="Format">Manifest format tag, <c>klf-checkpoint/1</c>.</param>
/// <param name="ModelType">The HF <c>model_type</c> of the saved model.</param>
/// <param name="CreatedUtc">When the checkpoint was written (ISO 8601, UTC).</param>
/// <param name="Files">Each file of the checkpoint (relative name) with its SHA-256 (hex, lower case).</param>
/// <param name="Extra">Caller data: step, task, metrics, RNG state — any JSON.</param>
public sealed record CheckpointManifest(string Format, string ModelType, string CreatedUtc, IReadOnlyDictionary<string, string> Files, JsonObject Extra);

/// <summary>
/// Training checkpoints: a folder in Hugging Face layout (<c>config.json</c>, safetensors weights)
/// plus <c>manifest.json</c> with file hashes and caller data. The whole folder is written
/// atomically: it appears complete or not at all, and an older checkpoint at that path is replaced
/// only once the new one is complete.
/// </summary>
public static class Checkpoint
{
    /// <summary>The manifest file name.</summary>
    public const string ManifestFile = "manifest.json";
    /// <summary>The manifest format tag this version writes and reads.</summary>
    public const string FormatTag = "klf-checkpoint/1";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>
    /// Saves <paramref name="model"/> to <paramref name="folder"/> with a manifest holding
    /// <paramref name="extra"/>. Files named in <paramref name="alsoCopy"/> (e.g. tokenizer files)
    /// are copied in. With <paramref name="tokenizer"/>, the folder also gets the Hugging Face files
    /// <see cref="HfFolderFiles.Write"/> makes (generation_config.json; tokenizer_config.json and
    /// special_tokens_map.json when the copied files lack them), so other tools load it. A sentence encoder also
    /// gets sentence-transformers' pooling files (<see cref="SentenceTransformersFiles.Write"/>). Returns the manifest written.
    /// </summary>
    public static CheckpointManifest Save(ILanguageModel model, string folder, JsonObject? extra = null, IEnumerable<string>? alsoCopy = null, long? maxShardBytes = null, Klf.Tokenizers.ITextTokenizer? tokenizer = null) =>
        Write(model, folder, tmp => HfWeights.Save(model, tmp, maxShardBytes), () => extra, alsoCopy, tokenizer);

    /// <summary>
    /// <see cref="Save"/> for a model that is not in memory: <paramref name="model"/> gives names,
    /// shapes, dtypes and config (it may live on the meta device) and <paramref name="tensorOf"/> each
    /// checkpoint entry when its turn comes (see <see cref="HfWeights.SaveStreamed"/>); the manifest's
    /// caller data comes from <paramref name="extra"/>, asked once every weight is written (so it can
    /// report on them). Atomic like Save: an exception leaves no folder.
    /// </summary>
    public static CheckpointManifest SaveStreamed(ILanguageModel model, string folder, Func<string, TorchSharp.torch.Tensor> tensorOf, Func<JsonObject?> extra,
        IEnumerable<string>? alsoCopy = null, long? maxShardBytes = null, Klf.Tokenizers.ITextTokenizer? tokenizer = null) =>
        Write(model, folder, tmp => HfWeights.SaveStreamed(model, tmp, tensorOf, maxShardBytes), extra, alsoCopy, tokenizer);

    private static CheckpointManifest Write(ILanguageModel model, string folder, Action<string> weights, Func<JsonObject?> extraData, IEnumerable<string>? alsoCopy, Klf.Tokenizers.ITextTokenizer? tokenizer)
    {
        CheckpointManifest? manifest = null;
        AtomicFile.WriteFolder(folder, tmp =>
        {
            weights(tmp);
            var extra = extraData();
            foreach (var f in alsoCopy ?? [])
                File.Copy(f, Path.Combine(tmp, Path.GetFileName(f)), overwrite: true);
            if (tokenizer is not null) HfFolderFiles.Write(tmp, model, tokenizer);
            if (model is Klf.Models.Bert.BertSentenceEncoder encoder) SentenceTransformersFiles.Write(tmp, encoder);
            // Shards hash in parallel: SHA-256 runs at about 1.5 GB/s per core, slower than the disk.
            // Files in subfolders (sentence-transformers' 1_Pooling/config.json) are listed by relative path.
            var names = Directory.GetFiles(tmp, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(tmp, f).Replace('\\', '/'))
                .Order(StringComparer.Ordinal).ToList();
            var hashes = names.AsParallel().AsOrdered().Select(f => Sha256(Path.Combine(tmp, f))).ToList();
            var files = names.Zip(hashes).ToDictionary(x => x.First, x => x.Second);
            manifest = new CheckpointManifest(FormatTag, model.ModelType, DateTime.UtcNow.ToString("O"), files, extra?.DeepClone().AsObject() ?? new JsonObject());
            AtomicFile.WriteAllText(Path.Combine(tmp, ManifestFile), ToJson(manifest).ToJsonString(Indented));
        });
        return manifest!;
    }

    /// <summary>
    /// Reads and verifies a checkpoint's manifest: format tag, every listed file present with the
    /// recorded SHA-256. Errors name the folder and the file at fault.
    /// </summary>
    public static CheckpointManifest ReadManifest(string folder, bool verifyHashes = true)
    {
        var path = Path.Combine(folder, ManifestFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{folder}: not a Klf checkpoint (no {ManifestFile})", path);
        CheckpointManifest m;
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            m = new CheckpointManifest(
                o["format"]!.GetValue<string>(), o["model_type"]!.GetValue<string>(), o["created_utc"]!.GetValue<string>(),
                o["files"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<string>()),
                o["extra"]?.AsObject().DeepClone().AsObject() ?? new JsonObject());
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: malformed checkpoint manifest ({e.Message})");
        }
        if (m.Format != FormatTag) throw new InvalidDataException($"{path}: unknown checkpoint format '{m.Format}' (expected {FormatTag})");
        if (verifyHashes)
        {
            foreach (var file in m.Files.Keys)
            {
                var p = Path.Combine(folder, file);
                if (!File.Exists(p)) throw new FileNotFoundException($"{folder}: checkpoint file '{file}' listed in {ManifestFile} is missing", p);
            }
            var listed = m.Files.ToList();
            var actual = listed.AsParallel().AsOrdered().Select(kv => Sha256(Path.Combine(folder, kv.Key))).ToList();
            for (var i = 0; i < listed.Count; i++)
                if (actual[i] != listed[i].Value)
                    throw new InvalidDataException($"{Path.Combine(folder, listed[i].Key)}: content does not match the SHA-256 in {ManifestFile} (corrupted or modified)");
        }
        return m;
    }

    /// <summary>Verifies the manifest, then loads the weights strictly into <paramref name="model"/> in place.</summary>
    public static CheckpointManifest Load(ILanguageModel model, string folder)
    {
        var m = ReadManifest(folder);
        if (m.ModelType != model.ModelType)
            throw new InvalidDataException($"{folder}: checkpoint is of model type '{m.ModelType}', the model is '{model.ModelType}'");
        HfWeights.LoadInto(model, folder, strict: true);
        return m;
    }

    private static JsonObject ToJson(CheckpointManifest m)
    {
        var files = new JsonObject();
        foreach (var (k, v) in m.Files) files[k] = v;
        return new JsonObject
        {
            ["format"] = m.Format, ["model_type"] = m.ModelType, ["created_utc"] = m.CreatedUtc,
            ["files"] = files, ["extra"] = m.Extra.DeepClone(),
        };
    }

    private static string Sha256(string path)
    {
        // Large reads: hashing a stream through its small default buffer ran at half the speed.
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(4 << 20);
        try
        {
            int n;
            while ((n = fs.Read(buffer, 0, buffer.Length)) > 0) hash.AppendData(buffer, 0, n);
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
        return Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
    }
}
