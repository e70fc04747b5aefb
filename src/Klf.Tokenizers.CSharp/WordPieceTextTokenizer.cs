using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// A BERT-family WordPiece tokenizer (<c>vocab.txt</c>, with the settings of <c>tokenizer_config.json</c>),
/// as Hugging Face's <c>BertTokenizer</c> encodes: the special tokens' text is matched first, the rest
/// goes through <see cref="BertPreTokenizer"/> and then WordPiece, greedy longest match first with
/// <c>##</c> continuations and <c>[UNK]</c> for a word that cannot be spelt or has more than 100
/// characters (Microsoft.ML.Tokenizers' <see cref="WordPieceTokenizer"/>). BOS is <c>[CLS]</c> and EOS
/// <c>[SEP]</c>, so <c>Encode(text, addBos: true, addEos: true)</c> is the model's input of one
/// sentence. Create through <see cref="TokenizerLoader"/>.
/// </summary>
public sealed class WordPieceTextTokenizer : TextTokenizer
{
    private readonly WordPieceTokenizer _inner;
    private readonly string[] _vocabulary;
    private readonly (string Text, int Id)[] _specials;

    private WordPieceTextTokenizer(WordPieceTokenizer inner, string[] vocabulary, BertPreTokenizer pre,
        (string Text, int Id)[] specials, int mask, string source, SpecialTokenIds ids)
        : base(TokenizerKind.WordPiece, $"{TokenizerKind.WordPiece} ({source}, {vocabulary.Length} ids)", vocabulary.Length, ids)
    {
        _inner = inner;
        _vocabulary = vocabulary;
        PreTokenizer = pre;
        MaskId = mask;
        // Longest first, so that a special token containing another is matched whole.
        _specials = specials.OrderByDescending(s => s.Text.Length).ToArray();
    }

    /// <summary>The basic tokenization before WordPiece (case, accents, CJK, punctuation).</summary>
    public BertPreTokenizer PreTokenizer { get; }

    /// <summary>Id of <c>[MASK]</c> (masked-language-model pre-training).</summary>
    public int MaskId { get; }

    /// <summary>The underlying Microsoft.ML.Tokenizers object, for APIs this wrapper does not expose.</summary>
    public WordPieceTokenizer Inner => _inner;

    /// <summary>
    /// Loads <c>vocab.txt</c> (one token per line, id = line number from 0) with the settings of
    /// <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> beside it (<c>do_lower_case</c>,
    /// default true; <c>strip_accents</c>; <c>tokenize_chinese_chars</c>, default true;
    /// <c>cls_token</c>, <c>sep_token</c>, <c>pad_token</c>, <c>unk_token</c>, <c>mask_token</c>,
    /// default <c>[CLS]</c>, <c>[SEP]</c>, <c>[PAD]</c>, <c>[UNK]</c>, <c>[MASK]</c>, which must be in the vocabulary).
    /// </summary>
    /// <exception cref="InvalidDataException">The vocabulary or a setting is unusable; the message names the file.</exception>
    internal static WordPieceTextTokenizer Load(string vocabPath, string folder)
    {
        var vocabulary = ReadVocabulary(vocabPath);
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < vocabulary.Length; i++) ids[vocabulary[i]] = i;   // a repeated token keeps its last id, as Hugging Face's load_vocab
        var config = AddedTokens.LoadJson(folder, "tokenizer_config.json") as JsonObject;
        var map = AddedTokens.LoadJson(folder, "special_tokens_map.json") as JsonObject;
        string configPath = Path.Combine(folder, "tokenizer_config.json");

        bool? Flag(string key)
        {
            if (config?[key] is not JsonNode n) return null;
            if (n is JsonValue v && v.TryGetValue(out bool b)) return b;
            throw new InvalidDataException($"'{configPath}': {key} must be true, false or null, not {n.ToJsonString()}.");
        }
        string TokenText(string role, string fallback)
        {
            foreach (var source in new[] { map, config })
            {
                string? s = source?[role] switch
                {
                    JsonValue v when v.TryGetValue(out string? t) => t,
                    JsonObject o when o["content"] is JsonValue c && c.TryGetValue(out string? t) => t,
                    _ => null,
                };
                if (s is not null) return s;
            }
            return fallback;
        }
        int Id(string role, string fallback)
        {
            var text = TokenText(role, fallback);
            return ids.TryGetValue(text, out int id) ? id
                : throw new InvalidDataException($"'{vocabPath}': the {role} \"{text}\" is not in the vocabulary.");
        }
        var pre = new BertPreTokenizer(Flag("do_lower_case") ?? true, Flag("strip_accents"), Flag("tokenize_chinese_chars") ?? true);
        int cls = Id("cls_token", "[CLS]"), sep = Id("sep_token", "[SEP]"), pad = Id("pad_token", "[PAD]"), unk = Id("unk_token", "[UNK]"), mask = Id("mask_token", "[MASK]");
        WordPieceTokenizer inner;
        try
        {
            inner = WordPieceTokenizer.Create(vocabPath, new WordPieceOptions
            {
                // Words arrive pre-tokenized and normalized by BertPreTokenizer.
                PreTokenizer = null,
                Normalizer = null,
                UnknownToken = vocabulary[unk],
                ContinuingSubwordPrefix = "##",
                MaxInputCharsPerWord = 100,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or IOException)
        {
            throw new InvalidDataException($"Microsoft.ML.Tokenizers could not load '{vocabPath}': {e.Message}", e);
        }
        var specials = new[] { cls, sep, pad, unk, mask }.Distinct().Select(id => (vocabulary[id], id)).ToArray();
        return new WordPieceTextTokenizer(inner, vocabulary, pre, specials, mask, Path.GetFileName(folder) + "/vocab.txt",
            new SpecialTokenIds(cls, sep, pad, unk));
    }

    // Lines as Python's text-mode readlines gives them (universal newlines), each with its line break removed.
    private static string[] ReadVocabulary(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        string text;
        try { text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes); }
        catch (DecoderFallbackException e) { throw new InvalidDataException($"'{path}': not UTF-8 text ({e.Message}).", e); }
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        var lines = text.Replace("\r\n", "\n").Replace('\r', '\n').Split('\n');
        if (lines.Length > 0 && lines[^1].Length == 0) lines = lines[..^1];
        if (lines.Length == 0) throw new InvalidDataException($"'{path}': the vocabulary is empty.");
        return lines;
    }

    /// <summary>The token string of an id.</summary>
    public string TokenOf(int id) => (uint)id < (uint)_vocabulary.Length ? _vocabulary[id]
        : throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id outside the vocabulary of {_vocabulary.Length}.");

    private protected override IReadOnlyList<int> EncodeText(string text)
    {
        var ids = new List<int>(text.Length / 4 + 4);
        int start = 0;
        while (start < text.Length)
        {
            // The next special token's text, as Hugging Face splits added tokens out before normalizing.
            int at = -1, id = -1, length = 0;
            foreach (var (s, sid) in _specials)
            {
                int i = text.IndexOf(s, start, StringComparison.Ordinal);
                if (i >= 0 && (at < 0 || i < at)) (at, id, length) = (i, sid, s.Length);
            }
            int end = at < 0 ? text.Length : at;
            foreach (var word in PreTokenizer.Split(text[start..end])) ids.AddRange(_inner.EncodeToIds(word));
            if (at < 0) break;
            ids.Add(id);
            start = at + length;
        }
        return ids;
    }

    private protected override string DecodeKept(IReadOnlyList<int> ids)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            var token = _vocabulary[id];
            if (token.StartsWith("##", StringComparison.Ordinal) && sb.Length > 0) sb.Append(token, 2, token.Length - 2);
            else
            {
                if (sb.Length > 0) sb.Append(' ');
                sb.Append(token);
            }
        }
        return CleanUpSpaces(sb.ToString());
    }

    // Hugging Face's clean_up_tokenization (BERT decodes with it by default).
    private static string CleanUpSpaces(string s) => s.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",")
        .Replace(" ' ", "'").Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    private protected override bool SkippedInDecode(int id) => base.SkippedInDecode(id) || id == MaskId;
}
