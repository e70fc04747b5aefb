using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Klf.Native;

/// <summary>
/// Makes TorchSharp's native library load on Linux systems whose libstdc++ is older than the
/// one LibTorchSharp was built against (Debian 12, Ubuntu 22.04: no <c>GLIBCXX_3.4.32</c>).
/// Call <see cref="EnsureLoaded"/> once before the first torch call; it is also run by this
/// assembly's module initializer, so any use of a Klf type first is enough.
/// </summary>
/// <remarks>
/// LibTorchSharp 0.107 requires <c>GLIBCXX_3.4.32</c> only for <c>std::ios_base_library_init</c>,
/// a symbol GCC 13 references solely to pin that version; no relocation uses it. When (and only
/// when) loading the shipped library fails for that reason, a copy with the requirement marked
/// weak is written (temp file + rename, so concurrent processes are safe) beside the original,
/// or into a per-user cache when that folder is read-only, and loaded by absolute path after
/// LibTorch's own libraries. Later by-name lookups resolve to it through its SONAME.
/// </remarks>
public static class TorchNative
{
    /// <summary>The only version node LibTorchSharp needs beyond GCC 12's libstdc++.</summary>
    public const string MissingVersion = "GLIBCXX_3.4.32";

    private static readonly object Gate = new();
    private static string? _loadedFrom;
    private static Exception? _failure;

    // Deliberate in a library: scripts and apps that touch any Klf type first get working natives
    // without an explicit call; failures are kept and rethrown by EnsureLoaded/ThrowIfFailed.
#pragma warning disable CA2255
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize()
    {
        try { EnsureLoaded(); }
        catch (Exception e) { _failure = e; }
    }

    /// <summary>Where LibTorchSharp was loaded from, or null if TorchSharp's own loading is used (non-Linux).</summary>
    public static string? LoadedFrom { get { lock (Gate) return _loadedFrom; } }

    /// <summary>Whether the loaded LibTorchSharp is a patched copy.</summary>
    public static bool Patched { get; private set; }

    /// <summary>
    /// Loads LibTorch and LibTorchSharp, patching LibTorchSharp first if this system's libstdc++
    /// needs it. Idempotent and thread-safe. Throws <see cref="InvalidOperationException"/> with
    /// what to do when the native libraries cannot be found or loaded.
    /// </summary>
    public static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_loadedFrom != null) return;
            if (!OperatingSystem.IsLinux()) { _loadedFrom = ""; return; }
            _failure = null;
            NativeAllocator.Configure();   // before libtorch's first allocation
            var dirs = CandidateDirectories();
            var sharpDir = dirs.FirstOrDefault(d => File.Exists(Path.Combine(d, "libLibTorchSharp.so")))
                ?? throw new InvalidOperationException(
                    "TorchSharp's native library libLibTorchSharp.so was not found. Looked in: " +
                    string.Join(", ", dirs) + ". Build the project (./klf builds it) or reference the TorchSharp and libtorch-cpu packages.");
            var torchDir = dirs.FirstOrDefault(d => File.Exists(Path.Combine(d, "libtorch.so"))) ?? sharpDir;

            // LibTorch first, by absolute path: the patched copy may live elsewhere and must find these by SONAME.
            foreach (var lib in new[] { "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so" })
            {
                var p = Path.Combine(torchDir, lib);
                if (File.Exists(p)) NativeLibrary.Load(p);
            }

            var original = Path.Combine(sharpDir, "libLibTorchSharp.so");
            string? firstError = null;
            try { NativeLibrary.Load(original); _loadedFrom = original; return; }
            catch (DllNotFoundException e) { firstError = e.Message; }

            if (!firstError.Contains(MissingVersion))
                throw new InvalidOperationException($"Could not load {original}: {firstError}");

            var patched = WritePatchedCopy(original);
            try { NativeLibrary.Load(patched); }
            catch (DllNotFoundException e)
            {
                throw new InvalidOperationException(
                    $"Could not load {original} ({firstError}), nor the copy patched for this system's libstdc++ at {patched} ({e.Message}). " +
                    "Install a newer libstdc++ (GCC 13 or later, e.g. Debian 13 / Ubuntu 24.04), or report this with the two messages above.");
            }
            _loadedFrom = patched;
            Patched = true;
        }
    }

    /// <summary>Rethrows the failure recorded by the module initializer, if any; call before the first torch call to get a clear error.</summary>
    public static void ThrowIfFailed()
    {
        if (_failure != null) EnsureLoaded();
    }

    /// <summary>
    /// Writes a copy of <paramref name="original"/> with <see cref="MissingVersion"/> marked weak and
    /// returns its path: replaces the original when its folder is writable and not a NuGet package cache
    /// (which must stay as the package shipped it: builds copy from it), else a per-user cache.
    /// </summary>
    public static string WritePatchedCopy(string original)
    {
        var bytes = File.ReadAllBytes(original);
        if (ElfVersionPatch.MarkWeak(bytes, MissingVersion) == 0) return original;

        foreach (var target in PatchTargets(original, bytes))
        {
            try
            {
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                if (File.Exists(target) && File.ReadAllBytes(target).AsSpan().SequenceEqual(bytes)) return target;
                var tmp = $"{target}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
                File.WriteAllBytes(tmp, bytes);
                File.Move(tmp, target, overwrite: true);
                return target;
            }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException) { }
        }
        throw new InvalidOperationException(
            $"{original} needs {MissingVersion}, which this system's libstdc++ lacks, and no writable place was found for a patched copy " +
            "(tried its own folder and the per-user cache). Set XDG_CACHE_HOME to a writable folder or install GCC 13's libstdc++.");
    }

    private static IEnumerable<string> PatchTargets(string original, byte[] patched)
    {
        if (!InNuGetCache(original)) yield return original;
        var cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (string.IsNullOrEmpty(cache))
            cache = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        var hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(patched))[..16].ToLowerInvariant();
        yield return Path.Combine(cache, "klf", "native", hash, "libLibTorchSharp.so");
        yield return Path.Combine(Path.GetTempPath(), "klf-native-" + hash, "libLibTorchSharp.so");
    }

    /// <summary>Whether a file lies in a NuGet global packages folder (<c>$NUGET_PACKAGES</c> or <c>~/.nuget/packages</c>).</summary>
    private static bool InNuGetCache(string path)
    {
        var full = Path.GetFullPath(path);
        var roots = new[]
        {
            Environment.GetEnvironmentVariable("NUGET_PACKAGES"),
            Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"),
        };
        return roots.Any(r => !string.IsNullOrEmpty(r) && full.StartsWith(Path.GetFullPath(r).TrimEnd('/') + "/", StringComparison.Ordinal))
               || full.Contains("/.nuget/packages/", StringComparison.Ordinal);
    }

    private static List<string> CandidateDirectories()
    {
        var rid = RuntimeInformation.OSArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        var roots = new List<string> { AppContext.BaseDirectory };
        foreach (var asm in new[] { typeof(TorchNative).Assembly, typeof(TorchSharp.torch).Assembly })
            if (!string.IsNullOrEmpty(asm.Location)) roots.Add(Path.GetDirectoryName(asm.Location)!);
        var dirs = new List<string>();
        foreach (var r in roots.Distinct())
        {
            dirs.Add(Path.Combine(r, "runtimes", rid, "native"));
            dirs.Add(r);
        }
        // A TorchSharp.dll loaded from the NuGet cache (e.g. `#r "nuget: ..."` in a script) has its
        // natives in sibling packages of the same cache.
        var tsLoc = typeof(TorchSharp.torch).Assembly.Location;
        if (!string.IsNullOrEmpty(tsLoc) && tsLoc.Contains(Path.Combine(".nuget", "packages")))
        {
            // <cache>/torchsharp/<version>/lib/<tfm>/TorchSharp.dll: the cache is four levels up.
            var pkgRoot = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(tsLoc)!, "..", "..", "..", ".."));
            dirs.Add(Path.Combine(Path.GetDirectoryName(tsLoc)!, "..", "..", "runtimes", rid, "native"));
            foreach (var d in Directory.Exists(Path.Combine(pkgRoot, "libtorch-cpu-" + rid))
                         ? Directory.GetDirectories(Path.Combine(pkgRoot, "libtorch-cpu-" + rid)) : [])
                dirs.Add(Path.Combine(d, "runtimes", rid, "native"));
        }
        return dirs.Select(Path.GetFullPath).Distinct().Where(Directory.Exists).ToList();
    }
}
