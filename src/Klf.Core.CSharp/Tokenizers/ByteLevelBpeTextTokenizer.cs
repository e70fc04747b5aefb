using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>
/// GPT-2 style byte-level BPE (<c>vocab.json</c> + <c>merges.txt</c>) over Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/> in byte-level mode (bytes mapped to printable characters, a space
/// becoming 'Ġ'), with GPT-2's pre-tokenizer regex. No prefix space is added.
/// Create through <see cref="TokenizerLoader"/>.
/// </summary>
/// <remarks>
/// Not the library's <see cref="CodeGenTokenizer"/>: that one also adds CodeGen's extra
/// whitespace-run tokens (ids from 50257 up), which GPT-2 vocabularies do not have.
/// </remarks>
public sealed class ByteLevelBpeTextTokenizer : ITextTokenizer
{
    /// <summary>GPT-2's pre-tokenization: contractions, letters, digits, other symbols (each with an optional leading space), whitespace.</summary>
    internal static readonly Regex Gpt2Split = new(
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    private readonly BpeTokenizer _inner;
    private readonly HashSet<int> _special;

    internal ByteLevelBpeTextTokenizer(BpeTokenizer inner, string source, SpecialTokenIds ids)
    {
        _inner = inner;
        VocabSize = inner.Vocabulary.Count == 0 ? 0 : inner.Vocabulary.Values.Max() + 1;
        Name = $"{Kind} ({source}, {VocabSize} ids)";
        BosId = ids.Bos;
        EosId = ids.Eos;
        PadId = ids.Pad;
        UnkId = ids.Unk;
        _special = new HashSet<int> { ids.Eos, ids.Pad, ids.Unk };
        if (ids.Bos is int b) _special.Add(b);
    }

    /// <inheritdoc/>
    public TokenizerKind Kind => TokenizerKind.ByteLevelBpe;

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

    /// <summary>The underlying Microsoft.ML.Tokenizers object, for APIs this wrapper does not expose.</summary>
    public BpeTokenizer Inner => _inner;

    /// <inheritdoc/>
    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> body = _inner.EncodeToIds(text);
        int? bos = addBos ? BosId ?? throw new InvalidOperationException($"{Name} has no beginning-of-sequence token; encode without addBos.") : null;
        return TokenIds.Frame(body, bos, addEos ? EosId : null);
    }

    /// <inheritdoc/>
    public string Decode(IReadOnlyList<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = new List<int>(ids.Count);
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {VocabSize}.");
            if (!_special.Contains(id)) kept.Add(id);
        }
        return _inner.Decode(kept, considerSpecialTokens: false) ?? "";
    }
}
