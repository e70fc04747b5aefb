using System.Runtime.InteropServices;

namespace Klf.Native;

/// <summary>
/// Asks libtorch to back its large CPU allocations (2 MiB and up) with transparent huge pages.
/// On Linux systems whose huge-page mode is <c>madvise</c> (Debian's and Ubuntu's default), every
/// fresh large tensor otherwise costs one page fault per 4 KiB on first touch; on the virtual machines
/// measured for this project that ran at about 0.5 GB/s, against about 50 GB/s for a copy into
/// memory already touched, so reading a checkpoint or allocating a fusion temporary was bound by page
/// faults. libtorch reads its switch <c>THP_MEM_ALLOC_ENABLE</c> once, at its first allocation;
/// <see cref="TorchNative.EnsureLoaded"/> sets it before loading libtorch unless the process already
/// has it (the user's choice wins) or <c>KLF_HUGE_PAGES=0</c>. Values computed are unchanged; each
/// large allocation is aligned to 2 MiB. No effect on other systems or on GPU memory.
/// </summary>
public static class HugePages
{
    /// <summary>libtorch's switch for huge-page CPU allocations.</summary>
    public const string TorchVariable = "THP_MEM_ALLOC_ENABLE";

    /// <summary>Set to <c>0</c> to leave libtorch's default (no huge-page advice).</summary>
    public const string OptOutVariable = "KLF_HUGE_PAGES";

    /// <summary>Whether this process set <see cref="TorchVariable"/> (false when the user set it, opted out, or not on Linux).</summary>
    public static bool Requested { get; private set; }

    /// <summary>Sets <see cref="TorchVariable"/>=1 in the native environment, unless already set or opted out. Idempotent.</summary>
    internal static void Request()
    {
        if (Requested || !OperatingSystem.IsLinux()) return;
        if (Environment.GetEnvironmentVariable(TorchVariable) is not null) return;
        if (Environment.GetEnvironmentVariable(OptOutVariable) == "0") return;
        // .NET keeps its own copy of the environment on Unix; libtorch reads the C library's.
        Requested = setenv(TorchVariable, "1", 0) == 0;
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}
