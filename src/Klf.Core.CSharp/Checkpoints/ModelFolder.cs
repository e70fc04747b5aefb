using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>
/// Loads a language model with its weights from a Hugging Face model folder (the checkpoint layer
/// above the model families: <see cref="LanguageModels"/> builds, this fills the weights).
/// </summary>
public static class ModelFolder
{
    /// <summary>
    /// Loads a Hugging Face model folder: <c>config.json</c> plus <c>model.safetensors</c> (or shards
    /// with <c>model.safetensors.index.json</c>), with strict key checking (see
    /// <see cref="HfWeights.LoadInto"/>). <paramref name="dtype"/> defaults to float32; bf16 weights are
    /// converted. A folder with a Klf <c>manifest.json</c> is verified first (every listed file present
    /// with its recorded SHA-256; see <see cref="Checkpoint.ReadManifest"/>) unless
    /// <paramref name="verify"/> is false, so a relabelled or flipped byte is refused rather than
    /// loaded. A BERT sentence encoder takes its pooling and normalisation from the folder's
    /// sentence-transformers files (<see cref="SentenceTransformersFiles.Read"/>; mean pooling and unit
    /// length without them). Errors name the folder and the problem.
    /// </summary>
    public static ILanguageModel Load(string folder, Device? device = null, ScalarType? dtype = null, bool verify = true)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: model folder not found");
        if (verify && File.Exists(Path.Combine(folder, Checkpoint.ManifestFile))) Checkpoint.ReadManifest(folder);
        var configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{folder}: no config.json in the model folder", configPath);
        JsonObject config;
        config = Klf.Formats.StrictJson.ReadFile(configPath) as JsonObject ?? throw new InvalidDataException($"{configPath}: the top level is not a JSON object");
        HfWeights.WeightFiles(folder); // fail on missing weights before building the model
        var pooling = SentenceTransformersFiles.Read(folder);
        var model = LanguageModels.FromConfig(config, configPath, device, dtype);
        try
        {
            if (model is Klf.Models.Bert.BertSentenceEncoder encoder && pooling is { } p)
                (encoder.Pooling, encoder.Normalize) = p;
            HfWeights.LoadInto(model, folder, strict: true);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }
}
