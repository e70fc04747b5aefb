using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Klf.Tokenizers;

/// <summary>The BPE model of a <c>tokenizer.json</c>, fed one pre-token at a time.</summary>
internal interface ITokenizerJsonBpe
{
    /// <summary>One more than the highest vocabulary id.</summary>
    int VocabSize { get; }

    /// <summary>The vocabulary id of <paramref name="token"/>, if any.</summary>
    int? Lookup(string token);

    /// <summary>Appends the ids of one pre-token (normalized text, not yet byte-mapped) to <paramref name="ids"/>.</summary>
    void EncodePreToken(string preToken, List<int> ids);

    /// <summary>The text of <paramref name="ids"/> (all within the vocabulary, special ids already removed).</summary>
    string Decode(IEnumerable<int> ids);
}

/// <summary>
/// Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM <c>tokenizer.json</c>) through Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/>: the library maps bytes, merges and decodes. Klf pre-tokenizes (the
/// file's Split / Digits / ByteLevel chain, which the library's single-regex pre-tokenizer cannot
/// express) and hands the library one pre-token at a time.
/// </summary>
/// <remarks>
/// <c>ignore_merges</c> (Llama 3) is applied here, before the library: ML.Tokenizers 3.0.0's
/// <see cref="BpeOptions"/> has no such option, so a pre-token that is itself a vocabulary token but is
/// not what the merges build would otherwise be split (see the tokenizer.json tests).
/// </remarks>
internal sealed class LibraryByteLevelBpe : ITokenizerJsonBpe
{
    // GPT-2's byte -> character table. The library has it too but keeps it internal; Klf needs it
    // only to look whole pre-tokens up for ignore_merges.
    private static readonly char[] ByteToChar = BuildByteToChar();

    // Klf has already split the text; the library must not split a pre-token again.
    private static readonly PreTokenizer WholeInput = new RegexPreTokenizer(new Regex(@"(?s).+", RegexOptions.Compiled), specialTokens: null);

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly bool _ignoreMerges;

    /// <summary>Builds the library tokenizer; a merge whose parts or result are not in the vocabulary is an error naming <paramref name="source"/>.</summary>
    public LibraryByteLevelBpe(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        bool ignoreMerges, string? unkToken, string source)
    {
        VocabSize = BpeVocabulary.Size(vocab, source);
        BpeVocabulary.CheckMerges(vocab, merges, source);
        _vocab = vocab;
        _ignoreMerges = ignoreMerges;
        try
        {
            _bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                // Byte-level symbols never contain a space (it is spelled 'Ġ'), so "left right" is unambiguous.
                Merges = merges.Select(m => m.Left + " " + m.Right),
                ByteLevel = true,
                PreTokenizer = WholeInput,
                UnknownToken = unkToken,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: Microsoft.ML.Tokenizers could not build the BPE model: {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <summary>The library tokenizer (fed one pre-token at a time; see the class summary).</summary>
    public BpeTokenizer Inner => _bpe;

    /// <inheritdoc/>
    public int? Lookup(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    /// <inheritdoc/>
    public void EncodePreToken(string preToken, List<int> ids)
    {
        if (preToken.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(ToByteChars(preToken), out int whole))
        {
            ids.Add(whole);
            return;
        }
        ids.AddRange(_bpe.EncodeToIds(preToken, considerPreTokenization: true, considerNormalization: false));
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids) => _bpe.Decode(ids, considerSpecialTokens: false) ?? "";

    private static string ToByteChars(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var chars = new char[utf8.Length];
        for (int i = 0; i < utf8.Length; i++) chars[i] = ByteToChar[utf8[i]];
        return new string(chars);
    }

    private static char[] BuildByteToChar()
    {
        static bool Printable(int b) => (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++) table[b] = Printable(b) ? (char)b : (char)next++;
        return table;
    }
}

/// <summary>Checks shared by the two <c>tokenizer.json</c> BPE models.</summary>
internal static class BpeVocabulary
{
    /// <summary>One more than the highest id; a negative id is an error naming <paramref name="source"/>.</summary>
    public static int Size(Dictionary<string, int> vocab, string source)
    {
        int max = -1;
        foreach (var (token, id) in vocab)
        {
            if (id < 0) throw new InvalidDataException($"{source}: token {token} has negative id {id}.");
            max = Math.Max(max, id);
        }
        return max + 1;
    }

    /// <summary>Every merge's parts and result are vocabulary tokens, else an error naming the merge and <paramref name="source"/>.</summary>
    public static void CheckMerges(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string source)
    {
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.ContainsKey(left) || !vocab.ContainsKey(right) || !vocab.ContainsKey(left + right))
                throw new InvalidDataException($"{source}: merge {rank} ('{left}' '{right}') uses a token that is not in the vocabulary.");
        }
    }
}
