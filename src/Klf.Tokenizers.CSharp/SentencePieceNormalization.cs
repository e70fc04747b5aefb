using System.Buffers.Binary;
using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// SentencePiece's text normalizer, as <c>spm_normalize</c> / <c>spm_encode</c> apply it: the model's
/// precompiled character map (e.g. nmt_nfkc), whitespace trimming and collapsing, the dummy prefix
/// and the U+2581 space marker. User-defined pieces pass through unchanged.
/// </summary>
/// <remarks>
/// Exists because the SentencePiece BPE path of Microsoft.ML.Tokenizers (2.0.1, and still 3.0.0)
/// normalizes ignoring the precompiled character map (so "a\u2002b" keeps its en space, which
/// SentencePiece turns into a plain space) and encodes one-character input to nothing. The
/// library's Unigram path uses a different, correct normalizer.
/// </remarks>
internal sealed class SentencePieceTextNormalization
{
    private static readonly byte[] SpaceMarker = "\u2581"u8.ToArray();

    private readonly uint[] _trie = [];
    private readonly byte[] _replacements = [];
    private readonly bool _addDummyPrefix, _removeExtraWhitespaces, _escapeWhitespaces, _whitespaceAsSuffix;
    private readonly byte[][] _userDefined;

    public SentencePieceTextNormalization(SentencePieceModelFile model)
    {
        _addDummyPrefix = model.AddDummyPrefix;
        _removeExtraWhitespaces = model.RemoveExtraWhitespaces;
        _escapeWhitespaces = model.EscapeWhitespaces;
        _whitespaceAsSuffix = model.TreatWhitespaceAsSuffix;
        _userDefined = UserDefinedPieces(model).Select(p => Encoding.UTF8.GetBytes(p)).ToArray();

        byte[] map = model.PrecompiledCharsMap;
        if (map.Length == 0) return;
        // Layout: uint32 (little endian) trie size in bytes, the trie's uint32 units, then the
        // NUL-terminated replacement strings the trie's values point into.
        uint trieSize = map.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(map) : uint.MaxValue;
        if (trieSize % 4 != 0 || trieSize > (uint)(map.Length - 4))
            throw new InvalidDataException($"'{model.Path}': the precompiled character map is malformed.");
        _trie = new uint[trieSize / 4];
        for (int i = 0; i < _trie.Length; i++) _trie[i] = BinaryPrimitives.ReadUInt32LittleEndian(map.AsSpan(4 + 4 * i));
        _replacements = map[(4 + (int)trieSize)..];
    }

    /// <summary>User-defined pieces, longest first (matched before anything else, never normalized).</summary>
    public static IEnumerable<string> UserDefinedPieces(SentencePieceModelFile model) =>
        Enumerable.Range(0, model.Pieces.Count)
            .Where(i => model.Types[i] == SentencePieceModelFile.PieceType.UserDefined && model.Pieces[i].Length > 0)
            .Select(i => model.Pieces[i])
            .OrderByDescending(p => Encoding.UTF8.GetByteCount(p));

    /// <summary>Normalizes <paramref name="text"/> as SentencePiece does before segmenting it.</summary>
    public string Normalize(string text)
    {
        ReadOnlySpan<byte> input = Encoding.UTF8.GetBytes(text);
        var output = new List<byte>(input.Length * 3 + 3);

        if (_removeExtraWhitespaces)
        {
            // Leading characters that normalize to exactly one space are dropped.
            while (!input.IsEmpty)
            {
                ReadOnlySpan<byte> piece = NormalizePrefix(input, out int consumed);
                if (piece is not [(byte)' ']) break;
                input = input[consumed..];
            }
        }
        if (input.IsEmpty) return "";

        if (!_whitespaceAsSuffix && _addDummyPrefix) AddSpace(output);

        bool previousIsSpace = _removeExtraWhitespaces;
        while (!input.IsEmpty)
        {
            ReadOnlySpan<byte> piece = NormalizePrefix(input, out int consumed);
            if (previousIsSpace)
            {
                while (piece is [(byte)' ', ..]) piece = piece[1..];
            }
            if (!piece.IsEmpty)
            {
                foreach (byte b in piece)
                {
                    if (_escapeWhitespaces && b == (byte)' ') output.AddRange(SpaceMarker);
                    else output.Add(b);
                }
                previousIsSpace = piece[^1] == (byte)' ';
            }
            input = input[consumed..];
            if (!_removeExtraWhitespaces) previousIsSpace = false;
        }

        if (_removeExtraWhitespaces)
        {
            ReadOnlySpan<byte> space = _escapeWhitespaces ? SpaceMarker : " "u8;
            while (output.Count >= space.Length && System.Runtime.InteropServices.CollectionsMarshal.AsSpan(output)[^space.Length..].SequenceEqual(space))
                output.RemoveRange(output.Count - space.Length, space.Length);
        }

        if (_whitespaceAsSuffix && _addDummyPrefix) AddSpace(output);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(output));
    }

    private void AddSpace(List<byte> output)
    {
        if (_escapeWhitespaces) output.AddRange(SpaceMarker);
        else output.Add((byte)' ');
    }

    /// <summary>The normalized form of the longest normalizable prefix of <paramref name="input"/>; <paramref name="consumed"/> is its length in bytes.</summary>
    private ReadOnlySpan<byte> NormalizePrefix(ReadOnlySpan<byte> input, out int consumed)
    {
        foreach (byte[] symbol in _userDefined)
        {
            if (input.StartsWith(symbol))
            {
                consumed = symbol.Length;
                return input[..consumed];
            }
        }

        var (length, value) = LongestRule(input);
        if (length > 0)
        {
            consumed = length;
            int end = Array.IndexOf(_replacements, (byte)0, value);
            return _replacements.AsSpan(value, (end < 0 ? _replacements.Length : end) - value);
        }

        consumed = Utf8Length(input);
        return input[..consumed];
    }

    /// <summary>Length in bytes of the UTF-8 character starting <paramref name="input"/> (input comes from a .NET string, so it is valid UTF-8).</summary>
    internal static int Utf8Length(ReadOnlySpan<byte> input)
    {
        byte b = input[0];
        int n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        return Math.Min(n, input.Length);
    }

    /// <summary>
    /// Darts-clone common-prefix search over the character map's double array; returns the
    /// longest matching key's length and its value (an offset into the replacement strings).
    /// </summary>
    private (int Length, int Value) LongestRule(ReadOnlySpan<byte> key)
    {
        if (_trie.Length == 0) return (0, 0);
        int best = 0, bestValue = 0;
        uint node = Offset(_trie[0]);
        for (int i = 0; i < key.Length; i++)
        {
            node ^= key[i];
            if (node >= (uint)_trie.Length) break;
            uint unit = _trie[node];
            if (Label(unit) != key[i]) break;
            node ^= Offset(unit);
            if (HasLeaf(unit))
            {
                if (node >= (uint)_trie.Length) break;
                int value = (int)(_trie[node] & 0x7FFFFFFF);
                if (value >= _replacements.Length) break;
                best = i + 1;
                bestValue = value;
            }
        }
        return (best, bestValue);

        static bool HasLeaf(uint unit) => ((unit >> 8) & 1) == 1;
        static uint Label(uint unit) => unit & ((1u << 31) | 0xFF);
        static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);
    }
}
