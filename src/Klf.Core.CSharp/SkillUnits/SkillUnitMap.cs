using System.Security.Cryptography;
using System.Text;

namespace Klf.SkillUnits;

/// <summary>
/// An ordered list of skill units with a fingerprint. Unit scores and fusion weights are plain
/// <c>double[]</c> aligned with <see cref="Units"/>.
/// </summary>
public sealed class SkillUnitMap
{
    private readonly Dictionary<string, int> _index;

    /// <summary>Builds a map; unit ids must be unique.</summary>
    /// <param name="partitioner">The partitioner's <see cref="ISkillUnitPartitioner.Name"/>.</param>
    /// <param name="units">The units, in a deterministic order.</param>
    public SkillUnitMap(string partitioner, IReadOnlyList<SkillUnit> units)
    {
        Partitioner = partitioner;
        Units = units;
        _index = new Dictionary<string, int>(units.Count);
        for (var i = 0; i < units.Count; i++)
            if (!_index.TryAdd(units[i].Id, i)) throw new ArgumentException($"duplicate skill unit id '{units[i].Id}'");
        Fingerprint = ComputeFingerprint(partitioner, units);
    }

    /// <summary>The partitioner that produced the map.</summary>
    public string Partitioner { get; }

    /// <summary>The units.</summary>
    public IReadOnlyList<SkillUnit> Units { get; }

    /// <summary>Number of units.</summary>
    public int Count => Units.Count;

    /// <summary>
    /// SHA-256 (hex, 16 chars) over the partitioner name and every unit's id, slices and element
    /// count: equal maps give equal fingerprints in any process; a map of another model differs.
    /// </summary>
    public string Fingerprint { get; }

    /// <summary>Position of the unit with id <paramref name="id"/>, or -1.</summary>
    public int IndexOf(string id) => _index.TryGetValue(id, out var i) ? i : -1;

    private static string ComputeFingerprint(string partitioner, IReadOnlyList<SkillUnit> units)
    {
        var sb = new StringBuilder(partitioner).Append('\n');
        foreach (var u in units)
            sb.Append(u.Id).Append('|').Append(string.Join(",", u.Slices)).Append('|').Append(u.ElementCount).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())))[..16].ToLowerInvariant();
    }
}
