using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Formats;

/// <summary>
/// A safetensors file open for reading tensor by tensor: the header is parsed and checked once, each
/// tensor is read on request straight into a fresh CPU tensor's storage, in chunks (positional reads,
/// so the reader may be used from several threads and the kernel sees one sequential stream per file).
/// Keep one open per file while reading many of its tensors; dispose it to close the file.
/// </summary>
public sealed class SafeTensorsReader : IDisposable
{
    // Reads of a few MiB: the kernel's read-ahead keeps up, and no read exceeds a span's 2 GiB.
    private const long ChunkBytes = 8L << 20;

    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorInfo> _byName;

    /// <summary>Opens <paramref name="path"/> and reads its header.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file; the message names it.</exception>
    public SafeTensorsReader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: safetensors file not found", path);
        Path = path;
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        try
        {
            var (tensors, metadata) = SafeTensors.ParseHeader(_handle, path, out _dataStart);
            Tensors = tensors;
            Metadata = metadata;
            _byName = tensors.ToDictionary(t => t.Name);
        }
        catch
        {
            _handle.Dispose();
            throw;
        }
    }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>The tensor entries, in header order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> strings.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The entry named <paramref name="name"/>; a <see cref="KeyNotFoundException"/> naming the file when absent.</summary>
    public SafeTensorInfo this[string name] =>
        _byName.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");

    /// <summary>
    /// Reads one tensor (an entry of <see cref="Tensors"/>) into a contiguous CPU tensor of its dtype
    /// and shape, which the caller disposes. Any size (read in chunks). Without
    /// <paramref name="buffer"/> the tensor is fresh; with it the tensor is a view of the buffer's
    /// first elements (no allocation, so no first-touch page faults when reading many tensors), valid
    /// while the buffer lives and until it is read into again.
    /// </summary>
    /// <param name="info">The entry to read.</param>
    /// <param name="buffer">Optional: a 1-D contiguous CPU tensor of the entry's dtype with at least its element count.</param>
    /// <exception cref="EndOfStreamException">The file is shorter than its header says (truncated); names the file.</exception>
    /// <exception cref="ArgumentException">The buffer does not fit the entry.</exception>
    public Tensor Read(SafeTensorInfo info, Tensor? buffer = null)
    {
        ArgumentNullException.ThrowIfNull(info);
        var (type, size) = SafeTensors.FromName(info.DType, Path);
        var count = info.Shape.Aggregate(1L, (a, b) => a * b);
        if (buffer is not null && (buffer.dtype != type || buffer.dim() != 1 || !buffer.is_contiguous() || buffer.device_type != DeviceType.CPU || buffer.numel() < count))
            throw new ArgumentException($"a buffer for '{info.Name}' must be a 1-D contiguous CPU {type} tensor of at least {count} elements, not {buffer.dtype} [{string.Join(",", buffer.shape)}] on {buffer.device}", nameof(buffer));
        Tensor t;
        if (buffer is null) t = empty(info.Shape, type, CPU);
        else
        {
            using var start = buffer.narrow(0, 0, count);
            t = start.view(info.Shape);
        }
        try
        {
            var n = t.numel();
            if (n == 0) return t;
            using var flat = t.view(-1);
            var perChunk = Math.Max(1, ChunkBytes / size);
            for (long start = 0; start < n; start += perChunk)
            {
                using var part = flat.narrow(0, start, Math.Min(perChunk, n - start));
                var span = part.bytes;
                var offset = _dataStart + info.Begin + start * size;
                while (span.Length > 0)
                {
                    var read = RandomAccess.Read(_handle, span, offset);
                    if (read == 0) throw new EndOfStreamException($"{Path}: ends inside tensor '{info.Name}' (truncated file?)");
                    span = span[read..];
                    offset += read;
                }
            }
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>Reads the tensor named <paramref name="name"/> (see <see cref="Read(SafeTensorInfo, Tensor)"/>).</summary>
    public Tensor Read(string name) => Read(this[name]);

    /// <summary>Closes the file.</summary>
    public void Dispose() => _handle.Dispose();
}
