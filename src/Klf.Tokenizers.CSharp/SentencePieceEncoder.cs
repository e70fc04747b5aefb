using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// What SentencePiece's BPE and Unigram encoders share, as its processor does it: normalize the
/// text, segment it (the part that differs), then turn the pieces into ids: a run of unknown pieces
/// becomes one unknown id, which byte fallback spells as the UTF-8 bytes' pieces.
/// </summary>
internal abstract class SentencePieceEncoder
{
    private readonly SentencePieceTextNormalization _normalization;
    private readonly int[]? _byteIds;

    protected SentencePieceEncoder(SentencePieceModelFile model)
    {
        _normalization = new SentencePieceTextNormalization(model);
        UnkId = model.UnkId;
        _byteIds = ByteIds(model);
    }

    /// <summary>The unknown piece's id.</summary>
    protected int UnkId { get; }

    /// <summary>Normalizes and segments <paramref name="text"/>; returns the ids.</summary>
    public List<int> Encode(string text)
    {
        string s = _normalization.Normalize(text);
        var ids = new List<int>(s.Length);
        if (s.Length == 0) return ids;
        AppendIds(s, Segment(s), ids);
        return ids;
    }

    /// <summary>
    /// The pieces of a normalized, non-empty text: spans of <paramref name="s"/> in order, each with
    /// its piece id (<see cref="UnkId"/> for an unknown span).
    /// </summary>
    protected abstract List<(int Start, int Length, int Id)> Segment(string s);

    /// <summary>
    /// The ids of the <c>&lt;0x00&gt;</c>…<c>&lt;0xFF&gt;</c> byte pieces when the model has byte fallback, else null.
    /// </summary>
    private static int[]? ByteIds(SentencePieceModelFile model)
    {
        if (!model.ByteFallback) return null;
        var byName = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < model.Pieces.Count; i++)
        {
            if (model.Types[i] == SentencePieceModelFile.PieceType.Byte) byName.TryAdd(model.Pieces[i], i);
        }
        var ids = new int[256];
        for (int b = 0; b < 256; b++)
        {
            ids[b] = byName.TryGetValue($"<0x{b:X2}>", out int id) ? id
                : throw new InvalidDataException($"'{model.Path}': byte_fallback is set but byte piece <0x{b:X2}> is missing.");
        }
        return ids;
    }

    private void AppendIds(string text, List<(int Start, int Length, int Id)> pieces, List<int> ids)
    {
        for (int i = 0; i < pieces.Count; i++)
        {
            var (start, length, id) = pieces[i];
            if (id != UnkId)
            {
                ids.Add(id);
                continue;
            }
            while (i + 1 < pieces.Count && pieces[i + 1].Id == UnkId) length += pieces[++i].Length;
            if (_byteIds is null)
            {
                ids.Add(UnkId);
            }
            else
            {
                foreach (byte b in Encoding.UTF8.GetBytes(text, start, length)) ids.Add(_byteIds[b]);
            }
        }
    }
}
