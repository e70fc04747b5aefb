using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// The few fields of a SentencePiece <c>ModelProto</c> (sentencepiece_model.proto) that Klf needs,
/// read with a minimal protobuf wire-format reader, plus the one rewrite Microsoft.ML.Tokenizers
/// (2.0.1, and still 3.0.0) needs to load models without a BOS (or EOS) piece.
/// </summary>
/// <remarks>
/// Why the rewrite: ML.Tokenizers' <c>SentencePieceUnigramModel</c> constructor checks only that
/// <c>trainer_spec.bos_id</c>/<c>eos_id</c>/<c>unk_id</c> are <em>below</em> the piece count, then writes
/// <c>_vocabReverse[trainer_spec.bos_id]</c>; a T5-style model has <c>bos_id = -1</c>, so that write
/// throws <see cref="IndexOutOfRangeException"/>. <see cref="ForLibrary"/> points a missing BOS at
/// the EOS piece (and a missing EOS at the UNK piece) in the bytes handed to the library: those
/// writes then re-mark a piece that is already a control piece and nothing else changes. Klf itself keeps the true ids (<see cref="BosId"/> stays -1) and never asks
/// the library to add a BOS for such a model.
/// </remarks>
internal sealed class SentencePieceModelFile
{
    // ModelProto fields.
    private const int PiecesField = 1, TrainerSpecField = 2, NormalizerSpecField = 3;
    // ModelProto.SentencePiece fields.
    private const int PieceTextField = 1, PieceScoreField = 2, PieceTypeField = 3;
    // NormalizerSpec fields (proto2 defaults: add_dummy_prefix, remove_extra_whitespaces and escape_whitespaces true).
    private const int CharsMapField = 2, AddDummyPrefixField = 3, RemoveExtraWhitespacesField = 4, EscapeWhitespacesField = 5;
    // TrainerSpec fields (proto2 defaults: model_type UNIGRAM, unk 0, bos 1, eos 2, pad -1).
    private const int ModelTypeField = 3, TreatWhitespaceAsSuffixField = 24, ByteFallbackField = 35;
    private const int UnkIdField = 40, BosIdField = 41, EosIdField = 42, PadIdField = 43;
    private const int BosPieceField = 46, EosPieceField = 47;

    /// <summary>ModelProto.SentencePiece.Type values.</summary>
    internal enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    /// <summary>TrainerSpec.ModelType values.</summary>
    internal enum ModelType { Unigram = 1, Bpe = 2, Word = 3, Char = 4 }

    private readonly byte[] _bytes;

    private SentencePieceModelFile(byte[] bytes, string path)
    {
        _bytes = bytes;
        Path = path;
    }

    /// <summary>The file the model came from (for messages).</summary>
    public string Path { get; }

    /// <summary>Piece strings by id.</summary>
    public IReadOnlyList<string> Pieces { get; private set; } = [];

    /// <summary>Piece types by id.</summary>
    public IReadOnlyList<PieceType> Types { get; private set; } = [];

    /// <summary>Piece scores by id (log probabilities for Unigram, merge priorities for BPE).</summary>
    public IReadOnlyList<float> Scores { get; private set; } = [];

    /// <summary>normalizer_spec.precompiled_charsmap: a Darts double-array trie plus replacement strings; empty for identity.</summary>
    public byte[] PrecompiledCharsMap { get; private set; } = [];

    /// <summary>normalizer_spec.add_dummy_prefix.</summary>
    public bool AddDummyPrefix { get; private set; } = true;

    /// <summary>normalizer_spec.remove_extra_whitespaces.</summary>
    public bool RemoveExtraWhitespaces { get; private set; } = true;

    /// <summary>normalizer_spec.escape_whitespaces.</summary>
    public bool EscapeWhitespaces { get; private set; } = true;

    /// <summary>trainer_spec.treat_whitespace_as_suffix.</summary>
    public bool TreatWhitespaceAsSuffix { get; private set; }

    /// <summary>trainer_spec.model_type.</summary>
    public ModelType Model { get; private set; } = ModelType.Unigram;

    /// <summary>trainer_spec.byte_fallback.</summary>
    public bool ByteFallback { get; private set; }

    /// <summary>trainer_spec.unk_id.</summary>
    public int UnkId { get; private set; }

    /// <summary>trainer_spec.bos_id; -1 when the model has no BOS.</summary>
    public int BosId { get; private set; } = 1;

    /// <summary>trainer_spec.eos_id; -1 when the model has no EOS.</summary>
    public int EosId { get; private set; } = 2;

    /// <summary>trainer_spec.pad_id; -1 when the model has no pad.</summary>
    public int PadId { get; private set; } = -1;

    /// <summary>Parses <paramref name="bytes"/>; any malformation is an <see cref="InvalidDataException"/> naming <paramref name="path"/>.</summary>
    public static SentencePieceModelFile Parse(byte[] bytes, string path)
    {
        var file = new SentencePieceModelFile(bytes, path);
        try
        {
            file.Read();
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid SentencePiece model: {e.Message}", e);
        }
        return file;
    }

    private void Read()
    {
        var pieces = new List<string>();
        var types = new List<PieceType>();
        var scores = new List<float>();
        foreach (var f in Fields(_bytes))
        {
            if (f.Number == PiecesField && f.Wire == WireType.Len)
            {
                string text = "";
                var type = PieceType.Normal;
                float score = 0;
                ReadOnlySpan<byte> piece = f.Payload(_bytes);
                foreach (var pf in Fields(piece))
                {
                    if (pf.Number == PieceTextField && pf.Wire == WireType.Len) text = Utf8(pf.Payload(piece));
                    else if (pf.Number == PieceScoreField && pf.Wire == WireType.I32) score = BitConverter.ToSingle(pf.Payload(piece));
                    else if (pf.Number == PieceTypeField && pf.Wire == WireType.Varint) type = (PieceType)pf.Int32;
                }
                pieces.Add(text);
                types.Add(type);
                scores.Add(score);
            }
            else if (f.Number == TrainerSpecField && f.Wire == WireType.Len)
            {
                foreach (var tf in Fields(f.Payload(_bytes)))
                {
                    if (tf.Wire != WireType.Varint) continue;
                    switch (tf.Number)
                    {
                        case ModelTypeField: Model = (ModelType)tf.Int32; break;
                        case TreatWhitespaceAsSuffixField: TreatWhitespaceAsSuffix = tf.Value != 0; break;
                        case ByteFallbackField: ByteFallback = tf.Value != 0; break;
                        case UnkIdField: UnkId = tf.Int32; break;
                        case BosIdField: BosId = tf.Int32; break;
                        case EosIdField: EosId = tf.Int32; break;
                        case PadIdField: PadId = tf.Int32; break;
                    }
                }
            }
            else if (f.Number == NormalizerSpecField && f.Wire == WireType.Len)
            {
                ReadOnlySpan<byte> spec = f.Payload(_bytes);
                foreach (var nf in Fields(spec))
                {
                    if (nf.Number == CharsMapField && nf.Wire == WireType.Len) PrecompiledCharsMap = nf.Payload(spec).ToArray();
                    else if (nf.Wire != WireType.Varint) continue;
                    else if (nf.Number == AddDummyPrefixField) AddDummyPrefix = nf.Value != 0;
                    else if (nf.Number == RemoveExtraWhitespacesField) RemoveExtraWhitespaces = nf.Value != 0;
                    else if (nf.Number == EscapeWhitespacesField) EscapeWhitespaces = nf.Value != 0;
                }
            }
        }
        if (pieces.Count == 0) throw new InvalidDataException("it holds no pieces");
        Pieces = pieces;
        Types = types;
        Scores = scores;
        if (UnkId < 0 || UnkId >= pieces.Count) throw new InvalidDataException($"unk_id {UnkId} is outside the {pieces.Count} pieces");
        foreach (var (name, id) in new[] { ("bos_id", BosId), ("eos_id", EosId), ("pad_id", PadId) })
        {
            if (id >= pieces.Count) throw new InvalidDataException($"{name} {id} is outside the {pieces.Count} pieces");
        }
        if (Model is not (ModelType.Unigram or ModelType.Bpe))
        {
            throw new InvalidDataException($"model_type {Model} is not supported (only Unigram and BPE)");
        }
    }

    /// <summary>
    /// The model bytes to hand to Microsoft.ML.Tokenizers: the original bytes when BOS and EOS
    /// exist, otherwise a copy whose trainer_spec names a present control piece for the missing
    /// one (see the class remarks).
    /// </summary>
    public byte[] ForLibrary()
    {
        if (BosId >= 0 && EosId >= 0) return _bytes;
        int eos = EosId >= 0 ? EosId : UnkId;
        int bos = BosId >= 0 ? BosId : eos;
        var overrides = new List<(int Field, int? Id, string? Piece)>();
        if (EosId < 0) overrides.AddRange([(EosIdField, eos, null), (EosPieceField, null, Pieces[eos])]);
        if (BosId < 0) overrides.AddRange([(BosIdField, bos, null), (BosPieceField, null, Pieces[bos])]);

        var output = new MemoryStream(_bytes.Length + 32);
        bool trainerSpecSeen = false;
        foreach (var f in Fields(_bytes))
        {
            if (f.Number == TrainerSpecField && f.Wire == WireType.Len)
            {
                WriteTrainerSpec(output, f.Payload(_bytes), overrides);
                trainerSpecSeen = true;
            }
            else
            {
                output.Write(_bytes, f.TagStart, f.End - f.TagStart);
            }
        }
        if (!trainerSpecSeen) WriteTrainerSpec(output, [], overrides);
        return output.ToArray();
    }

    private static void WriteTrainerSpec(MemoryStream output, ReadOnlySpan<byte> spec, List<(int Field, int? Id, string? Piece)> overrides)
    {
        var body = new MemoryStream(spec.Length + 32);
        var replaced = overrides.Select(o => o.Field).ToHashSet();
        foreach (var f in Fields(spec))
        {
            if (!replaced.Contains(f.Number)) body.Write(spec[f.TagStart..f.End]);
        }
        foreach (var (field, id, piece) in overrides)
        {
            if (id is int v)
            {
                WriteVarint(body, (ulong)(field << 3 | (int)WireType.Varint));
                WriteVarint(body, (ulong)(long)v);
            }
            else
            {
                byte[] text = Encoding.UTF8.GetBytes(piece!);
                WriteVarint(body, (ulong)(field << 3 | (int)WireType.Len));
                WriteVarint(body, (ulong)text.Length);
                body.Write(text);
            }
        }
        WriteVarint(output, TrainerSpecField << 3 | (int)WireType.Len);
        WriteVarint(output, (ulong)body.Length);
        body.Position = 0;
        body.CopyTo(output);
    }

    // ---- minimal protobuf wire format ----

    private enum WireType { Varint = 0, I64 = 1, Len = 2, I32 = 5 }

    /// <summary>One field: its tag's offset, its payload (Start, Length) for LEN fields, and its varint value.</summary>
    private readonly record struct Field(int Number, WireType Wire, int TagStart, int Start, int Length, ulong Value)
    {
        public int End => Start + Length;
        public int Int32 => unchecked((int)(long)Value);
        public ReadOnlySpan<byte> Payload(ReadOnlySpan<byte> message) => message.Slice(Start, Length);
    }

    private static List<Field> Fields(ReadOnlySpan<byte> message)
    {
        var fields = new List<Field>();
        int pos = 0;
        while (pos < message.Length)
        {
            int tagStart = pos;
            ulong tag = ReadVarint(message, ref pos);
            int number = (int)(tag >> 3);
            var wire = (WireType)(tag & 7);
            if (number == 0) throw new InvalidDataException($"field number 0 at byte {tagStart}");
            switch (wire)
            {
                case WireType.Varint:
                    int start = pos;
                    ulong value = ReadVarint(message, ref pos);
                    fields.Add(new Field(number, wire, tagStart, start, pos - start, value));
                    break;
                case WireType.I64:
                case WireType.I32:
                    int size = wire == WireType.I64 ? 8 : 4;
                    if (pos + size > message.Length) throw new InvalidDataException($"truncated fixed-size field at byte {tagStart}");
                    fields.Add(new Field(number, wire, tagStart, pos, size, 0));
                    pos += size;
                    break;
                case WireType.Len:
                    ulong length = ReadVarint(message, ref pos);
                    if (length > (ulong)(message.Length - pos)) throw new InvalidDataException($"field {number} at byte {tagStart} runs past the end");
                    fields.Add(new Field(number, wire, tagStart, pos, (int)length, 0));
                    pos += (int)length;
                    break;
                default:
                    throw new InvalidDataException($"unsupported wire type {(int)wire} at byte {tagStart}");
            }
        }
        return fields;
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= data.Length) throw new InvalidDataException("truncated varint");
            byte b = data[pos++];
            result |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return result;
        }
        throw new InvalidDataException("varint longer than 10 bytes");
    }

    private static void WriteVarint(Stream output, ulong value)
    {
        while (value >= 0x80)
        {
            output.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        output.WriteByte((byte)value);
    }

    private static string Utf8(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException("a piece is not valid UTF-8", e);
        }
    }
}
