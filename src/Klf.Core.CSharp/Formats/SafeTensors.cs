using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Formats;

/// <summary>The header entry of one tensor in a safetensors file.</summary>
/// <param name="Name">The tensor's key.</param>
/// <param name="DType">The safetensors dtype string (<c>F32</c>, <c>BF16</c>, ...).</param>
/// <param name="Shape">The tensor's shape.</param>
/// <param name="Begin">Start offset of its bytes within the data section.</param>
/// <param name="End">End offset (exclusive) of its bytes within the data section.</param>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>
/// Reads and writes the safetensors format (an 8-byte little-endian header length, a JSON header,
/// then the raw little-endian tensor bytes), as used by Hugging Face checkpoints.
/// Reading validates the header against the file and names the file in every error.
/// </summary>
public static class SafeTensors
{
    private static readonly (string Name, ScalarType Type, int Size)[] DTypes =
    [
        ("F64", ScalarType.Float64, 8), ("F32", ScalarType.Float32, 4), ("F16", ScalarType.Float16, 2),
        ("BF16", ScalarType.BFloat16, 2), ("I64", ScalarType.Int64, 8), ("I32", ScalarType.Int32, 4),
        ("I16", ScalarType.Int16, 2), ("I8", ScalarType.Int8, 1), ("U8", ScalarType.Byte, 1), ("BOOL", ScalarType.Bool, 1),
    ];

    /// <summary>The safetensors dtype string of a TorchSharp scalar type.</summary>
    public static string DTypeName(ScalarType t) =>
        DTypes.FirstOrDefault(d => d.Type == t).Name ?? throw new NotSupportedException($"dtype {t} has no safetensors name");

    internal static (ScalarType Type, int Size) FromName(string name, string file) =>
        DTypes.FirstOrDefault(d => d.Name == name) is var d && d.Name != null
            ? (d.Type, d.Size)
            : throw new InvalidDataException($"{file}: unsupported safetensors dtype '{name}'");

    /// <summary>Reads only the header: the tensor entries (in file order) and the <c>__metadata__</c> strings.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file; the message names it.</exception>
    public static (IReadOnlyList<SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata) ReadHeader(string path)
    {
        using var reader = new SafeTensorsReader(path);
        return (reader.Tensors, reader.Metadata);
    }

    /// <summary>The first line of an error message, trimmed: the user-facing part.</summary>
    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    internal static (IReadOnlyList<SafeTensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(SafeFileHandle file, string path, out long dataStart)
    {
        var length = RandomAccess.GetLength(file);
        Span<byte> lenBytes = stackalloc byte[8];
        if (length < 8 || RandomAccess.Read(file, lenBytes, 0) != 8) throw new InvalidDataException($"{path}: too short to be a safetensors file");
        var n = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (n == 0 || n > 100_000_000 || (long)n > length - 8)
            throw new InvalidDataException($"{path}: invalid safetensors header length {n} (file is {length} bytes)");
        var header = new byte[n];
        for (var done = 0; done < header.Length;)
        {
            var read = RandomAccess.Read(file, header.AsSpan(done), 8 + done);
            if (read == 0) throw new InvalidDataException($"{path}: ends inside its safetensors header");
            done += read;
        }
        dataStart = 8 + (long)n;
        JsonObject root;
        try
        {
            // Duplicate keys are refused by the parser options below: two entries of one name would
            // leave which one loads to the reader's whim.
            root = JsonNode.Parse(header, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false })?.AsObject()
                   ?? throw new InvalidDataException($"{path}: the safetensors header is empty");
            // Materialise every property now, so a duplicate key fails here, with the file's name.
            _ = root.Count;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: safetensors header is not valid JSON ({FirstLine(e.Message)})");
        }
        var dataLen = length - dataStart;
        var list = new List<SafeTensorInfo>();
        var meta = new Dictionary<string, string>();
        foreach (var (key, node) in root)
        {
            if (key == "__metadata__")
            {
                if (node is not JsonObject m) throw new InvalidDataException($"{path}: __metadata__ must be an object of strings");
                foreach (var (mk, mv) in m)
                    meta[mk] = mv is JsonValue v && v.TryGetValue<string>(out var text)
                        ? text
                        : throw new InvalidDataException($"{path}: __metadata__ entry '{mk}' is not a string");
                continue;
            }
            try
            {
                var o = node!.AsObject();
                var dtype = o["dtype"]!.GetValue<string>();
                var shape = o["shape"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
                var offs = o["data_offsets"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
                var (_, size) = FromName(dtype, path);
                if (shape.Any(d => d < 0))
                    throw new InvalidDataException($"{path}: tensor '{key}' has a negative dimension in its shape [{string.Join(",", shape)}]");
                long expected;
                try { expected = checked(shape.Aggregate(1L, (a, b) => a * b) * size); }
                catch (OverflowException) { throw new InvalidDataException($"{path}: tensor '{key}' has a shape [{string.Join(",", shape)}] whose size overflows"); }
                if (offs.Length != 2 || offs[0] < 0 || offs[1] < offs[0] || offs[1] > dataLen || offs[1] - offs[0] != expected)
                    throw new InvalidDataException($"{path}: tensor '{key}' has data offsets [{string.Join(",", offs)}] that do not fit its shape [{string.Join(",", shape)}] {dtype} or the file ({dataLen} data bytes)");
                list.Add(new SafeTensorInfo(key, dtype, shape, offs[0], offs[1]));
            }
            catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException or OverflowException)
            {
                throw new InvalidDataException($"{path}: malformed header entry for tensor '{key}'");
            }
        }
        // As Hugging Face's reader: the tensors tile the data section exactly, in offset order,
        // without gaps, overlaps or trailing bytes (a byte that belongs to two tensors, or to none,
        // means the file was written wrongly or altered).
        long end = 0;
        foreach (var t in list.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin < end)
                throw new InvalidDataException($"{path}: tensor '{t.Name}' (bytes {t.Begin}–{t.End}) overlaps another tensor's data");
            if (t.Begin > end)
                throw new InvalidDataException($"{path}: bytes {end}–{t.Begin} of the data section belong to no tensor (before '{t.Name}')");
            end = t.End;
        }
        if (end != dataLen)
            throw new InvalidDataException($"{path}: {dataLen - end} bytes after the last tensor's data (the data section is {dataLen} bytes, the tensors end at {end})");
        return (list, meta);
    }

    /// <summary>
    /// Writes a safetensors file whose tensors are produced one at a time, so a file larger than
    /// memory can be written: the header from <paramref name="entries"/> (name, dtype, shape, in that
    /// order), then <paramref name="produce"/>(i) for each entry, whose bytes are written and which is
    /// disposed at once. A produced tensor of another dtype or shape than its entry is an error. The
    /// file is written atomically.
    /// </summary>
    public static void SaveStreamed(string path, IReadOnlyList<(string Name, ScalarType Type, long[] Shape)> entries, Func<int, Tensor> produce,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var m = new JsonObject();
            foreach (var (k, v) in metadata) m[k] = v;
            header["__metadata__"] = m;
        }
        long offset = 0;
        foreach (var (name, type, shape) in entries)
        {
            var size = DTypes.First(d => d.Type == type).Size * shape.Aggregate(1L, (a, b) => a * b);
            header[name] = new JsonObject
            {
                ["dtype"] = DTypeName(type),
                ["shape"] = new JsonArray(shape.Select(x => (JsonNode)x).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + size),
            };
            offset += size;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (json.Length + 7) / 8 * 8; // data section 8-byte aligned, as Hugging Face writes it
        AtomicFile.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
            fs.Write(len);
            fs.Write(json);
            for (var i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
            for (var i = 0; i < entries.Count; i++)
            {
                using var scope = torch.NewDisposeScope();
                using var t = produce(i);   // produced on another thread, it is in no scope of this one
                var (name, type, shape) = entries[i];
                if (t.dtype != type || !t.shape.SequenceEqual(shape))
                    throw new InvalidOperationException($"{path}: tensor '{name}' came as {t.dtype} [{string.Join(",", t.shape)}], its entry says {type} [{string.Join(",", shape)}]");
                WriteBytes(fs, t.detach().cpu().contiguous());
            }
        });
    }

    /// <summary>A contiguous CPU tensor's bytes, in chunks (any size: one span holds at most 2 GiB).</summary>
    private static void WriteBytes(Stream fs, Tensor contiguous)
    {
        var n = contiguous.numel();
        if (n == 0) return;
        using var flat = contiguous.view(-1);
        var perChunk = Math.Max(1L, (64L << 20) / contiguous.ElementSize);
        for (long start = 0; start < n; start += perChunk)
        {
            using var part = flat.narrow(0, start, Math.Min(perChunk, n - start));
            fs.Write(part.bytes);
        }
    }

    /// <summary>
    /// Writes tensors to <paramref name="path"/> atomically (temporary file, then rename), sorted by
    /// key, with optional <c>__metadata__</c>. Tensors may live on any device and are not disposed.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        SaveStreamed(path, items.Select(kv => (kv.Key, kv.Value.dtype, kv.Value.shape)).ToList(), i => items[i].Value.alias(), metadata);
    }

    /// <summary>
    /// Reads every tensor of a safetensors file (or only those whose key passes <paramref name="filter"/>)
    /// into fresh CPU tensors of the stored dtype. The caller owns and disposes the returned tensors.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path, Func<string, bool>? filter = null)
    {
        using var reader = new SafeTensorsReader(path);
        var result = new Dictionary<string, Tensor>();
        try
        {
            foreach (var info in reader.Tensors.OrderBy(i => i.Begin))
                if (filter == null || filter(info.Name)) result[info.Name] = reader.Read(info);
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

}
