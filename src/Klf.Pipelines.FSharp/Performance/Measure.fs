namespace Klf.Pipelines

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices

module private Libc =
    [<DllImport("libc", EntryPoint = "malloc_trim")>]
    extern int mallocTrim(unativeint pad)

/// Timing and memory readings for benchmarks: wall-clock runs with warm-up, medians, and the
/// process's resident memory from /proc (Linux; None elsewhere).
[<RequireQualifiedAccess>]
module Measure =
    /// The median of a non-empty list.
    let median (xs: float list) : float =
        let a = List.sort xs |> Array.ofList
        if a.Length = 0 then nan
        elif a.Length % 2 = 1 then a[a.Length / 2]
        else 0.5 * (a[a.Length / 2 - 1] + a[a.Length / 2])

    /// Milliseconds `f` takes once.
    let ms (f: unit -> unit) : float =
        let sw = Stopwatch.StartNew()
        f ()
        sw.Elapsed.TotalMilliseconds

    /// `warmup` untimed calls, then `n` timed ones: their times in milliseconds.
    let runs (warmup: int) (n: int) (f: unit -> unit) : float list =
        for _ in 1 .. warmup do f ()
        [ for _ in 1 .. n -> ms f ]

    let private statusField (field: string) : int64 option =
        try
            File.ReadLines "/proc/self/status"
            |> Seq.tryFind (fun l -> l.StartsWith(field + ":", StringComparison.Ordinal))
            |> Option.map (fun l -> int64 (l.Substring(field.Length + 1).Trim().Split(' ')[0]) * 1024L)
        with _ -> None

    /// The process's resident memory now (VmRSS), in bytes.
    let residentBytes () : int64 option = statusField "VmRSS"

    /// The process's peak resident memory (VmHWM) since start or since `resetPeak`, in bytes.
    let peakResidentBytes () : int64 option = statusField "VmHWM"

    /// Collects .NET garbage (finalising tensors no one holds) and returns the C heap's free memory to
    /// the system (glibc `malloc_trim`), so a following reading shows what is still in use.
    let trimHeap () : unit =
        GC.Collect()
        GC.WaitForPendingFinalizers()
        GC.Collect()
        try Libc.mallocTrim 0un |> ignore with _ -> ()

    /// Resets the peak resident memory to the current resident memory (Linux `clear_refs` 5);
    /// false when the system does not allow it.
    let resetPeak () : bool =
        try
            File.WriteAllText("/proc/self/clear_refs", "5")
            true
        with _ -> false
