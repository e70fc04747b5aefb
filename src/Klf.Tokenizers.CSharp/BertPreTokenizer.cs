using System.Globalization;
using System.Text;

namespace Klf.Tokenizers;

/// <summary>
/// The basic tokenization of Hugging Face's <c>BertTokenizer</c>, which runs before WordPiece: it
/// cleans the text, spaces out CJK ideographs, splits on whitespace, lower-cases and strips accents,
/// and makes every punctuation character a word of its own. Immutable and thread-safe.
/// </summary>
/// <remarks>
/// <para>Klf's own code, not Microsoft.ML.Tokenizers' <c>BertTokenizer</c>: version 3.0.0 of that
/// library drops every symbol character (<c>$</c>, <c>`</c>, <c>^</c>, <c>+</c>, <c>=</c>, <c>£</c>, …),
/// joins the words on either side of a tab or newline into one, and drops characters outside the
/// vocabulary instead of giving <c>[UNK]</c>; the Hugging Face tokenizer the checkpoints were trained
/// with keeps the symbols as words, splits at tabs and newlines, and gives <c>[UNK]</c>
/// (docs/tokenizers.md). WordPiece itself is the library's (<see cref="WordPieceTextTokenizer"/>).</para>
/// <para>The steps, on Unicode code points: (1) remove U+0000, U+FFFD and every character of a
/// category <c>C*</c> except tab, newline and carriage return, which with the <c>Zs</c> characters
/// become a space; (2) put spaces around CJK ideographs (the Unicode blocks Hugging Face lists);
/// (3) NFC, then split on whitespace; (4) with <see cref="LowerCase"/>, lower-case each word
/// (Python's rules: final sigma, İ → i̇) and, unless <see cref="StripAccents"/> is false, strip
/// accents (NFD, marks of category <c>Mn</c> removed); without it, strip accents only when
/// <see cref="StripAccents"/> is true; (5) split each word at punctuation: ASCII 33–47, 58–64, 91–96,
/// 123–126 and every character of a category <c>P*</c> becomes a word alone.</para>
/// </remarks>
public sealed class BertPreTokenizer
{
    /// <summary>Creates the pre-tokenizer (Hugging Face's defaults: lower-case, accents follow the case, CJK spaced).</summary>
    /// <param name="lowerCase"><c>do_lower_case</c>.</param>
    /// <param name="stripAccents"><c>strip_accents</c>: null follows <paramref name="lowerCase"/>.</param>
    /// <param name="tokenizeChineseChars"><c>tokenize_chinese_chars</c>.</param>
    public BertPreTokenizer(bool lowerCase = true, bool? stripAccents = null, bool tokenizeChineseChars = true)
    {
        LowerCase = lowerCase;
        StripAccents = stripAccents;
        TokenizeChineseChars = tokenizeChineseChars;
    }

    /// <summary><c>do_lower_case</c>.</summary>
    public bool LowerCase { get; }

    /// <summary><c>strip_accents</c> (null: strip when lower-casing).</summary>
    public bool? StripAccents { get; }

    /// <summary><c>tokenize_chinese_chars</c>.</summary>
    public bool TokenizeChineseChars { get; }

    /// <summary>The words of <paramref name="text"/>, in order (a fresh list; no word is empty).</summary>
    public List<string> Split(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var cleaned = Clean(text).Normalize(NormalizationForm.FormC);
        var words = new List<string>();
        foreach (var raw in cleaned.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            foreach (var word in SplitOnWhitespace(raw))
            {
                var w = word;
                if (LowerCase)
                {
                    w = PythonLower(w);
                    if (StripAccents != false) w = RemoveAccents(w);
                }
                else if (StripAccents == true) w = RemoveAccents(w);
                SplitOnPunctuation(w, words);
            }
        return words;
    }

    // Steps 1 and 2: control characters out, whitespace to ' ', CJK ideographs spaced out.
    private string Clean(string text)
    {
        var sb = new StringBuilder(text.Length + 8);
        foreach (var r in text.EnumerateRunes())
        {
            int cp = r.Value;
            if (cp == 0 || cp == 0xFFFD || IsControl(r)) continue;
            if (IsWhitespace(r)) sb.Append(' ');
            else if (TokenizeChineseChars && IsCjk(cp)) sb.Append(' ').Append(r.ToString()).Append(' ');
            else sb.Append(r.ToString());
        }
        return sb.ToString();
    }

    // Python's str.split() also splits at whitespace that is not a plain space (e.g. U+2028), which step 1 leaves in.
    private static IEnumerable<string> SplitOnWhitespace(string s)
    {
        int start = 0;
        for (int i = 0; i < s.Length;)
        {
            var r = Rune.GetRuneAt(s, i);
            if (Rune.IsWhiteSpace(r))
            {
                if (i > start) yield return s[start..i];
                start = i + r.Utf16SequenceLength;
            }
            i += r.Utf16SequenceLength;
        }
        if (start < s.Length) yield return s[start..];
    }

    private static void SplitOnPunctuation(string word, List<string> into)
    {
        int start = 0;
        for (int i = 0; i < word.Length;)
        {
            var r = Rune.GetRuneAt(word, i);
            int n = r.Utf16SequenceLength;
            if (IsPunctuation(r))
            {
                if (i > start) into.Add(word[start..i]);
                into.Add(word.Substring(i, n));
                start = i + n;
            }
            i += n;
        }
        if (start < word.Length) into.Add(word[start..]);
    }

    /// <summary>NFD, then every nonspacing mark (<c>Mn</c>) removed.</summary>
    public static string RemoveAccents(string s)
    {
        var d = s.Normalize(NormalizationForm.FormD);
        var sb = new StringBuilder(d.Length);
        foreach (var r in d.EnumerateRunes())
            if (Rune.GetUnicodeCategory(r) != UnicodeCategory.NonSpacingMark) sb.Append(r.ToString());
        return sb.ToString();
    }

    /// <summary>
    /// Lower case as Python's <c>str.lower()</c> gives it: the invariant simple mapping, plus the two
    /// rules of Unicode's SpecialCasing Python applies and .NET does not: İ (U+0130) becomes i̇
    /// (U+0069 U+0307), and a capital sigma that ends a word (a cased letter before it, none after)
    /// becomes the final sigma ς.
    /// </summary>
    public static string PythonLower(string s)
    {
        // The invariant mapping keeps the length (one UTF-16 unit for one), so positions line up with s.
        var lower = s.ToLowerInvariant();
        if (s.IndexOf('\u0130') < 0 && s.IndexOf('\u03A3') < 0) return lower;
        var sb = new StringBuilder(s.Length + 2);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\u0130') sb.Append("i\u0307");
            else if (s[i] == '\u03A3') sb.Append(FinalSigma(s, i) ? '\u03C2' : '\u03C3');
            else sb.Append(lower[i]);
        }
        return sb.ToString();
    }

    // Unicode's Final_Sigma condition: a cased letter before (skipping case-ignorable characters), none after.
    private static bool FinalSigma(string s, int at)
    {
        static bool Ignorable(char c) => CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark
            or UnicodeCategory.EnclosingMark or UnicodeCategory.Format or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
            || c is '\'' or '.' or ':' or '\u00B7' or '\u2019';
        static bool Cased(char c) => char.IsUpper(c) || char.IsLower(c) || CharUnicodeInfo.GetUnicodeCategory(c) == UnicodeCategory.TitlecaseLetter;
        int i = at - 1;
        while (i >= 0 && Ignorable(s[i])) i--;
        if (i < 0 || !Cased(s[i])) return false;
        int j = at + 1;
        while (j < s.Length && Ignorable(s[j])) j++;
        return j >= s.Length || !Cased(s[j]);
    }

    /// <summary>Hugging Face's whitespace: space, tab, newline, carriage return, or a space separator (<c>Zs</c>).</summary>
    public static bool IsWhitespace(Rune r) =>
        r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) == UnicodeCategory.SpaceSeparator;

    /// <summary>Hugging Face's control characters: a category <c>C*</c> (control, format, surrogate, private use, unassigned) other than tab, newline and carriage return.</summary>
    public static bool IsControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    /// <summary>Hugging Face's punctuation: the ASCII non-alphanumeric printable characters and every character of a category <c>P*</c>.</summary>
    public static bool IsPunctuation(Rune r)
    {
        int cp = r.Value;
        if (cp is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126) return true;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
    }

    /// <summary>Whether a code point is a CJK ideograph of the blocks Hugging Face spaces out.</summary>
    public static bool IsCjk(int cp) =>
        cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
            or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}
