using System.Text;

namespace Klf.Tokenizers;

/// <summary>The last step shared by the BPE and Unigram encoders: pieces to ids, as SentencePiece's processor does it.</summary>
internal static class SentencePieceOutput
{
    /// <summary>
    /// The ids of the <c>&lt;0x00&gt;</c>…<c>&lt;0xFF&gt;</c> byte pieces when the model has byte fallback, else null.
    /// </summary>
    public static int[]? ByteIds(SentencePieceModelFile model)
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

    /// <summary>
    /// Appends the ids of <paramref name="pieces"/> (spans of <paramref name="text"/>, in order) to
    /// <paramref name="ids"/>: a run of unknown pieces becomes one unknown piece, and with byte
    /// fallback an unknown piece is spelled as its UTF-8 bytes.
    /// </summary>
    public static void AppendIds(string text, List<(int Start, int Length, int Id)> pieces, int unkId, int[]? byteIds, List<int> ids)
    {
        for (int i = 0; i < pieces.Count; i++)
        {
            var (start, length, id) = pieces[i];
            if (id != unkId)
            {
                ids.Add(id);
                continue;
            }
            while (i + 1 < pieces.Count && pieces[i + 1].Id == unkId) length += pieces[++i].Length;
            if (byteIds is null)
            {
                ids.Add(unkId);
            }
            else
            {
                foreach (byte b in Encoding.UTF8.GetBytes(text, start, length)) ids.Add(byteIds[b]);
            }
        }
    }
}
