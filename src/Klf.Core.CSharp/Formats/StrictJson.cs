using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Klf.Formats;

/// <summary>
/// Reads the project's JSON inputs (configs, profiles, adapter configs) strictly and names the file
/// in every error: the bytes must be UTF-8 (a leading byte-order mark is dropped; an invalid byte is
/// an error with its offset, never a silent U+FFFD), the text one JSON value with no duplicate keys
/// (two values for one key would leave which one counts to the reader).
/// </summary>
public static class StrictJson
{
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Options that refuse duplicate keys, for <see cref="JsonDocument"/> and <see cref="JsonNode"/> parsing.</summary>
    public static JsonDocumentOptions DocumentOptions => new() { AllowDuplicateProperties = false };

    /// <summary>
    /// Decodes <paramref name="bytes"/> as strict UTF-8; an invalid byte is an
    /// <see cref="InvalidDataException"/> naming <paramref name="path"/>, the line and the byte offset.
    /// </summary>
    public static string Decode(byte[] bytes, string path)
    {
        var start = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        try { return Utf8.GetString(bytes, start, bytes.Length - start); }
        catch (DecoderFallbackException e)
        {
            var at = start + Math.Max(0, e.Index);
            var line = 1 + bytes.AsSpan(0, Math.Min(at, bytes.Length)).Count((byte)'\n');
            throw new InvalidDataException($"{path}: line {line}: byte {at} is not valid UTF-8");
        }
    }

    /// <summary>
    /// Parses <paramref name="text"/> (read from <paramref name="path"/>) as one JSON value without
    /// duplicate keys; errors are <see cref="InvalidDataException"/>s naming the file. Null for the JSON literal null.
    /// </summary>
    public static JsonNode? Parse(string text, string path)
    {
        try
        {
            var node = JsonNode.Parse(text, documentOptions: DocumentOptions);
            // Duplicate keys surface when an object's properties are first read: read them all here.
            Touch(node);
            return node;
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message.Split('\n')[0].Trim()})");
        }
    }

    /// <summary>Reads <paramref name="path"/> and parses it (see <see cref="Decode"/> and <see cref="Parse(string, string)"/>).</summary>
    public static JsonNode? ReadFile(string path) => Parse(Decode(File.ReadAllBytes(path), path), path);

    /// <summary>
    /// Runs <paramref name="read"/>, which picks fields out of a parsed file, and turns the errors of a
    /// missing field or one of the wrong type (null references, wrong-kind casts, unparsable numbers)
    /// into an <see cref="InvalidDataException"/> naming <paramref name="path"/> and what was being read.
    /// </summary>
    public static T Fields<T>(string path, string what, Func<T> read)
    {
        try { return read(); }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException or OverflowException or KeyNotFoundException or InvalidCastException)
        {
            throw new InvalidDataException($"{path}: malformed {what}: a field is missing or has the wrong type ({e.Message.Split('\n')[0].Trim()})");
        }
    }

    private static void Touch(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, v) in o) Touch(v);
                break;
            case JsonArray a:
                foreach (var v in a) Touch(v);
                break;
        }
    }
}
