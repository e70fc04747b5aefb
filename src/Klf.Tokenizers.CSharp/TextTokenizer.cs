namespace Klf.Tokenizers;

/// <summary>
/// What every Klf tokenizer shares: its kind, name, vocabulary size and special ids; encoding framed
/// by optional BOS and EOS ids; decoding that rejects ids outside the vocabulary and drops the ids
/// the tokenizer does not spell out (by default BOS, EOS, pad and unk). A tokenizer supplies the
/// text-to-ids and ids-to-text steps in between. The concrete tokenizers are created by
/// <see cref="TokenizerLoader"/>; implement <see cref="ITextTokenizer"/> for a tokenizer of your own.
/// </summary>
public abstract class TextTokenizer : ITextTokenizer
{
    private protected TextTokenizer(TokenizerKind kind, string name, int vocabSize, SpecialTokenIds ids)
    {
        Kind = kind;
        Name = name;
        VocabSize = vocabSize;
        BosId = ids.Bos;
        EosId = ids.Eos;
        PadId = ids.Pad;
        UnkId = ids.Unk;
    }

    /// <inheritdoc/>
    public TokenizerKind Kind { get; }

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int EosId { get; }

    /// <inheritdoc/>
    public int PadId { get; }

    /// <inheritdoc/>
    public int UnkId { get; }

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        int? bos = addBos ? BosId ?? throw new InvalidOperationException($"{Name} has no beginning-of-sequence token; encode without addBos.") : null;
        return Frame(EncodeText(text), bos, addEos ? EosId : null);
    }

    /// <inheritdoc/>
    public string Decode(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = new List<int>(ids.Count);
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {VocabSize}.");
            if (!SkippedInDecode(id)) kept.Add(id);
        }
        return DecodeKept(kept);
    }

    /// <summary>The ids of <paramref name="text"/> without BOS and EOS.</summary>
    private protected abstract IReadOnlyList<int> EncodeText(string text);

    /// <summary>The text of ids that lie in the vocabulary and are not skipped.</summary>
    private protected abstract string DecodeKept(IReadOnlyList<int> ids);

    /// <summary>Whether <see cref="Decode"/> drops <paramref name="id"/>: by default BOS, EOS, pad and unk.</summary>
    private protected virtual bool SkippedInDecode(int id) => id == EosId || id == PadId || id == UnkId || id == BosId;

    /// <summary>Copies <paramref name="body"/> into a fresh array, with optional first and last ids.</summary>
    private static int[] Frame(IReadOnlyList<int> body, int? first, int? last)
    {
        int offset = first is null ? 0 : 1;
        var result = new int[body.Count + offset + (last is null ? 0 : 1)];
        if (first is int f) result[0] = f;
        for (int i = 0; i < body.Count; i++) result[offset + i] = body[i];
        if (last is int l) result[^1] = l;
        return result;
    }
}
