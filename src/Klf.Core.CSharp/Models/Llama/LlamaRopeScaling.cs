using System.Text.Json.Nodes;

namespace Klf.Models.Llama;

/// <summary>
/// The <c>rope_scaling</c> object of a LLaMA <c>config.json</c>, validated. The rope type is
/// read from <c>rope_type</c>, or from the older key <c>type</c>. Supported types: <c>default</c>,
/// <c>linear</c> (needs <c>factor</c>), <c>dynamic</c> (needs <c>factor</c>) and <c>llama3</c>
/// (needs <c>factor</c>, <c>low_freq_factor</c>, <c>high_freq_factor</c>,
/// <c>original_max_position_embeddings</c>). What each does: <see cref="LlamaRotary.InvFreq"/>.
/// The original object is kept in <see cref="Json"/> and written back unchanged.
/// </summary>
public sealed record LlamaRopeScaling
{
    /// <summary>The rope types implemented.</summary>
    public static IReadOnlyList<string> SupportedTypes { get; } = new[] { "default", "linear", "dynamic", "llama3" };

    /// <summary><c>rope_type</c> (or <c>type</c>): one of <see cref="SupportedTypes"/>.</summary>
    public required string RopeType { get; init; }
    /// <summary><c>factor</c> (required by linear, dynamic, llama3).</summary>
    public double? Factor { get; init; }
    /// <summary><c>low_freq_factor</c> (llama3).</summary>
    public double? LowFreqFactor { get; init; }
    /// <summary><c>high_freq_factor</c> (llama3).</summary>
    public double? HighFreqFactor { get; init; }
    /// <summary><c>original_max_position_embeddings</c> (llama3: the pre-training context length).</summary>
    public int? OriginalMaxPositionEmbeddings { get; init; }
    /// <summary>The source object (a private copy), written back by <see cref="LlamaConfig.ToJson"/>.</summary>
    public required JsonObject Json { get; init; }

    /// <summary>
    /// Validates a <c>rope_scaling</c> object. Errors are <see cref="FormatException"/>s naming
    /// <paramref name="sourceName"/> and the field (<c>rope_scaling.rope_type</c>, <c>rope_scaling.factor</c>, …).
    /// The argument is not modified.
    /// </summary>
    public static LlamaRopeScaling FromJson(JsonObject json, string sourceName)
    {
        FormatException Error(string field, string what) => new($"{sourceName}: field 'rope_scaling.{field}' {what}");
        double? Num(string field)
        {
            if (!json.TryGetPropertyValue(field, out var v) || v is null) return null;
            // By the JSON text: in-memory nodes may hold an int where a file would parse as double.
            if (v.GetValueKind() != System.Text.Json.JsonValueKind.Number)
                throw Error(field, $"must be a number, got {v.ToJsonString()}");
            return double.Parse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);
        }
        double Req(string field, string type) => Num(field) ?? throw Error(field, $"is required for rope_type \"{type}\"");

        var typeKey = json.ContainsKey("rope_type") ? "rope_type" : "type";
        string type;
        try { type = json[typeKey]?.GetValue<string>() ?? throw Error("rope_type", "is required (or the older 'type')"); }
        catch (InvalidOperationException) { throw Error(typeKey, $"must be a string, got {json[typeKey]!.ToJsonString()}"); }
        if (!SupportedTypes.Contains(type))
            throw Error(typeKey, $"\"{type}\" is not supported (supported: {string.Join(", ", SupportedTypes)})");

        var scaling = new LlamaRopeScaling
        {
            RopeType = type,
            Factor = Num("factor"),
            LowFreqFactor = Num("low_freq_factor"),
            HighFreqFactor = Num("high_freq_factor"),
            OriginalMaxPositionEmbeddings = Num("original_max_position_embeddings") is double o ? (int)o : null,
            Json = (JsonObject)json.DeepClone(),
        };
        if (type != "default" && !(Req("factor", type) > 0))
            throw Error("factor", $"must be positive, got {scaling.Factor}");
        if (type == "llama3")
        {
            var low = Req("low_freq_factor", type);
            var high = Req("high_freq_factor", type);
            Req("original_max_position_embeddings", type);
            if (!(high > low) || !(low > 0))
                throw Error("high_freq_factor", $"({high}) must exceed low_freq_factor ({low}) > 0");
        }
        return scaling;
    }

    /// <summary>Equality by type, numbers and the source JSON.</summary>
    public bool Equals(LlamaRopeScaling? other) =>
        other is not null && RopeType == other.RopeType && Factor == other.Factor
        && LowFreqFactor == other.LowFreqFactor && HighFreqFactor == other.HighFreqFactor
        && OriginalMaxPositionEmbeddings == other.OriginalMaxPositionEmbeddings && JsonNode.DeepEquals(Json, other.Json);

    /// <summary>Hash of the type and factor.</summary>
    public override int GetHashCode() => HashCode.Combine(RopeType, Factor);
}
