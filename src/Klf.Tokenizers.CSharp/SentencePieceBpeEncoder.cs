namespace Klf.Tokenizers;

/// <summary>
/// SentencePiece's BPE segmentation (bpe_model.cc): start from characters (user-defined pieces
/// whole and frozen), repeatedly merge the adjacent pair whose concatenation is the
/// highest-scoring piece, the <b>leftmost</b> such pair on ties; split unused pieces back into the
/// pieces they were merged from; runs of unknown characters become one unknown id, which byte
/// fallback spells as UTF-8 byte pieces.
/// </summary>
/// <remarks>
/// Exists because Microsoft.ML.Tokenizers' SentencePiece BPE (2.0.1, and still 3.0.0) breaks score
/// ties towards the <b>rightmost</b> pair ("!!!" becomes "!" "!!" where SentencePiece gives "!!" "!"),
/// besides the normalization problems described on <see cref="SentencePieceTextNormalization"/>; a
/// test pins each case, and docs/tokenizers.md has the counts. The library still decodes.
/// </remarks>
internal sealed class SentencePieceBpeEncoder : SentencePieceEncoder
{
    private readonly Dictionary<string, (int Id, float Score, bool Unused)> _mergeable = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _reserved = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Id, float Score, bool Unused)>.AlternateLookup<ReadOnlySpan<char>> _mergeableBySpan;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _reservedBySpan;
    private readonly string[] _userDefined;

    public SentencePieceBpeEncoder(SentencePieceModelFile model) : base(model)
    {
        for (int i = 0; i < model.Pieces.Count; i++)
        {
            var type = model.Types[i];
            if (type is SentencePieceModelFile.PieceType.Normal or SentencePieceModelFile.PieceType.UserDefined or SentencePieceModelFile.PieceType.Unused)
                _mergeable.TryAdd(model.Pieces[i], (i, model.Scores[i], type == SentencePieceModelFile.PieceType.Unused));
            else
                _reserved.TryAdd(model.Pieces[i], i);
        }
        _mergeableBySpan = _mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        _reservedBySpan = _reserved.GetAlternateLookup<ReadOnlySpan<char>>();
        _userDefined = SentencePieceTextNormalization.UserDefinedPieces(model).ToArray();
    }

    /// <inheritdoc/>
    protected override List<(int Start, int Length, int Id)> Segment(string s)
    {

        // Symbols: a doubly linked list over spans of s; a merged-away symbol has length 0.
        var start = new List<int>();
        var length = new List<int>();
        var frozen = new List<bool>();
        for (int pos = 0; pos < s.Length;)
        {
            int n = UserDefinedAt(s, pos);
            bool isUserDefined = n > 0;
            if (!isUserDefined) n = char.IsSurrogatePair(s, pos) ? 2 : 1;
            start.Add(pos);
            length.Add(n);
            frozen.Add(isUserDefined);
            pos += n;
        }
        int count = start.Count;
        var prev = new int[count];
        var next = new int[count];
        for (int i = 0; i < count; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
        }

        // Highest score first; among equal scores the leftmost pair, as SentencePiece does.
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(
            Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        // How each unused piece was formed (left and right lengths), to split it again afterwards.
        var revMerge = new Dictionary<string, (int LeftLength, int RightLength)>(StringComparer.Ordinal);

        void TryAddPair(int left, int right)
        {
            if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
            int n = length[left] + length[right];
            if (!_mergeableBySpan.TryGetValue(s.AsSpan(start[left], n), out var piece)) return;
            agenda.Enqueue((left, right, n), (piece.Score, left));
            if (piece.Unused) revMerge[s.Substring(start[left], n)] = (length[left], length[right]);
        }

        for (int i = 1; i < count; i++) TryAddPair(i - 1, i);
        while (agenda.TryDequeue(out var top, out _))
        {
            if (length[top.Left] == 0 || length[top.Right] == 0 || length[top.Left] + length[top.Right] != top.Length) continue;
            length[top.Left] = top.Length;
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0) prev[next[top.Right]] = top.Left;
            length[top.Right] = 0;
            TryAddPair(prev[top.Left], top.Left);
            TryAddPair(top.Left, next[top.Left]);
        }

        var pieces = new List<(int Start, int Length, int Id)>();
        void Resegment(int at, int n)
        {
            int id = PieceToId(s.AsSpan(at, n), out bool unused);
            if (unused && revMerge.TryGetValue(s.Substring(at, n), out var parts))
            {
                Resegment(at, parts.LeftLength);
                Resegment(at + parts.LeftLength, parts.RightLength);
                return;
            }
            pieces.Add((at, n, id));
        }
        for (int i = 0; i >= 0; i = next[i]) Resegment(start[i], length[i]);

        return pieces;
    }

    private int PieceToId(ReadOnlySpan<char> piece, out bool unused)
    {
        unused = false;
        // As SentencePiece's PieceToId: control, unknown and byte pieces first.
        if (_reservedBySpan.TryGetValue(piece, out int reserved)) return reserved;
        if (_mergeableBySpan.TryGetValue(piece, out var p))
        {
            unused = p.Unused;
            return p.Id;
        }
        return UnkId;
    }

    private int UserDefinedAt(string s, int pos)
    {
        foreach (string symbol in _userDefined)
        {
            if (s.AsSpan(pos).StartsWith(symbol, StringComparison.Ordinal)) return symbol.Length;
        }
        return 0;
    }
}
