using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// The BPE model of a <c>tokenizer.json</c> through Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>,
/// byte-level (GPT-2, Llama 3, Qwen, SmolLM) or SentencePiece-style (Llama 2, TinyLlama). The library
/// merges (and, byte-level, maps bytes and decodes). Klf pre-tokenizes (the file's Split / Digits /
/// ByteLevel / Metaspace chain, which the library's single-regex pre-tokenizer cannot express) and
/// hands the library one pre-token at a time.
/// </summary>
/// <remarks>
/// Two options of HF's BPE are Klf's, because ML.Tokenizers 3.0.0's <see cref="BpeOptions"/> has
/// neither (each pinned by a test that fails once the library gets it right on its own):
/// <list type="bullet">
/// <item><c>ignore_merges</c> (Llama 3): a pre-token that is itself a vocabulary token is that token,
/// even when the merges would build something else.</item>
/// <item><c>byte_fallback</c> (Llama 2): where the library gives the unknown token, HF and
/// SentencePiece give the <c>&lt;0xXX&gt;</c> pieces of the unknown text's UTF-8 bytes; those pieces
/// also decode back to the bytes here.</item>
/// </list>
/// </remarks>
internal sealed class LibraryBpe
{
    // GPT-2's byte -> character table. The library has it too but keeps it internal; Klf needs it
    // only to look whole pre-tokens up for ignore_merges.
    private static readonly char[] ByteToChar = BuildByteToChar();

    // Klf has already split the text; the library must not split a pre-token again.
    private static readonly PreTokenizer WholeInput = new RegexPreTokenizer(new Regex(@"(?s).+", RegexOptions.Compiled), specialTokens: null);

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _tokens;
    private readonly bool _byteLevel, _ignoreMerges;
    private readonly int? _unkId;
    private readonly int[]? _byteIds;

    /// <summary>
    /// Builds the library tokenizer. A negative id, a merge whose parts or result are not in the
    /// vocabulary, and what the library cannot represent are errors naming <paramref name="source"/>.
    /// </summary>
    public LibraryBpe(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, bool byteLevel,
        bool ignoreMerges, bool byteFallback, string? unkToken, bool fuseUnk, string source)
    {
        _vocab = vocab;
        _byteLevel = byteLevel;
        _ignoreMerges = ignoreMerges;
        _unkId = unkToken is not null && vocab.TryGetValue(unkToken, out int unk) ? unk : null;
        int size = 0;
        foreach (var (token, id) in vocab)
        {
            if (id < 0) throw new InvalidDataException($"{source}: token {token} has negative id {id}.");
            size = Math.Max(size, id + 1);
        }
        _tokens = new string?[size];
        foreach (var (token, id) in vocab) _tokens[id] = token;
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.ContainsKey(left) || !vocab.ContainsKey(right) || !vocab.ContainsKey(left + right))
                throw new InvalidDataException($"{source}: merge {rank} ('{left}' '{right}') uses a token that is not in the vocabulary.");
            // The library takes merges as "left right" strings.
            if (left.Contains(' ') || right.Contains(' '))
                throw new InvalidDataException($"{source}: unsupported tokenizer.json component: merge {rank} ('{left}' '{right}') has a space inside a token.");
        }
        if (byteFallback && !byteLevel)
        {
            // The library drops what it cannot encode unless it has an unknown token to stand for it.
            if (_unkId is null) throw new InvalidDataException($"{source}: unsupported tokenizer.json component: byte_fallback without an unk_token in the vocabulary.");
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++)
            {
                _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id
                    : throw new InvalidDataException($"{source}: unsupported tokenizer.json component: byte_fallback without the byte piece <0x{b:X2}>.");
            }
        }
        try
        {
            _bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges.Select(m => m.Left + " " + m.Right),
                ByteLevel = byteLevel,
                PreTokenizer = WholeInput,
                UnknownToken = _unkId is null ? null : unkToken,
                // With byte fallback each unknown piece must stay separate, to be spelled in bytes.
                FuseUnknownTokens = fuseUnk && _byteIds is null,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: Microsoft.ML.Tokenizers could not build the BPE model: {e.Message}", e);
        }
    }

    /// <summary>One more than the highest vocabulary id.</summary>
    public int VocabSize => _tokens.Length;

    /// <summary>The library tokenizer (fed one pre-token at a time; see the class summary).</summary>
    public BpeTokenizer Inner => _bpe;

    /// <summary>The vocabulary id of <paramref name="token"/>, if any.</summary>
    public int? Lookup(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    /// <summary>Appends the ids of one pre-token (normalized text, not yet byte-mapped) to <paramref name="ids"/>.</summary>
    public void EncodePreToken(string preToken, List<int> ids)
    {
        if (preToken.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(_byteLevel ? ToByteChars(preToken) : preToken, out int whole))
        {
            ids.Add(whole);
            return;
        }
        if (_byteIds is null)
        {
            ids.AddRange(_bpe.EncodeToIds(preToken, considerPreTokenization: true, considerNormalization: false));
            return;
        }
        // A run of unknown tokens is spelled as the UTF-8 bytes of the text it covers: per scalar
        // that is the same, and a run keeps a surrogate pair the library may split in one piece.
        int unk = _unkId!.Value, runStart = -1, runEnd = -1;
        foreach (EncodedToken token in _bpe.EncodeToTokens(preToken, out _, considerPreTokenization: true, considerNormalization: false))
        {
            var (start, length) = token.Offset.GetOffsetAndLength(preToken.Length);
            if (token.Id == unk)
            {
                if (runStart < 0) runStart = start;
                runEnd = start + length;
                continue;
            }
            AppendBytes(preToken, ref runStart, runEnd, ids);
            ids.Add(token.Id);
        }
        AppendBytes(preToken, ref runStart, runEnd, ids);
    }

    /// <summary>The text of <paramref name="ids"/> (all within the vocabulary, special ids already removed).</summary>
    public string Decode(IEnumerable<int> ids)
    {
        if (_byteLevel) return _bpe.Decode(ids, considerSpecialTokens: false) ?? "";
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (_tokens[id] is not string token) continue;
            if (_byteIds is not null && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte raw))
                bytes.Add(raw);
            else
                bytes.AddRange(Encoding.UTF8.GetBytes(token.Replace('\u2581', ' ')));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private void AppendBytes(string text, ref int runStart, int runEnd, List<int> ids)
    {
        if (runStart < 0) return;
        foreach (byte b in Encoding.UTF8.GetBytes(text[runStart..runEnd])) ids.Add(_byteIds![b]);
        runStart = -1;
    }

    private static string ToByteChars(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var chars = new char[utf8.Length];
        for (int i = 0; i < utf8.Length; i++) chars[i] = ByteToChar[utf8[i]];
        return new string(chars);
    }

    private static char[] BuildByteToChar()
    {
        static bool Printable(int b) => (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++) table[b] = Printable(b) ? (char)b : (char)next++;
        return table;
    }
}
