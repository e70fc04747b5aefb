using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Adapters;

/// <summary>
/// PEFT's <c>adapter_config.json</c> for LoRA, read strictly and written completely. Every field PEFT
/// defines for LoRA is either honoured (it changes what Klf builds exactly as it changes what PEFT
/// builds), accepted as having no effect on a loaded adapter (metadata, initialisation schemes whose
/// result is already in the weights file), or refused by name before any tensor is touched, so an
/// adapter never loads with a different meaning than it has in PEFT.
/// </summary>
/// <remarks>
/// <para>Honoured: <c>r</c>, <c>lora_alpha</c>, <c>lora_dropout</c>, <c>target_modules</c> (list or regex),
/// <c>exclude_modules</c> (list or regex), <c>use_rslora</c>, <c>rank_pattern</c>, <c>alpha_pattern</c>,
/// <c>layers_to_transform</c>, <c>layers_pattern</c>.</para>
/// <para>Accepted without effect: <c>peft_type</c> (must be LORA), <c>task_type</c>, <c>base_model_name_or_path</c>,
/// <c>revision</c>, <c>inference_mode</c>, <c>auto_mapping</c>, <c>peft_version</c>, <c>init_lora_weights</c>,
/// <c>loftq_config</c>, <c>eva_config</c>, <c>corda_config</c> (initialisation only), <c>megatron_core</c>,
/// <c>qalora_group_size</c> (only with <c>use_qalora</c>), <c>ensure_weight_tying</c> (only with the refused
/// token or module options).</para>
/// <para>Refused unless off: <c>fan_in_fan_out</c> (Conv1D weights), <c>bias</c> other than "none",
/// <c>modules_to_save</c>, <c>use_dora</c>, <c>lora_bias</c>, <c>layer_replication</c>, <c>megatron_config</c>,
/// <c>trainable_token_indices</c>, <c>target_parameters</c>, <c>use_qalora</c>, <c>alora_invocation_tokens</c>,
/// <c>arrow_config</c>. A field PEFT may add later is accepted when its value is off (null, false, empty),
/// else refused by name: Klf cannot know what it changes.</para>
/// </remarks>
public static class PeftAdapterConfig
{
    private static readonly HashSet<string> Honoured = new(StringComparer.Ordinal)
    {
        "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "use_rslora",
        "rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern",
    };

    private static readonly HashSet<string> NoEffect = new(StringComparer.Ordinal)
    {
        "peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
        "peft_version", "init_lora_weights", "loftq_config", "eva_config", "corda_config", "megatron_core",
        "qalora_group_size", "ensure_weight_tying",
    };

    /// <summary>Fields Klf does not implement, with what they would change; accepted only when off.</summary>
    private static readonly Dictionary<string, string> RefusedUnlessOff = new(StringComparer.Ordinal)
    {
        ["fan_in_fan_out"] = "weights stored transposed (GPT-2 Conv1D layers)",
        ["modules_to_save"] = "fully trained copies of extra modules",
        ["use_dora"] = "weight-decomposed LoRA (DoRA) magnitudes",
        ["lora_bias"] = "a trained bias on lora_B",
        ["layer_replication"] = "layers duplicated before adapting",
        ["megatron_config"] = "Megatron parallel layers",
        ["trainable_token_indices"] = "trained rows of the embedding",
        ["target_parameters"] = "adapted nn.Parameters (not Linear modules)",
        ["use_qalora"] = "quantisation-aware LoRA",
        ["alora_invocation_tokens"] = "activated LoRA (aLoRA) invocation tokens",
        ["arrow_config"] = "Arrow routing between adapters",
    };

    /// <summary>
    /// Reads <paramref name="file"/> (an <c>adapter_config.json</c>) into a <see cref="LoraConfig"/> named
    /// <paramref name="adapter"/>. Throws <see cref="FileNotFoundException"/> when it is missing and
    /// <see cref="InvalidDataException"/> naming the file and the field for invalid JSON, a wrong type,
    /// a value out of range or a field Klf refuses.
    /// </summary>
    public static LoraConfig Read(string file, string adapter = "default")
    {
        if (!File.Exists(file)) throw new FileNotFoundException($"{file}: adapter config not found", file);
        var o = Klf.Formats.StrictJson.ReadFile(file) as JsonObject ?? throw new InvalidDataException($"{file}: expected a JSON object");
        InvalidDataException Bad(string field, string what) => new($"{file}: \"{field}\" {what}");

        foreach (var (key, value) in o)
        {
            if (Honoured.Contains(key) || NoEffect.Contains(key)) continue;
            if (key == "bias")
            {
                var b = value is JsonValue bv && bv.TryGetValue<string>(out var s) ? s : null;
                if (value is not null && b != "none") throw Bad(key, $"is {value.ToJsonString()}: Klf adapts no biases (only \"none\" is supported)");
                continue;
            }
            if (IsOff(value)) continue;
            throw RefusedUnlessOff.TryGetValue(key, out var meaning)
                ? Bad(key, $"is {value!.ToJsonString()}: Klf does not implement {meaning}; refusing to load an adapter it would read with another meaning")
                : Bad(key, $"is {value!.ToJsonString()}: not a LoRA field Klf knows; refusing to load an adapter whose meaning it cannot check");
        }

        var peftType = Text(o, "peft_type", Bad);
        if (peftType is not null && peftType != "LORA") throw Bad("peft_type", $"is \"{peftType}\", not LORA");
        var r = Int(o, "r", Bad) ?? throw Bad("r", "is missing (the LoRA rank)");
        if (r <= 0) throw Bad("r", $"is {r}: the rank must be positive");
        var alpha = Number(o, "lora_alpha", Bad) ?? 8.0; // PEFT's default lora_alpha
        var dropout = Number(o, "lora_dropout", Bad) ?? 0.0;
        if (dropout is < 0 or >= 1) throw Bad("lora_dropout", $"is {dropout}: must lie in [0, 1)");
        var (targets, targetRegex) = NamesOrRegex(o, "target_modules", Bad);
        var (exclude, excludeRegex) = NamesOrRegex(o, "exclude_modules", Bad);
        var layers = o["layers_to_transform"] switch
        {
            null => null,
            JsonArray a => a.Select((x, i) => x is JsonValue v && v.TryGetValue<int>(out var n) ? n : throw Bad("layers_to_transform", $"element {i} is not an integer")).ToArray(),
            JsonValue v when v.TryGetValue<int>(out var n) => new[] { n },
            var other => throw Bad("layers_to_transform", $"is {other.ToJsonString()}: expected an integer or a list of integers"),
        };
        if (layers is not null && targetRegex is not null) throw Bad("layers_to_transform", "cannot be used with a regex target_modules (PEFT refuses it too)");
        var layersPattern = o["layers_pattern"] switch
        {
            null => null,
            JsonArray a => a.Select((x, i) => x is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Bad("layers_pattern", $"element {i} is not a string")).ToArray(),
            JsonValue v when v.TryGetValue<string>(out var s) => new[] { s },
            var other => throw Bad("layers_pattern", $"is {other.ToJsonString()}: expected a string or a list of strings"),
        };
        var rankPattern = Pattern(o, "rank_pattern", Bad, (v, k) => v.TryGetValue<int>(out var n) && n > 0 ? n : throw Bad("rank_pattern", $"entry \"{k}\" must be a positive integer"));
        var alphaPattern = Pattern(o, "alpha_pattern", Bad, (v, k) => v.TryGetValue<double>(out var x) ? x : throw Bad("alpha_pattern", $"entry \"{k}\" must be a number"));
        return new LoraConfig(
            R: r, Alpha: alpha, Dropout: dropout, TargetModules: targets, TargetRegex: targetRegex, AdapterName: adapter,
            UseRsLora: Bool(o, "use_rslora", Bad) ?? false, RankPattern: rankPattern, AlphaPattern: alphaPattern,
            ExcludeModules: exclude, ExcludeRegex: excludeRegex, LayersToTransform: layers, LayersPattern: layersPattern);
    }

    /// <summary>PEFT's <c>task_type</c> of a model family: <c>CAUSAL_LM</c> (decoder-only), <c>SEQ_2_SEQ_LM</c> (encoder-decoder) or <c>FEATURE_EXTRACTION</c> (encoder-only sentence encoders).</summary>
    public static string TaskTypeOf(Klf.Models.ModelFamily family) => family switch
    {
        Klf.Models.ModelFamily.DecoderOnly => "CAUSAL_LM",
        Klf.Models.ModelFamily.EncoderOnly => "FEATURE_EXTRACTION",
        _ => "SEQ_2_SEQ_LM",
    };

    /// <summary>The <c>adapter_config.json</c> object PEFT writes for <paramref name="config"/> (every field it reads, with its value).</summary>
    public static JsonObject ToJson(LoraConfig config, string taskType = "CAUSAL_LM", string? baseModelNameOrPath = null)
    {
        JsonNode? List(IEnumerable<string>? xs) => xs is null ? null : new JsonArray(xs.Select(x => (JsonNode)JsonValue.Create(x)!).ToArray());
        var rank = new JsonObject();
        foreach (var (k, v) in config.RankPattern ?? []) rank[k] = v;
        var alpha = new JsonObject();
        foreach (var (k, v) in config.AlphaPattern ?? []) alpha[k] = v;
        return new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = taskType,
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["r"] = config.R,
            ["lora_alpha"] = config.Alpha,
            ["lora_dropout"] = config.Dropout,
            ["target_modules"] = config.TargetRegex is { } rx ? JsonValue.Create(rx) : List(config.EffectiveTargets),
            ["exclude_modules"] = config.ExcludeRegex is { } ex ? JsonValue.Create(ex) : List(config.ExcludeModules),
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["modules_to_save"] = null,
            ["layers_to_transform"] = config.LayersToTransform is { } l ? new JsonArray(l.Select(i => (JsonNode)JsonValue.Create(i)).ToArray()) : null,
            ["layers_pattern"] = List(config.LayersPattern),
            ["rank_pattern"] = rank,
            ["alpha_pattern"] = alpha,
            ["use_rslora"] = config.UseRsLora,
            ["use_dora"] = false,
        };
    }

    private static bool IsOff(JsonNode? v) => v switch
    {
        null => true,
        JsonValue x when x.TryGetValue<bool>(out var b) => !b,
        JsonArray a => a.Count == 0,
        JsonObject ob => ob.Count == 0,
        _ => false,
    };

    private static string? Text(JsonObject o, string key, Func<string, string, InvalidDataException> bad) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        var other => throw bad(key, $"is {other.ToJsonString()}: expected a string"),
    };

    private static int? Int(JsonObject o, string key, Func<string, string, InvalidDataException> bad) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<int>(out var n) => n,
        JsonValue v when v.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue => (int)d,
        var other => throw bad(key, $"is {other.ToJsonString()}: expected an integer"),
    };

    private static double? Number(JsonObject o, string key, Func<string, string, InvalidDataException> bad) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var d) && double.IsFinite(d) => d,
        var other => throw bad(key, $"is {other.ToJsonString()}: expected a finite number"),
    };

    private static bool? Bool(JsonObject o, string key, Func<string, string, InvalidDataException> bad) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        var other => throw bad(key, $"is {other.ToJsonString()}: expected true or false"),
    };

    private static (string[]? Names, string? Regex) NamesOrRegex(JsonObject o, string key, Func<string, string, InvalidDataException> bad) => o[key] switch
    {
        null => (null, null),
        JsonValue v when v.TryGetValue<string>(out var s) => (null, s),
        JsonArray a => (a.Select((x, i) => x is JsonValue e && e.TryGetValue<string>(out var s) ? s : throw bad(key, $"element {i} is not a string")).ToArray(), null),
        var other => throw bad(key, $"is {other.ToJsonString()}: expected a list of module names or a regex string"),
    };

    private static IReadOnlyList<KeyValuePair<string, T>>? Pattern<T>(JsonObject o, string key, Func<string, string, InvalidDataException> bad, Func<JsonValue, string, T> value) => o[key] switch
    {
        null => null,
        JsonObject p when p.Count == 0 => null,
        JsonObject p => p.Select(kv => KeyValuePair.Create(kv.Key, kv.Value is JsonValue v ? value(v, kv.Key) : throw bad(key, $"entry \"{kv.Key}\" is not a number"))).ToList(),
        var other => throw bad(key, $"is {other.ToJsonString()}: expected an object of regex to value"),
    };
}
