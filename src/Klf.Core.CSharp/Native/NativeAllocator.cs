using System.Runtime.InteropServices;

namespace Klf.Native;

/// <summary>
/// How libtorch's CPU memory comes from the operating system, tuned once before libtorch loads
/// (<see cref="TorchNative.EnsureLoaded"/>) so that fresh tensors cost what their arithmetic costs.
/// Measured on this project's Linux virtual machines: a tensor's first touch ran at about 0.5 GB/s
/// (one page fault per 4 KiB) against about 50 GB/s for a copy into memory already touched, so
/// fusion temporaries, checkpoint reads and boolean masks were bound by page faults. Two settings,
/// Linux with glibc only, values computed unchanged:
/// <list type="bullet">
/// <item>glibc keeps freed blocks up to 32 MiB on its heap (<c>M_MMAP_THRESHOLD</c>) and returns
/// free heap to the system only above 1 GiB (<c>M_TRIM_THRESHOLD</c>), so a temporary reuses memory
/// already faulted in; the process's resident size then stays near its peak;</item>
/// <item>libtorch backs allocations of 2 MiB and more with transparent huge pages
/// (<c>THP_MEM_ALLOC_ENABLE=1</c>, read by libtorch at its first allocation), so larger fresh
/// blocks fault once per 2 MiB.</item>
/// </list>
/// A variable the user set wins (<c>THP_MEM_ALLOC_ENABLE</c>, or any <c>MALLOC_*_</c> tuning of
/// glibc's own); <c>KLF_NATIVE_ALLOCATOR=default</c> leaves both untouched. No effect on other
/// systems or on GPU memory.
/// </summary>
public static class NativeAllocator
{
    /// <summary>libtorch's switch for huge-page CPU allocations.</summary>
    public const string HugePagesVariable = "THP_MEM_ALLOC_ENABLE";

    /// <summary>Set to <c>default</c> to leave the system allocator and libtorch as they are.</summary>
    public const string OptOutVariable = "KLF_NATIVE_ALLOCATOR";

    /// <summary>Blocks up to this size are served from and returned to glibc's heap (its maximum).</summary>
    public const long HeapBlockBytes = 32L << 20;

    /// <summary>Free heap above this is returned to the system.</summary>
    public const long TrimBytes = 1L << 30;

    /// <summary>Whether this process set <see cref="HugePagesVariable"/>.</summary>
    public static bool HugePages { get; private set; }

    /// <summary>Whether this process tuned glibc's thresholds.</summary>
    public static bool HeapRetained { get; private set; }

    private static bool _done;

    /// <summary>
    /// Which settings a process with environment variables <paramref name="variables"/> gets on Linux:
    /// huge pages unless <see cref="HugePagesVariable"/> is set, heap retention unless any
    /// <c>MALLOC_*</c> variable is set, neither with <see cref="OptOutVariable"/>=<c>default</c>.
    /// </summary>
    public static (bool HugePages, bool HeapRetained) Plan(IReadOnlyCollection<string> variables, string? optOut)
    {
        ArgumentNullException.ThrowIfNull(variables);
        if (optOut == "default") return (false, false);
        return (!variables.Contains(HugePagesVariable), !variables.Any(k => k.StartsWith("MALLOC_", StringComparison.Ordinal)));
    }

    /// <summary>Applies the <see cref="Plan"/> for this process. Idempotent; call before libtorch's first allocation.</summary>
    internal static void Configure()
    {
        if (_done || !OperatingSystem.IsLinux()) return;
        _done = true;
        var (hugePages, heap) = Plan(Environment.GetEnvironmentVariables().Keys.Cast<string>().ToList(), Environment.GetEnvironmentVariable(OptOutVariable));
        // .NET keeps its own copy of the environment on Unix; libtorch reads the C library's.
        if (hugePages) HugePages = TrySetenv(HugePagesVariable, "1");
        if (heap) HeapRetained = TryMallopt(MmapThreshold, HeapBlockBytes) && TryMallopt(TrimThreshold, TrimBytes);
    }

    // glibc's mallopt parameter numbers (malloc.h).
    private const int TrimThreshold = -1;
    private const int MmapThreshold = -3;

    private static bool TrySetenv(string name, string value)
    {
        try { return setenv(name, value, 0) == 0; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    private static bool TryMallopt(int parameter, long value)
    {
        // Not glibc (musl): no mallopt, nothing to tune.
        try { return mallopt(parameter, (int)Math.Min(value, int.MaxValue)) == 1; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int mallopt(int parameter, int value);
}
