using System.Text.Json.Nodes;

namespace Klf.Tokenizers;

/// <summary>The token strings of a tokenizer folder's vocabulary, by id (for config files that name special tokens by text).</summary>
public static class TokenVocabulary
{
    /// <summary>
    /// Id → token string from the vocabulary file of a tokenizer folder (<c>tokenizer.model</c> or
    /// <c>spiece.model</c>, else <c>vocab.txt</c>, else <c>tokenizer.json</c> with its added tokens, else <c>vocab.json</c>);
    /// the function returns null for an id the file does not hold, and for every id when the folder has
    /// none of these files.
    /// </summary>
    /// <param name="folder">A Hugging Face model or tokenizer folder.</param>
    public static Func<int, string?> FromFolder(string folder)
    {
        foreach (var name in new[] { "tokenizer.model", "spiece.model" })
        {
            var p = Path.Combine(folder, name);
            if (!File.Exists(p)) continue;
            var pieces = SentencePieceModelFile.Parse(File.ReadAllBytes(p), p).Pieces;
            return id => id < pieces.Count ? pieces[id] : null;
        }
        var wordPiece = Path.Combine(folder, "vocab.txt");
        if (File.Exists(wordPiece))
        {
            var lines = File.ReadAllLines(wordPiece);
            return id => id >= 0 && id < lines.Length ? lines[id] : null;
        }
        var vocab = new Dictionary<int, string>();
        var json = Path.Combine(folder, "tokenizer.json");
        var plain = Path.Combine(folder, "vocab.json");
        if (File.Exists(json) && JsonNode.Parse(File.ReadAllText(json)) is JsonObject tj)
        {
            if (tj["model"]?["vocab"] is JsonObject v)
                foreach (var (token, id) in v) if (id is JsonValue n && n.TryGetValue<int>(out var i)) vocab[i] = token;
            if (tj["added_tokens"] is JsonArray added)
                foreach (var a in added)
                    if (a?["id"] is JsonValue n && n.TryGetValue<int>(out var i) && a["content"] is JsonValue c && c.TryGetValue<string>(out var s)) vocab[i] = s;
        }
        else if (File.Exists(plain) && JsonNode.Parse(File.ReadAllText(plain)) is JsonObject pv)
            foreach (var (token, id) in pv) if (id is JsonValue n && n.TryGetValue<int>(out var i)) vocab[i] = token;
        return id => vocab.TryGetValue(id, out var s) ? s : null;
    }
}
