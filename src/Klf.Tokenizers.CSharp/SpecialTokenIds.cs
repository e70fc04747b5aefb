using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Tokenizers;

/// <summary>The resolved special ids of a tokenizer.</summary>
/// <param name="Bos">Beginning of sequence, or null when there is none.</param>
/// <param name="Eos">End of sequence.</param>
/// <param name="Pad">Padding.</param>
/// <param name="Unk">Unknown piece.</param>
internal sealed record SpecialTokenIds(int? Bos, int Eos, int Pad, int Unk);

/// <summary>
/// What a Hugging Face model folder's config files say about special tokens:
/// ids from <c>config.json</c> (<c>bos_token_id</c>, <c>eos_token_id</c>, <c>pad_token_id</c>) and token
/// strings from <c>special_tokens_map.json</c> and <c>tokenizer_config.json</c>
/// (<c>bos_token</c>, <c>eos_token</c>, <c>pad_token</c>, <c>unk_token</c>; a string or an object with
/// <c>content</c>). Ids win over strings; <c>special_tokens_map.json</c> wins over
/// <c>tokenizer_config.json</c>. Absent files and fields, JSON nulls and negative ids count as absent.
/// </summary>
internal sealed class SpecialTokenConfig
{
    private readonly Dictionary<string, int> _ids = new();
    private readonly Dictionary<string, string> _tokens = new();

    /// <summary>Reads the config files in <paramref name="folder"/>; a file that is not JSON is an error naming it.</summary>
    public static SpecialTokenConfig Read(string folder)
    {
        var config = new SpecialTokenConfig();
        // Lowest precedence first: later files overwrite.
        foreach (string name in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            if (AddedTokens.LoadJson(folder, name) is not JsonObject json) continue;
            foreach (string role in new[] { "bos", "eos", "pad", "unk" })
            {
                string? token = json[role + "_token"] switch
                {
                    JsonValue v when v.TryGetValue(out string? s) => s,
                    JsonObject o when o["content"] is JsonValue c && c.TryGetValue(out string? s) => s,
                    _ => null,
                };
                if (token is not null) config._tokens[role] = token;
            }
        }
        if (AddedTokens.LoadJson(folder, "config.json") is JsonObject model)
        {
            foreach (string role in new[] { "bos", "eos", "pad" })
            {
                // eos_token_id may be a list (several stop ids); the first is the one to append.
                // Negative ids (some LLaMA configs say pad_token_id: -1) mean "none".
                JsonNode? node = model[role + "_token_id"] is JsonArray a && a.Count > 0 ? a[0] : model[role + "_token_id"];
                if (node is JsonValue v && v.TryGetValue(out int id) && id >= 0) config._ids[role] = id;
            }
        }
        return config;
    }

    /// <summary>
    /// The id for <paramref name="role"/> ("bos", "eos", "pad" or "unk"): the config.json id, else the
    /// configured token string looked up with <paramref name="lookup"/>, else <paramref name="fallback"/>.
    /// A configured token <paramref name="lookup"/> does not know (the loader's lookup includes added
    /// tokens) is ignored.
    /// </summary>
    public int? Resolve(string role, Func<string, int?> lookup, int? fallback)
    {
        if (_ids.TryGetValue(role, out int id)) return id;
        if (_tokens.TryGetValue(role, out string? token) && lookup(token) is int found) return found;
        return fallback;
    }

    /// <summary>Resolves all four ids and checks that they lie in the vocabulary.</summary>
    public SpecialTokenIds ResolveAll(Func<string, int?> lookup, int vocabSize, string source,
        int? bos, int? eos, int? unk, Func<SpecialTokenIds, int> padFallback, int? pad)
    {
        int? b = Resolve("bos", lookup, bos);
        int e = Resolve("eos", lookup, eos) ?? throw new InvalidDataException($"{source}: no end-of-sequence token could be determined.");
        int u = Resolve("unk", lookup, unk) ?? throw new InvalidDataException($"{source}: no unknown token could be determined.");
        var partial = new SpecialTokenIds(b, e, -1, u);
        int p = Resolve("pad", lookup, pad) ?? padFallback(partial);
        var ids = partial with { Pad = p };
        foreach (var (role, value) in new[] { ("bos", ids.Bos), ("eos", ids.Eos), ("pad", ids.Pad), ("unk", ids.Unk) })
        {
            if (value is int v && (v < 0 || v >= vocabSize))
                throw new InvalidDataException($"{source}: {role} id {v} lies outside the vocabulary of {vocabSize}.");
        }
        return ids;
    }
}
