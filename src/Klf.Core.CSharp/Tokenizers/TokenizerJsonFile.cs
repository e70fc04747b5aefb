using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Klf.Tokenizers;

/// <summary>
/// Reads the parts of a Hugging Face <c>tokenizer.json</c> Klf supports: a <c>BPE</c> model with
/// byte-level pre-tokenization (GPT-2, Llama 3, Qwen, SmolLM), Unicode normalizers, and Split /
/// Digits / ByteLevel pre-tokenizers. Anything else is an <see cref="InvalidDataException"/> naming
/// the file and the component.
/// </summary>
internal static class TokenizerJsonFile
{
    /// <summary>A parsed byte-level BPE <c>tokenizer.json</c>.</summary>
    /// <param name="Encoder">The BPE model.</param>
    /// <param name="Normalize">The normalizer (identity when there is none).</param>
    /// <param name="PreTokenize">Raw text to pre-tokens, before byte mapping.</param>
    /// <param name="UnkId">The model's <c>unk_token</c> id, if any.</param>
    public sealed record Parsed(ByteLevelBpeEncoder Encoder, Func<string, string> Normalize, Func<string, List<string>> PreTokenize, int? UnkId);

    /// <summary>GPT-2's pre-tokenizer regex, which HF's ByteLevel pre-tokenizer applies when <c>use_regex</c> is true.</summary>
    public static readonly Regex Gpt2Split = new(
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    /// <summary>Parses the tokenizer of <paramref name="root"/>, read from <paramref name="path"/>.</summary>
    public static Parsed Parse(JsonNode root, string path)
    {
        try
        {
            return ParseUnchecked(root, path);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"'{path}': unexpected JSON types or fields: {e.Message}", e);
        }
    }

    private static Parsed ParseUnchecked(JsonNode root, string path)
    {
        if (root["model"] is not JsonObject model) throw Unsupported(path, "a file without a 'model' object");
        string type = model["type"]?.GetValue<string>() ?? (model["merges"] is not null ? "BPE" : "(no type)");
        if (type != "BPE")
            throw Unsupported(path, $"model type '{type}' (only BPE is supported; for SentencePiece Unigram put spiece.model in the folder)");
        foreach (string field in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
        {
            if (model[field] is JsonValue v && v.GetValue<string>() is { Length: > 0 } s)
                throw Unsupported(path, $"BPE {field} '{s}'");
        }

        var steps = new List<Func<string, IEnumerable<string>>>();
        bool byteLevel = false;
        ReadPreTokenizer(root["pre_tokenizer"], path, steps, ref byteLevel);
        if (!byteLevel)
            throw Unsupported(path, $"BPE without a ByteLevel pre-tokenizer (pre_tokenizer {Describe(root["pre_tokenizer"])}, normalizer {Describe(root["normalizer"])}); "
                + "SentencePiece-style files (Metaspace, byte_fallback) load from tokenizer.model when it is in the same folder");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        if (model["vocab"] is not JsonObject vocabJson) throw Unsupported(path, "a BPE model without a 'vocab' object");
        foreach (var (token, id) in vocabJson) vocab[token] = id!.GetValue<int>();

        var merges = new List<(string, string)>();
        foreach (JsonNode? m in model["merges"] as JsonArray ?? [])
        {
            switch (m)
            {
                case JsonArray pair when pair.Count == 2:
                    merges.Add((pair[0]!.GetValue<string>(), pair[1]!.GetValue<string>()));
                    break;
                case JsonValue v when v.GetValue<string>().Split(' ') is [var left, var right]:
                    merges.Add((left, right));
                    break;
                default:
                    throw new InvalidDataException($"'{path}': merge {merges.Count} is {m?.ToJsonString()}, not \"a b\" or [\"a\", \"b\"].");
            }
        }

        int? unkId = null;
        if (model["unk_token"] is JsonValue unk && unk.GetValue<string>() is string unkToken)
            unkId = vocab.TryGetValue(unkToken, out int u) ? u : null;
        bool ignoreMerges = model["ignore_merges"] is JsonValue im && im.GetValue<bool>();
        bool byteFallback = model["byte_fallback"] is JsonValue bf && bf.GetValue<bool>();
        var encoder = new ByteLevelBpeEncoder(vocab, merges, ignoreMerges, byteFallback, unkId, $"'{path}'");

        return new Parsed(encoder, ReadNormalizer(root["normalizer"], path), text =>
        {
            var pieces = new List<string> { text };
            foreach (var step in steps) pieces = pieces.SelectMany(step).Where(p => p.Length > 0).ToList();
            return pieces;
        }, unkId);
    }

    private static void ReadPreTokenizer(JsonNode? node, string path, List<Func<string, IEnumerable<string>>> steps, ref bool byteLevel)
    {
        if (node is null) return;
        string type = node["type"]?.GetValue<string>() ?? "(no type)";
        if (byteLevel) throw Unsupported(path, $"pre-tokenizer '{type}' after ByteLevel (ByteLevel must come last)");
        switch (type)
        {
            case "Sequence":
                foreach (JsonNode? inner in node["pretokenizers"] as JsonArray ?? []) ReadPreTokenizer(inner, path, steps, ref byteLevel);
                break;
            case "ByteLevel":
                bool addPrefixSpace = node["add_prefix_space"] is JsonValue a && a.GetValue<bool>();
                bool useRegex = node["use_regex"] is not JsonValue r || r.GetValue<bool>();
                steps.Add(piece =>
                {
                    if (addPrefixSpace && !piece.StartsWith(' ')) piece = " " + piece;
                    return useRegex ? Isolate(Gpt2Split, piece) : [piece];
                });
                byteLevel = true;
                break;
            case "Split":
                if (node["invert"] is JsonValue inv && inv.GetValue<bool>()) throw Unsupported(path, "Split pre-tokenizer with invert: true");
                Regex regex = SplitPattern(node["pattern"], path);
                string behavior = node["behavior"]?.GetValue<string>() ?? "(none)";
                steps.Add(behavior switch
                {
                    "Isolated" => piece => Isolate(regex, piece),
                    "Removed" => piece => Isolate(regex, piece, keepMatches: false),
                    _ => throw Unsupported(path, $"Split pre-tokenizer behavior '{behavior}' (Isolated and Removed are supported)"),
                });
                break;
            case "Digits":
                bool individual = node["individual_digits"] is JsonValue d && d.GetValue<bool>();
                var digits = new Regex(individual ? @"\p{N}" : @"\p{N}+", RegexOptions.Compiled);
                steps.Add(piece => Isolate(digits, piece));
                break;
            default:
                throw Unsupported(path, $"pre-tokenizer '{type}'");
        }
    }

    private static Regex SplitPattern(JsonNode? pattern, string path)
    {
        string source = pattern?["Regex"]?.GetValue<string>() ?? Regex.Escape(pattern?["String"]?.GetValue<string>()
            ?? throw Unsupported(path, $"Split pattern {pattern?.ToJsonString()}"));
        try
        {
            return new Regex(source, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{path}': the Split regex {source} is not valid .NET regex syntax: {e.Message}", e);
        }
    }

    /// <summary>The matches of <paramref name="regex"/> and the text between them, in order (HF's "Isolated" split), or only the text between them (<paramref name="keepMatches"/> false: "Removed").</summary>
    private static List<string> Isolate(Regex regex, string text, bool keepMatches = true)
    {
        var pieces = new List<string>();
        int at = 0;
        foreach (Match m in regex.Matches(text))
        {
            if (m.Length == 0) continue;
            if (m.Index > at) pieces.Add(text[at..m.Index]);
            if (keepMatches) pieces.Add(m.Value);
            at = m.Index + m.Length;
        }
        if (at < text.Length) pieces.Add(text[at..]);
        return pieces;
    }

    private static Func<string, string> ReadNormalizer(JsonNode? node, string path)
    {
        if (node is null) return s => s;
        string type = node["type"]?.GetValue<string>() ?? "(no type)";
        switch (type)
        {
            case "NFC": return s => s.Normalize(NormalizationForm.FormC);
            case "NFD": return s => s.Normalize(NormalizationForm.FormD);
            case "NFKC": return s => s.Normalize(NormalizationForm.FormKC);
            case "NFKD": return s => s.Normalize(NormalizationForm.FormKD);
            case "Lowercase": return s => s.ToLowerInvariant();
            case "Sequence":
                var parts = (node["normalizers"] as JsonArray ?? []).Select(n => ReadNormalizer(n, path)).ToList();
                return s => parts.Aggregate(s, (acc, f) => f(acc));
            default:
                throw Unsupported(path, $"normalizer '{type}'");
        }
    }

    private static string Describe(JsonNode? node) => node is null ? "none" : $"'{node["type"]?.GetValue<string>()}'";

    private static InvalidDataException Unsupported(string path, string what) =>
        new($"'{path}': unsupported tokenizer.json component: {what}.");
}
