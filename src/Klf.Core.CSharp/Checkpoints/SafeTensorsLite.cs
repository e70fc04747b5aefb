using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>
/// A minimal, complete safetensors writer and reader used by the LoRA adapter files.
/// TODO(merge): TEMPORARY. Replace every use with Klf.Checkpoints.SafeTensors (written in parallel
/// on the checkpoint branch) and delete this file.
/// </summary>
/// <remarks>
/// Format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// (<c>{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}</c>,
/// padded with spaces to a multiple of 8), then the raw little-endian tensor bytes; offsets are
/// relative to the start of the data section. Tensors are written in ordinal key order.
/// </remarks>
internal static class SafeTensorsLite
{
    private static readonly (ScalarType Type, string Code, int Size)[] DTypes =
    {
        (ScalarType.Float32, "F32", 4), (ScalarType.Float16, "F16", 2), (ScalarType.BFloat16, "BF16", 2),
        (ScalarType.Float64, "F64", 8), (ScalarType.Int64, "I64", 8), (ScalarType.Int32, "I32", 4),
        (ScalarType.Int16, "I16", 2), (ScalarType.Int8, "I8", 1), (ScalarType.Byte, "U8", 1), (ScalarType.Bool, "BOOL", 1),
    };

    private static string Code(ScalarType t) =>
        DTypes.FirstOrDefault(d => d.Type == t).Code ?? throw new NotSupportedException($"dtype {t} cannot be stored in safetensors here");

    private static ScalarType TypeOf(string code) =>
        DTypes.Any(d => d.Code == code) ? DTypes.First(d => d.Code == code).Type
            : throw new NotSupportedException($"safetensors dtype {code} is not supported");

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> atomically (temp file in the same
    /// folder, then rename). Tensors may live on any device; they are copied to the CPU. The caller keeps ownership.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors I/O assumes a little-endian host");
        var keys = tensors.Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (k, v) in metadata) meta[k] = v;
            header["__metadata__"] = meta;
        }
        var blobs = new List<byte[]>(keys.Length);
        long offset = 0;
        foreach (var key in keys)
        {
            var t = tensors[key];
            byte[] bytes;
            using (var detached = t.detach())
            using (var cpu = detached.cpu())
            using (var dense = cpu.contiguous())
                bytes = dense.bytes.ToArray();
            blobs.Add(bytes);
            header[key] = new JsonObject
            {
                ["dtype"] = Code(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(s => (JsonNode)JsonValue.Create(s)!).ToArray()),
                ["data_offsets"] = new JsonArray(JsonValue.Create(offset), JsonValue.Create(offset + bytes.Length)),
            };
            offset += bytes.Length;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (json.Length + 7) / 8 * 8;
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
                fs.Write(len);
                fs.Write(json);
                for (var i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
                foreach (var b in blobs) fs.Write(b);
                fs.Flush(true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>
    /// Reads every tensor of a safetensors file as fresh CPU tensors; the caller owns (and disposes) them.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path) => Load(path, out _);

    /// <summary>Reads every tensor (fresh CPU tensors, caller-owned) and the <c>__metadata__</c> map.</summary>
    public static Dictionary<string, Tensor> Load(string path, out Dictionary<string, string> metadata)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors I/O assumes a little-endian host");
        var all = File.ReadAllBytes(path);
        if (all.Length < 8) throw new InvalidDataException($"{path}: not a safetensors file (too short)");
        var n = BinaryPrimitives.ReadUInt64LittleEndian(all.AsSpan(0, 8));
        if (n > (ulong)(all.Length - 8)) throw new InvalidDataException($"{path}: header length {n} exceeds the file");
        var header = JsonNode.Parse(Encoding.UTF8.GetString(all, 8, (int)n))!.AsObject();
        var dataStart = 8 + (long)n;
        metadata = new Dictionary<string, string>();
        var result = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (key, node) in header)
            {
                if (key == "__metadata__")
                {
                    foreach (var (mk, mv) in node!.AsObject()) metadata[mk] = mv!.GetValue<string>();
                    continue;
                }
                var o = node!.AsObject();
                var dtype = TypeOf(o["dtype"]!.GetValue<string>());
                var shape = o["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
                var offs = o["data_offsets"]!.AsArray();
                long begin = offs[0]!.GetValue<long>(), end = offs[1]!.GetValue<long>();
                var size = DTypes.First(d => d.Type == dtype).Size;
                var expected = shape.Aggregate(1L, (a, b) => a * b) * size;
                if (end - begin != expected || dataStart + end > all.Length || begin < 0)
                    throw new InvalidDataException($"{path}: tensor {key} has inconsistent offsets");
                var t = torch.empty(shape, dtype);
                if (expected > 0) t.bytes = all.AsSpan((int)(dataStart + begin), (int)expected);
                result[key] = t;
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }
}
