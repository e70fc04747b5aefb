namespace Klf.Tokenizers;

/// <summary>
/// SentencePiece's Unigram segmentation (unigram_model.cc, the optimized Viterbi used by
/// <c>spm_encode</c>): for each end position keep the best path, scanning start positions left to
/// right; a later candidate replaces the best only when strictly better, comparing the candidate
/// in double precision with the best stored in single precision, as SentencePiece does. A
/// character no piece starts with is an unknown piece scoring <c>min score − 10</c>; a run of
/// unknown characters becomes one unknown id.
/// </summary>
/// <remarks>
/// Exists because Microsoft.ML.Tokenizers' Unigram path (2.0.1, and still 3.0.0), while normalizing
/// correctly, gives one unknown id per character of a run of unknown characters, and settles
/// near-ties differently: whether "....." becomes ". . ..." or ". ... ." can hinge on the rounding of
/// the score accumulated so far, and the library rounds differently from SentencePiece (3.0.0: 19
/// and 1 of 1011 compared lines).
/// </remarks>
internal sealed class SentencePieceUnigramEncoder : SentencePieceEncoder
{
    private const float UnknownPenalty = 10f;

    private readonly Dictionary<string, (int Id, float Score, bool UserDefined)> _pieces = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Id, float Score, bool UserDefined)>.AlternateLookup<ReadOnlySpan<char>> _piecesBySpan;
    private readonly int _maxPieceLength;
    private readonly float _unknownScore, _maxScore;

    public SentencePieceUnigramEncoder(SentencePieceModelFile model) : base(model)
    {
        float min = float.MaxValue, max = float.MinValue;
        for (int i = 0; i < model.Pieces.Count; i++)
        {
            var type = model.Types[i];
            // Unused pieces are in SentencePiece's trie but never chosen; leaving them out is the same.
            if (type is not (SentencePieceModelFile.PieceType.Normal or SentencePieceModelFile.PieceType.UserDefined)) continue;
            if (model.Pieces[i].Length == 0 || !_pieces.TryAdd(model.Pieces[i], (i, model.Scores[i], type == SentencePieceModelFile.PieceType.UserDefined))) continue;
            _maxPieceLength = Math.Max(_maxPieceLength, model.Pieces[i].Length);
            if (type == SentencePieceModelFile.PieceType.Normal)
            {
                min = Math.Min(min, model.Scores[i]);
                max = Math.Max(max, model.Scores[i]);
            }
        }
        _piecesBySpan = _pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        _unknownScore = min - UnknownPenalty;
        _maxScore = max;
    }

    /// <inheritdoc/>
    protected override List<(int Start, int Length, int Id)> Segment(string s)
    {

        // best*[e]: the best path over s[..e]: its score, where its last piece starts, and that piece's id.
        var bestScore = new float[s.Length + 1];
        var bestStart = new int[s.Length + 1];
        var bestId = new int[s.Length + 1];
        Array.Fill(bestStart, -1);

        for (int start = 0; start < s.Length;)
        {
            int charLength = char.IsSurrogatePair(s, start) ? 2 : 1;
            float before = bestScore[start];
            bool singleCharPiece = false;
            int longest = Math.Min(_maxPieceLength, s.Length - start);
            for (int n = 1; n <= longest; n++)
            {
                if (!_piecesBySpan.TryGetValue(s.AsSpan(start, n), out var piece)) continue;
                // SentencePiece's piece score is a double there (the user-defined bonus, which makes
                // user-defined pieces always win, is computed in double), so the candidate is compared
                // in double against the stored single-precision best; matching that matters for ties.
                double score = piece.UserDefined ? n * (double)_maxScore - 0.1 : piece.Score;
                Offer(start + n, score + before, start, piece.Id);
                if (n == charLength) singleCharPiece = true;
            }
            if (!singleCharPiece) Offer(start + charLength, _unknownScore + before, start, UnkId);
            start += charLength;
        }

        var pieces = new List<(int Start, int Length, int Id)>();
        for (int end = s.Length; end > 0; end = bestStart[end]) pieces.Add((bestStart[end], end - bestStart[end], bestId[end]));
        pieces.Reverse();
        return pieces;

        // A later start replaces the best path only when strictly better.
        void Offer(int end, double score, int start, int id)
        {
            if (bestStart[end] == -1 || score > bestScore[end])
            {
                bestScore[end] = (float)score;
                bestStart[end] = start;
                bestId[end] = id;
            }
        }
    }
}
