namespace Klf.Pipelines

open System
open System.IO

/// One run's progress line (see `RunProgress`).
type ProgressTask =
    /// Records `n` more units of work done.
    abstract Advance: int -> unit
    /// Changes the label, e.g. "kif seed 1 · task 2/4 agnews".
    abstract Describe: string -> unit
    /// Marks the run finished (further calls are ignored).
    abstract Done: unit -> unit

/// Progress of the runs of an experiment, as a display shows it. Used from the thread doing the
/// work; while it is active, text goes through `Log` so that a display can show it above its bars.
type RunProgress =
    /// Starts a progress line for one run (e.g. "kif seed 1") of `total` units of work (optimizer steps).
    abstract Start: label: string * total: int -> ProgressTask
    /// A line of text shown above the progress (or printed plainly).
    abstract Log: string -> unit

/// Progress displays and the experiment callbacks that drive them: `plain` writes lines to any
/// TextWriter (logs, CI, scripts); `control` turns a display into the `ExperimentControl` callbacks
/// of `Experiment.execute` (the interactive bars of `klf run` are another `RunProgress`).
[<RequireQualifiedAccess>]
module Progress =
    /// A duration as m:ss, or h:mm:ss from one hour.
    let duration (t: TimeSpan) =
        let t = if t < TimeSpan.Zero then TimeSpan.Zero else t
        if t.TotalHours >= 1.0 then $"{int t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" else $"{t.Minutes}:{t.Seconds:D2}"

    type private Line(out: TextWriter, clock: unit -> TimeSpan, label: string, total: int) =
        let started = clock ()
        let mutable label = label
        let mutable done' = 0
        let mutable decile = 0
        let mutable finished = false
        let pct () = if total > 0 then $" ({100L * int64 done' / int64 total}%%)" else ""
        do out.WriteLine($"{label}: start, {total} steps")
        interface ProgressTask with
            member _.Advance n =
                if not finished then
                    done' <- done' + n
                    // At most one line per 10 % of the total; 100 % is left to Done.
                    let d = if total > 0 then min 10 (int (int64 done' * 10L / int64 total)) else 0
                    if d > decile && d < 10 then
                        decile <- d
                        let elapsed = clock () - started
                        let left = TimeSpan.FromTicks(int64 (float elapsed.Ticks * float (total - done') / float done'))
                        out.WriteLine($"{label}: {done'}/{total}{pct ()}, {duration elapsed} elapsed, ~{duration left} left")
                    elif d > decile then decile <- d
            member _.Describe text =
                if not finished then
                    label <- text
                    out.WriteLine($"{label}: {done'}/{total}{pct ()}")
            member _.Done() =
                if not finished then
                    finished <- true
                    out.WriteLine($"{label}: done, {done'}/{total} steps in {duration (clock () - started)}")

    /// Plain progress on `out`, timing with `clock` (elapsed time since any fixed origin): Start,
    /// Describe and Done print one line each; Advance prints at most one line per 10 % of the total
    /// (none at 100 %, which Done reports); Log prints its text.
    let plainWith (out: TextWriter) (clock: unit -> TimeSpan) : RunProgress =
        { new RunProgress with
            member _.Start(label, total) = Line(out, clock, label, total) :> ProgressTask
            member _.Log text = out.WriteLine text }

    /// Plain progress on `out`, timed by the wall clock from now (see `plainWith`).
    let plain (out: TextWriter) : RunProgress =
        let sw = Diagnostics.Stopwatch.StartNew()
        plainWith out (fun () -> sw.Elapsed)

    /// A run as a display names it: "kif seed 1", "single-task 2 (amazon) seed 1", "zero-shot seed 1"; `sequences` gives
    /// each sequence's task names (`Experiment.sequenceTasks`).
    let runLabel (sequences: (string * string list) list) (r: RunSpec) : string =
        let what =
            match r.Kind with
            | StrategyRun s -> s
            | SingleTask j ->
                match sequences |> List.tryFind (fun (n, _) -> n = r.Sequence) with
                | Some(_, tasks) when j < tasks.Length -> $"single-task {j + 1} ({tasks[j]})"
                | _ -> $"single-task {j + 1}"
            | ZeroShot -> "zero-shot"
        $"{what} seed {r.Seed}"

    /// The callbacks of `Experiment.execute` that drive `progress`: a line per run (advanced per
    /// optimizer step), a log line per resumption and per measured matrix row, and each finished
    /// run's score (single task), scores (zero-shot) or AP, F.Ra and BWT. Other fields are `ExperimentControl.none`'s.
    let control (progress: RunProgress) (sequences: (string * string list) list) : ExperimentControl =
        let label = runLabel sequences
        let mutable current : ProgressTask option = None
        let row (scores: float[]) = String.Join("  ", scores |> Array.map (fun x -> x.ToString("F1", Globalization.CultureInfo.InvariantCulture)))
        { ExperimentControl.none with
            OnRunStart = fun r _ planned -> current <- Some(progress.Start(label r, planned))
            OnResume = fun r n -> progress.Log $"{label r}: resuming after task {n}"
            OnStep = fun _ -> current |> Option.iter (fun t -> t.Advance 1)
            OnTask = fun r _ name scores -> progress.Log(sprintf "%s: after %-12s %s" (label r) name (row scores))
            OnRunDone = fun r result skipped ->
                current |> Option.iter (fun t -> t.Done())
                current <- None
                if skipped then progress.Log $"{label r}: already finished"
                else
                    match r.Kind with
                    | SingleTask _ -> progress.Log(sprintf "%s: %.1f" (label r) (result.Rows[0].[0]))
                    | ZeroShot ->
                        let scores = List.zip result.Tasks (List.ofArray result.Rows[0]) |> List.map (fun (t, x) -> sprintf "%s %.1f" t x)
                        progress.Log(sprintf "%s: %s" (label r) (String.Join("  ", scores)))
                    | StrategyRun _ ->
                        let s = Metrics.summary None (Metrics.ofRows result.Rows)
                        progress.Log(sprintf "%s: AP %.1f  F.Ra %.1f  BWT %.1f" (label r) s.AP s.FRa s.BWT) }
