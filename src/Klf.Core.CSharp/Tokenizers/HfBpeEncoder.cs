using System.Collections.Concurrent;
using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// BPE as Hugging Face <c>tokenizers</c> runs it for a SentencePiece-style <c>tokenizer.json</c>
/// (Llama 2, TinyLlama): the symbols are the pre-token's characters; adjacent symbols are merged
/// lowest merge rank first (leftmost on ties) until no listed merge applies. With
/// <c>ignore_merges</c> a pre-token that is itself in the vocabulary is one token. A symbol outside
/// the vocabulary becomes its <c>&lt;0xXX&gt;</c> byte pieces with byte fallback, else the unknown id
/// (consecutive ones fused into one with <c>fuse_unk</c>), else is dropped (as HF does without
/// <c>unk_token</c>).
/// </summary>
/// <remarks>
/// Klf's own code because Microsoft.ML.Tokenizers 3.0.0's <c>BpeTokenizer</c> has no
/// <c>byte_fallback</c>: it gives the unknown id where SentencePiece and HF give byte pieces, on every
/// line with a character outside the vocabulary (26 of 1011 compared lines; see docs/tokenizers.md).
/// Byte-level files go through the library (<see cref="LibraryByteLevelBpe"/>).
/// </remarks>
internal sealed class HfBpeEncoder : ITokenizerJsonBpe
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    private readonly string[] _tokens;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly bool _ignoreMerges, _byteFallback, _fuseUnk;
    private readonly int? _unkId;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    /// <summary>Builds the encoder; a merge whose parts or result are not in the vocabulary is an error naming <paramref name="source"/>.</summary>
    public HfBpeEncoder(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        bool ignoreMerges, bool byteFallback, int? unkId, bool fuseUnk, string source)
    {
        _vocab = vocab;
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _tokens = new string[BpeVocabulary.Size(vocab, source)];
        foreach (var (token, id) in vocab) _tokens[id] = token;
        BpeVocabulary.CheckMerges(vocab, merges, source);
        _ranks = new Dictionary<(string, string), int>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++) _ranks.TryAdd(merges[rank], rank);
        _ignoreMerges = ignoreMerges;
        _byteFallback = byteFallback;
        _unkId = unkId;
        _fuseUnk = fuseUnk;
    }

    /// <inheritdoc/>
    public int VocabSize => _tokens.Length;

    /// <inheritdoc/>
    public int? Lookup(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    /// <inheritdoc/>
    public void EncodePreToken(string preToken, List<int> ids)
    {
        if (preToken.Length == 0) return;
        if (!_cache.TryGetValue(preToken, out int[]? cached))
        {
            cached = EncodeWord(preToken);
            if (_cache.Count < 200_000 && preToken.Length <= 256) _cache.TryAdd(preToken, cached);
        }
        ids.AddRange(cached);
    }

    /// <summary>
    /// Concatenates the tokens of <paramref name="ids"/> and turns them back into text:
    /// <c>&lt;0xXX&gt;</c> pieces back to UTF-8 bytes, "▁" to a space.
    /// </summary>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            string? token = (uint)id < (uint)_tokens.Length ? _tokens[id] : null;
            if (token is null) continue;
            if (_byteFallback && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
                && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte raw))
            {
                bytes.Add(raw);
                continue;
            }
            bytes.AddRange(Encoding.UTF8.GetBytes(token.Replace('\u2581', ' ')));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private int[] EncodeWord(string word)
    {
        if (_ignoreMerges && _vocabBySpan.TryGetValue(word, out int whole)) return [whole];
        // Symbols: spans of word in a linked list; a merged-away symbol has length 0.
        var start = new List<int>(word.Length);
        for (int i = 0; i < word.Length; i += char.IsSurrogatePair(word, i) ? 2 : 1) start.Add(i);
        int count = start.Count;
        var length = new int[count];
        var next = new int[count];
        var prev = new int[count];
        for (int i = 0; i < count; i++)
        {
            length[i] = (i + 1 < count ? start[i + 1] : word.Length) - start[i];
            next[i] = i + 1 < count ? i + 1 : -1;
            prev[i] = i - 1;
        }
        // Lowest rank first, leftmost among equal ranks; stale entries are recognised by their lengths.
        var agenda = new PriorityQueue<(int Left, int Right, int LeftLength, int RightLength), (int Rank, int Position)>();
        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0) return;
            var pair = (word.Substring(start[left], length[left]), word.Substring(start[right], length[right]));
            if (_ranks.TryGetValue(pair, out int rank)) agenda.Enqueue((left, right, length[left], length[right]), (rank, start[left]));
        }
        for (int i = 0; i + 1 < count; i++) TryAdd(i, i + 1);
        while (agenda.TryDequeue(out var top, out _))
        {
            if (next[top.Left] != top.Right || length[top.Left] != top.LeftLength || length[top.Right] != top.RightLength) continue;
            length[top.Left] += length[top.Right];
            length[top.Right] = 0;
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0) prev[next[top.Right]] = top.Left;
            TryAdd(prev[top.Left], top.Left);
            TryAdd(top.Left, next[top.Left]);
        }
        var symbols = new List<string>();
        for (int i = 0; i >= 0; i = next[i]) symbols.Add(word.Substring(start[i], length[i]));
        var ids = new List<int>(symbols.Count);
        bool previousUnknown = false;
        foreach (string symbol in symbols)
        {
            if (_vocab.TryGetValue(symbol, out int id)) ids.Add(id);
            else if (_byteFallback && ByteFallbackIds(symbol) is List<int> byteIds) ids.AddRange(byteIds);
            else if (_unkId is int unk && !(_fuseUnk && ids.Count > 0 && ids[^1] == unk && previousUnknown)) ids.Add(unk);
            previousUnknown = !_vocab.ContainsKey(symbol);
        }
        return ids.ToArray();
    }

    private List<int>? ByteFallbackIds(string symbol)
    {
        var ids = new List<int>();
        foreach (byte b in Encoding.UTF8.GetBytes(symbol))
        {
            if (!_vocab.TryGetValue($"<0x{b:X2}>", out int id)) return null;
            ids.Add(id);
        }
        return ids;
    }
}
