using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Models.Bert;
using Klf.Models.Llama;
using Klf.Models.T5;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models;

/// <summary>
/// Creates models of any supported family (LLaMA, T5, BERT sentence encoders): from a Hugging Face model folder, from a
/// <c>config.json</c> object or from a named preset (randomly initialised). Dispatches on
/// <c>model_type</c>. A Hugging Face model folder with its weights loads with
/// <see cref="Klf.Checkpoints.ModelFolder.Load"/>.
/// </summary>
public static class LanguageModels
{
    /// <summary>The <c>model_type</c> values Klf can build.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["llama", "t5", "bert"];

    /// <summary>Every preset name of every family.</summary>
    public static IReadOnlyList<string> PresetNames => [.. LlamaConfig.PresetNames, .. T5Config.PresetNames, .. BertConfig.PresetNames];

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
            "bert" => BertSentenceEncoder.Create(BertConfig.FromJson(config, source), device, dtype),
            _ => throw new InvalidDataException(
                $"{source}: unsupported model_type \"{type}\" (supported: {string.Join(", ", SupportedModelTypes)})"),
        };
    }

    /// <summary>
    /// Builds a module with every tensor on the meta device (shapes and dtypes, no storage) from the
    /// start, so a skeleton of a model larger than memory never allocates it (building on the CPU and
    /// moving would). Restores the default device afterwards.
    /// </summary>
    internal static T OnMeta<T>(Func<T> build)
    {
        var previous = torch.get_default_device();
        torch.set_default_device(torch.META);
        try { return build(); }
        finally { torch.set_default_device(previous); }
    }

    /// <summary>A randomly initialised model from a named preset (see <see cref="PresetNames"/>), with an optional vocabulary size.</summary>
    public static ILanguageModel FromPreset(string name, int? vocabSize = null, Device? device = null, ScalarType? dtype = null)
    {
        if (LlamaConfig.PresetNames.Contains(name)) return LlamaForCausalLM.Create(LlamaConfig.Preset(name, vocabSize), device, dtype);
        if (T5Config.PresetNames.Contains(name))
            return T5ForConditionalGeneration.Create(vocabSize is { } v ? T5Config.Preset(name, v) : T5Config.Preset(name), device, dtype);
        if (BertConfig.PresetNames.Contains(name)) return BertSentenceEncoder.Create(BertConfig.Preset(name, vocabSize), device, dtype);
        throw new ArgumentException($"unknown model preset \"{name}\" (known: {string.Join(", ", PresetNames)})", nameof(name));
    }
}
