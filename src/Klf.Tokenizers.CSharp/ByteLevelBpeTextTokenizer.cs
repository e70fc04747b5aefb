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
public sealed class ByteLevelBpeTextTokenizer : TextTokenizer
{
    /// <summary>GPT-2's pre-tokenization: contractions, letters, digits, other symbols (each with an optional leading space), whitespace.</summary>
    internal static readonly Regex Gpt2Split = new(
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    private readonly BpeTokenizer _inner;

    internal ByteLevelBpeTextTokenizer(BpeTokenizer inner, string source, SpecialTokenIds ids)
        : base(TokenizerKind.ByteLevelBpe, $"{TokenizerKind.ByteLevelBpe} ({source}, {SizeOf(inner)} ids)", SizeOf(inner), ids)
    {
        _inner = inner;
    }

    private static int SizeOf(BpeTokenizer inner) => inner.Vocabulary.Count == 0 ? 0 : inner.Vocabulary.Values.Max() + 1;

    /// <summary>The underlying Microsoft.ML.Tokenizers object, for APIs this wrapper does not expose.</summary>
    public BpeTokenizer Inner => _inner;

    private protected override IReadOnlyList<int> EncodeText(string text) => _inner.EncodeToIds(text);

    private protected override string DecodeKept(IReadOnlyList<int> ids) => _inner.Decode(ids, considerSpecialTokens: false) ?? "";
}
