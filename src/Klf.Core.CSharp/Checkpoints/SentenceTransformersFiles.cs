using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Formats;
using Klf.Models.Bert;

namespace Klf.Checkpoints;

/// <summary>
/// The files sentence-transformers keeps beside a Hugging Face encoder folder to say how token states
/// become a sentence embedding: <c>modules.json</c> (the module chain: Transformer, Pooling, Normalize)
/// and the Pooling module's <c>config.json</c> (by default <c>1_Pooling/config.json</c>). Klf reads the
/// pooling mode and whether a Normalize module follows, and writes the same layout, so a saved folder
/// loads in sentence-transformers and back here.
/// </summary>
public static class SentenceTransformersFiles
{
    /// <summary>The module list file.</summary>
    public const string ModulesFile = "modules.json";
    /// <summary>The folder Klf writes the pooling config into.</summary>
    public const string PoolingFolder = "1_Pooling";
    /// <summary>The (empty) folder of the Normalize module.</summary>
    public const string NormalizeFolder = "2_Normalize";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>
    /// The pooling and normalisation <paramref name="folder"/>'s sentence-transformers files declare, or
    /// null when it has no <c>modules.json</c> (a plain encoder folder). Only the mean and CLS pooling modes
    /// are supported; another mode, or a module chain Klf cannot reproduce (a Dense layer, several poolings),
    /// is an error naming the file.
    /// </summary>
    public static (SentencePooling Pooling, bool Normalize)? Read(string folder)
    {
        var modulesPath = Path.Combine(folder, ModulesFile);
        if (!File.Exists(modulesPath)) return null;
        if (StrictJson.ReadFile(modulesPath) is not JsonArray modules)
            throw new InvalidDataException($"{modulesPath}: expected a JSON array of modules");
        string? poolingPath = null;
        var normalize = false;
        foreach (var m in modules)
        {
            var type = (m as JsonObject)?["type"]?.GetValue<string>() ?? throw new InvalidDataException($"{modulesPath}: a module has no \"type\"");
            var path = (m as JsonObject)?["path"]?.GetValue<string>() ?? "";
            switch (type.Split('.')[^1])
            {
                case "Transformer": break;
                case "Pooling":
                    if (poolingPath is not null) throw new InvalidDataException($"{modulesPath}: more than one Pooling module");
                    poolingPath = Path.Combine(folder, path, "config.json");
                    break;
                case "Normalize": normalize = true; break;
                default: throw new InvalidDataException($"{modulesPath}: module type \"{type}\" is not supported (Klf reproduces Transformer, Pooling and Normalize)");
            }
        }
        if (poolingPath is null) throw new InvalidDataException($"{modulesPath}: no Pooling module, so no sentence embedding is defined");
        if (!File.Exists(poolingPath)) throw new FileNotFoundException($"{modulesPath}: its Pooling module's config is missing", poolingPath);
        var config = StrictJson.ReadFile(poolingPath) as JsonObject ?? throw new InvalidDataException($"{poolingPath}: expected a JSON object");
        bool Flag(string key) => config[key] is JsonValue v && v.TryGetValue(out bool b) && b;
        var modes = new[] { "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken" }.Where(Flag).ToArray();
        return modes switch
        {
            ["pooling_mode_mean_tokens"] => (SentencePooling.Mean, normalize),
            ["pooling_mode_cls_token"] => (SentencePooling.Cls, normalize),
            _ => throw new InvalidDataException($"{poolingPath}: pooling modes [{string.Join(", ", modes)}]: Klf supports exactly one of pooling_mode_mean_tokens and pooling_mode_cls_token"),
        };
    }

    /// <summary>
    /// Writes <c>modules.json</c> and <c>1_Pooling/config.json</c> (and <c>2_Normalize/</c> when
    /// <see cref="BertSentenceEncoder.Normalize"/>) for <paramref name="model"/> into <paramref name="folder"/>.
    /// Returns the files written, relative to the folder.
    /// </summary>
    public static IReadOnlyList<string> Write(string folder, BertSentenceEncoder model)
    {
        var modules = new JsonArray
        {
            new JsonObject { ["idx"] = 0, ["name"] = "0", ["path"] = "", ["type"] = "sentence_transformers.models.Transformer" },
            new JsonObject { ["idx"] = 1, ["name"] = "1", ["path"] = PoolingFolder, ["type"] = "sentence_transformers.models.Pooling" },
        };
        if (model.Normalize)
            modules.Add(new JsonObject { ["idx"] = 2, ["name"] = "2", ["path"] = NormalizeFolder, ["type"] = "sentence_transformers.models.Normalize" });
        AtomicFile.WriteAllText(Path.Combine(folder, ModulesFile), modules.ToJsonString(Indented));
        Directory.CreateDirectory(Path.Combine(folder, PoolingFolder));
        var pooling = new JsonObject
        {
            ["word_embedding_dimension"] = model.Config.HiddenSize,
            ["pooling_mode_cls_token"] = model.Pooling == SentencePooling.Cls,
            ["pooling_mode_mean_tokens"] = model.Pooling == SentencePooling.Mean,
            ["pooling_mode_max_tokens"] = false,
            ["pooling_mode_mean_sqrt_len_tokens"] = false,
        };
        var poolingFile = Path.Combine(PoolingFolder, "config.json");
        AtomicFile.WriteAllText(Path.Combine(folder, poolingFile), pooling.ToJsonString(Indented));
        if (model.Normalize) Directory.CreateDirectory(Path.Combine(folder, NormalizeFolder));
        return [ModulesFile, poolingFile.Replace('\\', '/')];
    }
}
