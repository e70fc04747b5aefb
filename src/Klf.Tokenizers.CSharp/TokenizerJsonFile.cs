using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Klf.Tokenizers;

/// <summary>
/// Reads the parts of a Hugging Face <c>tokenizer.json</c> Klf supports: a <c>BPE</c> model with
/// byte-level pre-tokenization (GPT-2, Llama 3, Qwen, SmolLM) or SentencePiece-style (Llama 2,
/// TinyLlama: <c>Prepend</c> + <c>Replace</c> "▁" normalizer or a <c>Metaspace</c> pre-tokenizer, usually
/// with <c>byte_fallback</c>); Unicode, Prepend, Replace and Lowercase normalizers; Split / Digits /
/// ByteLevel / Metaspace pre-tokenizers. Anything else is an <see cref="InvalidDataException"/>
/// naming the file and the component.
/// </summary>
internal static class TokenizerJsonFile
{
    /// <summary>A parsed BPE <c>tokenizer.json</c>.</summary>
    /// <param name="Encoder">The BPE model (Microsoft.ML.Tokenizers', with Klf's ignore_merges and byte_fallback).</param>
    /// <param name="Normalize">The normalizer (identity when there is none).</param>
    /// <param name="PreTokenize">Raw text to pre-tokens, before byte mapping.</param>
    /// <param name="UnkId">The model's <c>unk_token</c> id, if any.</param>
    /// <param name="ByteLevel">Byte-level BPE; false for SentencePiece-style files.</param>
    /// <param name="StripLeadingSpace">Decoding drops one leading space (the "▁" the normalizer or Metaspace prepended).</param>
    public sealed record Parsed(LibraryBpe Encoder, Func<string, string> Normalize, Func<string, List<string>> PreTokenize, int? UnkId,
        bool ByteLevel, bool StripLeadingSpace);

    private const string Metaspace = "\u2581";

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

        var steps = new List<Func<List<string>, List<string>>>();
        bool byteLevel = false, metaspacePrepends = false;
        ReadPreTokenizer(root["pre_tokenizer"], path, steps, ref byteLevel, ref metaspacePrepends);
        bool normalizerPrepends = false, normalizerEscapesSpaces = false;
        var normalize = ReadNormalizer(root["normalizer"], path, ref normalizerPrepends, ref normalizerEscapesSpaces);
        bool sentencePieceStyle = !byteLevel && (metaspacePrepends || normalizerEscapesSpaces || HasMetaspace(root["pre_tokenizer"]));
        if (!byteLevel && !sentencePieceStyle)
            throw Unsupported(path, $"BPE without a ByteLevel pre-tokenizer (pre_tokenizer {Describe(root["pre_tokenizer"])}, normalizer {Describe(root["normalizer"])}); "
                + "neither byte-level nor SentencePiece-style (Metaspace or a Replace ' ' -> '▁' normalizer)");

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

        string? unkToken = model["unk_token"] is JsonValue unk ? unk.GetValue<string>() : null;
        int? unkId = unkToken is not null && vocab.TryGetValue(unkToken, out int u) ? u : null;
        bool ignoreMerges = model["ignore_merges"] is JsonValue im && im.GetValue<bool>();
        bool byteFallback = model["byte_fallback"] is JsonValue bf && bf.GetValue<bool>();
        bool fuseUnk = model["fuse_unk"] is JsonValue fu && fu.GetValue<bool>();
        var encoder = new LibraryBpe(vocab, merges, byteLevel, ignoreMerges, byteFallback, unkToken, fuseUnk, $"'{path}'");

        return new Parsed(encoder, normalize, text =>
        {
            var pieces = new List<string> { text };
            foreach (var step in steps) pieces = step(pieces).Where(p => p.Length > 0).ToList();
            return pieces;
        }, unkId, byteLevel, sentencePieceStyle && (normalizerPrepends || metaspacePrepends));
    }

    private static bool HasMetaspace(JsonNode? node) =>
        node?["type"]?.GetValue<string>() == "Metaspace"
        || (node?["pretokenizers"] as JsonArray ?? []).Any(HasMetaspace);

    private static Func<List<string>, List<string>> EachPiece(Func<string, IEnumerable<string>> f) =>
        pieces => pieces.SelectMany(f).ToList();

    private static void ReadPreTokenizer(JsonNode? node, string path, List<Func<List<string>, List<string>>> steps,
        ref bool byteLevel, ref bool metaspacePrepends)
    {
        if (node is null) return;
        string type = node["type"]?.GetValue<string>() ?? "(no type)";
        if (byteLevel) throw Unsupported(path, $"pre-tokenizer '{type}' after ByteLevel (ByteLevel must come last)");
        switch (type)
        {
            case "Sequence":
                foreach (JsonNode? inner in node["pretokenizers"] as JsonArray ?? []) ReadPreTokenizer(inner, path, steps, ref byteLevel, ref metaspacePrepends);
                break;
            case "ByteLevel":
                bool addPrefixSpace = node["add_prefix_space"] is JsonValue a && a.GetValue<bool>();
                bool useRegex = node["use_regex"] is not JsonValue r || r.GetValue<bool>();
                steps.Add(EachPiece(piece =>
                {
                    if (addPrefixSpace && !piece.StartsWith(' ')) piece = " " + piece;
                    return useRegex ? Isolate(ByteLevelBpeTextTokenizer.Gpt2Split, piece) : [piece];
                }));
                byteLevel = true;
                break;
            case "Split":
                if (node["invert"] is JsonValue inv && inv.GetValue<bool>()) throw Unsupported(path, "Split pre-tokenizer with invert: true");
                Regex regex = SplitPattern(node["pattern"], path);
                string behavior = node["behavior"]?.GetValue<string>() ?? "(none)";
                steps.Add(EachPiece(behavior switch
                {
                    "Isolated" => piece => Isolate(regex, piece),
                    "Removed" => piece => Isolate(regex, piece, keepMatches: false),
                    _ => throw Unsupported(path, $"Split pre-tokenizer behavior '{behavior}' (Isolated and Removed are supported)"),
                }));
                break;
            case "Digits":
                bool individual = node["individual_digits"] is JsonValue d && d.GetValue<bool>();
                var digits = new Regex(individual ? @"\p{N}" : @"\p{N}+", RegexOptions.Compiled);
                steps.Add(EachPiece(piece => Isolate(digits, piece)));
                break;
            case "Metaspace":
                string replacement = node["replacement"]?.GetValue<string>() ?? Metaspace;
                // prepend_scheme (newer files) or add_prefix_space (older ones, true meaning "always").
                string scheme = node["prepend_scheme"]?.GetValue<string>()
                    ?? (node["add_prefix_space"] is JsonValue aps && !aps.GetValue<bool>() ? "never" : "always");
                if (scheme is not ("always" or "first" or "never")) throw Unsupported(path, $"Metaspace prepend_scheme '{scheme}'");
                bool split = node["split"] is not JsonValue sp || sp.GetValue<bool>();
                metaspacePrepends = scheme != "never";
                steps.Add(pieces => pieces.SelectMany((piece, index) =>
                {
                    piece = piece.Replace(" ", replacement);
                    if ((scheme == "always" || (scheme == "first" && index == 0)) && !piece.StartsWith(replacement, StringComparison.Ordinal))
                        piece = replacement + piece;
                    return split ? SplitBefore(piece, replacement) : [piece];
                }).ToList());
                break;
            default:
                throw Unsupported(path, $"pre-tokenizer '{type}'");
        }
    }

    private static Regex SplitPattern(JsonNode? pattern, string path)
    {
        string source = pattern?["Regex"]?.GetValue<string>() ?? Regex.Escape(pattern?["String"]?.GetValue<string>()
            ?? throw Unsupported(path, $"pattern {pattern?.ToJsonString()}"));
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

    /// <summary>Splits before every occurrence of <paramref name="marker"/> (HF's "MergedWithNext").</summary>
    private static List<string> SplitBefore(string text, string marker)
    {
        var pieces = new List<string>();
        int at = 0;
        for (int i = text.IndexOf(marker, 1, StringComparison.Ordinal); i > 0; i = text.IndexOf(marker, i + marker.Length, StringComparison.Ordinal))
        {
            pieces.Add(text[at..i]);
            at = i;
        }
        pieces.Add(text[at..]);
        return pieces;
    }

    private static Func<string, string> ReadNormalizer(JsonNode? node, string path, ref bool prepends, ref bool escapesSpaces)
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
            case "Prepend":
                string prefix = node["prepend"]?.GetValue<string>() ?? throw Unsupported(path, "a Prepend normalizer without 'prepend'");
                prepends |= prefix == Metaspace;
                return s => s.Length == 0 ? s : prefix + s;
            case "Replace":
                Regex pattern = SplitPattern(node["pattern"], path);
                string content = node["content"]?.GetValue<string>() ?? "";
                escapesSpaces |= content == Metaspace && pattern.IsMatch(" ");
                return s => pattern.Replace(s, content.Replace("$", "$$"));
            case "Sequence":
                var parts = new List<Func<string, string>>();
                foreach (JsonNode? n in node["normalizers"] as JsonArray ?? []) parts.Add(ReadNormalizer(n, path, ref prepends, ref escapesSpaces));
                return s => parts.Aggregate(s, (acc, f) => f(acc));
            default:
                throw Unsupported(path, $"normalizer '{type}'");
        }
    }

    private static string Describe(JsonNode? node) => node is null ? "none" : $"'{node["type"]?.GetValue<string>()}'";

    private static InvalidDataException Unsupported(string path, string what) =>
        new($"'{path}': unsupported tokenizer.json component: {what}.");
}
