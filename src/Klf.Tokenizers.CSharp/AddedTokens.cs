using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Tokenizers;

/// <summary>A token matched as a whole string before the model runs, with a fixed id (Hugging Face "added token").</summary>
/// <param name="Content">The literal text.</param>
/// <param name="Id">Its id.</param>
/// <param name="Special">Special tokens are skipped when decoding (as HF's <c>skip_special_tokens</c>); others decode to <paramref name="Content"/>.</param>
public sealed record AddedToken(string Content, int Id, bool Special);

/// <summary>
/// Collects the added tokens a Hugging Face folder declares, merged by id (later sources win):
/// <c>tokenizer.json</c>'s <c>added_tokens</c>, <c>added_tokens.json</c> (content → id; special when
/// listed as a special token in <c>special_tokens_map.json</c>), <c>tokenizer_config.json</c>'s
/// <c>added_tokens_decoder</c>, then T5's <c>&lt;extra_id_N&gt;</c> tokens for SentencePiece models
/// (see <see cref="T5ExtraIdCount"/>).
/// </summary>
internal static class AddedTokens
{
    /// <summary>Reads a JSON file of the folder, or null when it is absent; invalid JSON is an error naming the file.</summary>
    public static JsonNode? LoadJson(string folder, string name)
    {
        string path = Path.Combine(folder, name);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>The <c>added_tokens</c> array of a parsed <c>tokenizer.json</c>.</summary>
    public static IEnumerable<AddedToken> FromTokenizerJson(JsonNode? root, string path)
    {
        if (root?["added_tokens"] is not JsonArray array) yield break;
        foreach (JsonNode? item in array)
        {
            if (item is not JsonObject o || o["content"]?.GetValue<string>() is not string content || o["id"] is null)
                throw new InvalidDataException($"'{path}': an entry of added_tokens lacks 'id' or 'content'.");
            yield return new AddedToken(content, o["id"]!.GetValue<int>(), o["special"] is JsonValue s && s.GetValue<bool>());
        }
    }

    /// <summary>
    /// All added tokens of <paramref name="folder"/>. <paramref name="baseVocabSize"/> and
    /// <paramref name="isSentencePiece"/> place T5's extra ids after the model's pieces.
    /// </summary>
    public static IReadOnlyList<AddedToken> Read(string folder, JsonNode? tokenizerJson, int baseVocabSize, bool isSentencePiece)
    {
        var byId = new SortedDictionary<int, AddedToken>();
        string jsonPath = Path.Combine(folder, "tokenizer.json");
        try
        {
            foreach (var t in FromTokenizerJson(tokenizerJson, jsonPath)) byId[t.Id] = t;

            var specialNames = SpecialTokenStrings(folder);
            if (LoadJson(folder, "added_tokens.json") is JsonObject added)
            {
                foreach (var (content, id) in added)
                    byId[id!.GetValue<int>()] = new AddedToken(content, id.GetValue<int>(), specialNames.Contains(content));
            }

            var config = LoadJson(folder, "tokenizer_config.json") as JsonObject;
            if (config?["added_tokens_decoder"] is JsonObject decoder)
            {
                foreach (var (key, value) in decoder)
                {
                    if (!int.TryParse(key, out int id) || value?["content"]?.GetValue<string>() is not string content)
                        throw new InvalidDataException($"'{Path.Combine(folder, "tokenizer_config.json")}': added_tokens_decoder entry '{key}' needs an integer key and a 'content'.");
                    byId[id] = new AddedToken(content, id, value["special"] is JsonValue s && s.GetValue<bool>());
                }
            }

            if (isSentencePiece)
            {
                int extra = T5ExtraIdCount(folder, config, baseVocabSize);
                for (int i = 0; i < extra; i++)
                {
                    int id = baseVocabSize + extra - 1 - i;
                    byId.TryAdd(id, new AddedToken($"<extra_id_{i}>", id, Special: true));
                }
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"Added tokens in '{folder}' (tokenizer.json, added_tokens.json or tokenizer_config.json) have the wrong JSON types: {e.Message}", e);
        }
        foreach (var t in byId.Values)
        {
            if (t.Id < 0 || t.Content.Length == 0)
                throw new InvalidDataException($"Added token {t.Content} in '{folder}' has a negative id or empty content.");
        }
        return byId.Values.ToList();
    }

    /// <summary>
    /// How many <c>&lt;extra_id_N&gt;</c> tokens HF's T5Tokenizer appends: <c>tokenizer_config.json</c>'s
    /// <c>extra_ids</c> when present; else 100 when the folder is a T5 one (<c>config.json</c>
    /// <c>model_type</c> "t5"/"mt5" or a <c>tokenizer_class</c> starting with "T5") and <c>config.json</c>'s
    /// <c>vocab_size</c>, if given, has room for them (a model sized to the bare pieces, as Klf's presets
    /// are, keeps its vocabulary); else 0, so a bare SentencePiece file keeps exactly its pieces.
    /// </summary>
    public static int T5ExtraIdCount(string folder, JsonObject? tokenizerConfig, int pieces)
    {
        if (tokenizerConfig?["extra_ids"] is JsonValue n && n.TryGetValue(out int count)) return Math.Max(0, count);
        var modelConfig = LoadJson(folder, "config.json");
        bool t5Class = tokenizerConfig?["tokenizer_class"] is JsonValue c && c.TryGetValue(out string? cls) && cls.StartsWith("T5", StringComparison.Ordinal);
        bool t5Model = modelConfig?["model_type"] is JsonValue m && m.TryGetValue(out string? type) && type is "t5" or "mt5";
        bool room = modelConfig?["vocab_size"] is not JsonValue v || !v.TryGetValue(out int size) || size >= pieces + 100;
        return (t5Class || t5Model) && room ? 100 : 0;
    }

    private static HashSet<string> SpecialTokenStrings(string folder)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        if (LoadJson(folder, "special_tokens_map.json") is not JsonObject map) return names;
        foreach (var (_, value) in map)
        {
            List<JsonNode?> items = value is JsonArray a ? a.ToList() : new List<JsonNode?> { value };
            foreach (var item in items)
            {
                if (item is JsonValue v && v.TryGetValue(out string? s)) names.Add(s);
                else if (item?["content"] is JsonValue cv && cv.TryGetValue(out string? cs)) names.Add(cs);
            }
        }
        return names;
    }
}
