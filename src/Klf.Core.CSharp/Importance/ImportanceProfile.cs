using System.Text.Json;
using System.Text.Json.Nodes;
using Klf.Formats;
using Klf.SkillUnits;

namespace Klf.Importance;

/// <summary>One task's unit scores in a profile's history.</summary>
/// <param name="Task">The task's name.</param>
/// <param name="Scores">Scores aligned with the profile's <see cref="ImportanceProfile.UnitIds"/>.</param>
public sealed record TaskImportance(string Task, IReadOnlyList<double> Scores);

/// <summary>
/// Unit importance tied to the skill-unit map it was computed on: unit id → score (e.g. the
/// accumulated importance Â_k), optionally the per-task scores that led to it, and the map's
/// partitioner and fingerprint. Saved as JSON; loading checks the fingerprint against the map in use.
/// Immutable: arrays passed in are copied.
/// </summary>
public sealed class ImportanceProfile
{
    /// <summary>The value of the JSON <c>format</c> field.</summary>
    public const string FormatName = "klf-importance/1";

    private readonly string[] _ids;
    private readonly double[] _scores;
    private readonly Dictionary<string, int> _index;

    /// <summary>Builds a profile; <paramref name="unitIds"/> must be unique and every score list aligned with them.</summary>
    public ImportanceProfile(string partitioner, string fingerprint, IReadOnlyList<string> unitIds, IReadOnlyList<double> scores,
        IReadOnlyList<TaskImportance>? history = null)
    {
        if (unitIds.Count != scores.Count) throw new ArgumentException($"{unitIds.Count} unit ids, {scores.Count} scores", nameof(scores));
        if (unitIds.Distinct(StringComparer.Ordinal).Count() != unitIds.Count) throw new ArgumentException("duplicate unit ids", nameof(unitIds));
        Partitioner = partitioner;
        Fingerprint = fingerprint;
        _ids = unitIds.ToArray();
        _scores = scores.ToArray();
        _index = _ids.Select((id, i) => (id, i)).ToDictionary(p => p.id, p => p.i, StringComparer.Ordinal);
        History = (history ?? []).Select(h =>
            h.Scores.Count == _ids.Length ? new TaskImportance(h.Task, h.Scores.ToArray())
                : throw new ArgumentException($"history '{h.Task}' has {h.Scores.Count} scores for {_ids.Length} units", nameof(history))).ToArray();
    }

    /// <summary>A profile of <paramref name="scores"/> aligned with <paramref name="map"/>.Units.</summary>
    public static ImportanceProfile FromMap(SkillUnitMap map, double[] scores, IReadOnlyList<TaskImportance>? history = null)
    {
        if (scores.Length != map.Count) throw new ArgumentException($"{scores.Length} scores for a map of {map.Count} units", nameof(scores));
        return new ImportanceProfile(map.Partitioner, map.Fingerprint, map.Units.Select(u => u.Id).ToArray(), scores, history);
    }

    /// <summary>The partitioner of the map the scores belong to.</summary>
    public string Partitioner { get; }

    /// <summary>The <see cref="SkillUnitMap.Fingerprint"/> of that map.</summary>
    public string Fingerprint { get; }

    /// <summary>Unit ids, in the map's order.</summary>
    public IReadOnlyList<string> UnitIds => _ids;

    /// <summary>Scores aligned with <see cref="UnitIds"/>.</summary>
    public IReadOnlyList<double> Scores => _scores;

    /// <summary>Per-task scores, oldest first (may be empty).</summary>
    public IReadOnlyList<TaskImportance> History { get; }

    /// <summary>The score of unit <paramref name="unitId"/>.</summary>
    public double this[string unitId] =>
        _index.TryGetValue(unitId, out var i) ? _scores[i] : throw new KeyNotFoundException($"unit '{unitId}' is not in the profile");

    /// <summary>
    /// The scores as a fresh array aligned with <paramref name="map"/>.Units (looked up by id). Throws
    /// <see cref="InvalidDataException"/> when the map's fingerprint differs from the profile's.
    /// </summary>
    public double[] AlignTo(SkillUnitMap map) => Align(map, _scores, "the profile");

    /// <summary>History entry <paramref name="index"/> aligned with <paramref name="map"/> (see <see cref="AlignTo"/>).</summary>
    public double[] HistoryAlignedTo(SkillUnitMap map, int index) => Align(map, History[index].Scores, $"history entry '{History[index].Task}'");

    /// <summary>Writes the profile as indented JSON, atomically (<see cref="AtomicFile"/>); scores must be finite.</summary>
    public void Save(string path)
    {
        var json = new JsonObject
        {
            ["format"] = FormatName,
            ["partitioner"] = Partitioner,
            ["fingerprint"] = Fingerprint,
            ["units"] = new JsonArray(_ids.Select((id, i) => (JsonNode)new JsonObject { ["id"] = id, ["score"] = _scores[i] }).ToArray()),
            ["history"] = new JsonArray(History.Select(h => (JsonNode)new JsonObject
            {
                ["task"] = h.Task,
                ["scores"] = new JsonArray(h.Scores.Select(s => (JsonNode)JsonValue.Create(s)).ToArray()),
            }).ToArray()),
        };
        AtomicFile.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// The partitioner and skill-unit map fingerprint a profile file records, read without a unit map
    /// (to choose the partitioner before building one). A missing file, invalid JSON, another format or
    /// a missing field is an error naming the file.
    /// </summary>
    public static (string Partitioner, string Fingerprint) ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: importance profile not found", path);
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: importance profile is not valid JSON ({e.Message})", e); }
        if (root is not JsonObject o) throw new InvalidDataException($"{path}: an importance profile is a JSON object");
        string Field(string key) =>
            o[key] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>()
            : throw new InvalidDataException($"{path}: importance profile has no string field \"{key}\"");
        var format = Field("format");
        if (format != FormatName) throw new InvalidDataException($"{path}: format \"{format}\" is not an importance profile ({FormatName})");
        return (Field("partitioner"), Field("fingerprint"));
    }

    /// <summary>
    /// Reads a profile written by <see cref="Save"/> and checks it belongs to <paramref name="expected"/>:
    /// a different fingerprint is an <see cref="InvalidDataException"/> naming the file and both
    /// fingerprints (and partitioners), never a silent mismatch. Scores round-trip bit-exactly.
    /// </summary>
    public static ImportanceProfile Load(string path, SkillUnitMap expected)
    {
        var root = Klf.Formats.StrictJson.ReadFile(path) as JsonObject ?? throw new InvalidDataException($"importance profile '{path}' is not a JSON object");
        return Klf.Formats.StrictJson.Fields(path, "importance profile", () => Read(root, path, expected));
    }

    private static ImportanceProfile Read(JsonObject root, string path, SkillUnitMap expected)
    {
        string Str(string key) => root[key]?.GetValue<string>() ?? throw new InvalidDataException($"importance profile '{path}' has no '{key}'");
        if (Str("format") != FormatName) throw new InvalidDataException($"importance profile '{path}' has format '{Str("format")}', expected '{FormatName}'");
        var fingerprint = Str("fingerprint");
        var partitioner = Str("partitioner");
        if (fingerprint != expected.Fingerprint)
            throw new InvalidDataException(
                $"importance profile '{path}' was computed on skill-unit map {fingerprint} (partitioner '{partitioner}'), " +
                $"but the map in use is {expected.Fingerprint} (partitioner '{expected.Partitioner}'): the units differ");
        var units = root["units"]?.AsArray() ?? throw new InvalidDataException($"importance profile '{path}' has no 'units'");
        var ids = units.Select(u => u!["id"]!.GetValue<string>()).ToArray();
        var scores = units.Select(u => u!["score"]!.GetValue<double>()).ToArray();
        var history = (root["history"]?.AsArray() ?? []).Select(h => new TaskImportance(
            h!["task"]!.GetValue<string>(), h["scores"]!.AsArray().Select(s => s!.GetValue<double>()).ToArray())).ToArray();
        // The fingerprint names the map, but the file's own lists must agree with it too.
        var known = expected.Units.Select(u => u.Id).ToHashSet();
        if (ids.Length != expected.Count || ids.Distinct().Count() != ids.Length || !ids.All(known.Contains))
            throw new InvalidDataException($"importance profile '{path}' lists {ids.Length} units that are not the {expected.Count} units of map {expected.Fingerprint}");
        if (scores.Any(s => !double.IsFinite(s)) || history.Any(h => h.Scores.Count != ids.Length || h.Scores.Any(s => !double.IsFinite(s))))
            throw new InvalidDataException($"importance profile '{path}' holds a score that is not a finite number, or a history entry of another length");
        return new ImportanceProfile(partitioner, fingerprint, ids, scores, history);
    }

    private double[] Align(SkillUnitMap map, IReadOnlyList<double> scores, string what)
    {
        if (map.Fingerprint != Fingerprint)
            throw new InvalidDataException($"{what} belongs to skill-unit map {Fingerprint}, the map given is {map.Fingerprint}");
        var result = new double[map.Count];
        for (var i = 0; i < map.Count; i++)
        {
            result[i] = _index.TryGetValue(map.Units[i].Id, out var k) ? scores[k] : throw new KeyNotFoundException($"unit '{map.Units[i].Id}' is not in {what}");
        }
        return result;
    }
}
