using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Checkpoints;
using Klf.Models.Llama;
using Klf.Models.T5;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models;

/// <summary>
/// Creates language models of any supported family: from a Hugging Face model folder, from a
/// <c>config.json</c> object, or from a named preset. Dispatches on <c>model_type</c>.
/// </summary>
public static class LanguageModels
{
    /// <summary>The <c>model_type</c> values Klf can build.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["llama", "t5"];

    /// <summary>Every preset name of every family.</summary>
    public static IReadOnlyList<string> PresetNames => [.. LlamaConfig.PresetNames, .. T5Config.PresetNames];

    /// <summary>
    /// Builds a randomly initialised model from a Hugging Face <c>config.json</c> object
    /// (initialised from torch's global generator: seed it with <c>torch.manual_seed</c>).
    /// <paramref name="source"/> names the config in errors. The model is placed on
    /// <paramref name="device"/> (default CPU) in <paramref name="dtype"/> (default float32).
    /// </summary>
    public static ILanguageModel FromConfig(JsonObject config, string source, Device? device = null, ScalarType? dtype = null)
    {
        var type = config["model_type"]?.GetValue<string>()
            ?? throw new InvalidDataException($"{source}: missing field \"model_type\"");
        return type switch
        {
            "llama" => LlamaForCausalLM.Create(LlamaConfig.FromJson(config, source), device, dtype),
            "t5" => T5ForConditionalGeneration.Create(T5Config.FromJson(config, source), device, dtype),
            _ => throw new InvalidDataException(
                $"{source}: unsupported model_type \"{type}\" (supported: {string.Join(", ", SupportedModelTypes)})"),
        };
    }

    /// <summary>A randomly initialised model from a named preset (see <see cref="PresetNames"/>), with an optional vocabulary size.</summary>
    public static ILanguageModel FromPreset(string name, int? vocabSize = null, Device? device = null, ScalarType? dtype = null)
    {
        if (LlamaConfig.PresetNames.Contains(name)) return LlamaForCausalLM.Create(LlamaConfig.Preset(name, vocabSize), device, dtype);
        if (T5Config.PresetNames.Contains(name))
            return T5ForConditionalGeneration.Create(vocabSize is { } v ? T5Config.Preset(name, v) : T5Config.Preset(name), device, dtype);
        throw new ArgumentException($"unknown model preset \"{name}\" (known: {string.Join(", ", PresetNames)})", nameof(name));
    }

    /// <summary>
    /// Loads a Hugging Face model folder: <c>config.json</c> plus <c>model.safetensors</c> (or shards
    /// with <c>model.safetensors.index.json</c>), with strict key checking (see
    /// <see cref="HfWeights.LoadInto"/>). <paramref name="dtype"/> defaults to float32; bf16 weights are
    /// converted. Errors name the folder and the problem.
    /// </summary>
    public static ILanguageModel FromFolder(string folder, Device? device = null, ScalarType? dtype = null)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: model folder not found");
        var configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{folder}: no config.json in the model folder", configPath);
        JsonObject config;
        try { config = JsonNode.Parse(File.ReadAllText(configPath))?.AsObject() ?? throw new InvalidDataException($"{configPath}: empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{configPath}: not valid JSON ({e.Message})"); }
        HfWeights.WeightFiles(folder); // fail on missing weights before building the model
        var model = FromConfig(config, configPath, device, dtype);
        try
        {
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
