/// Terminal output of the commands: progress bars and tables (Spectre.Console) on an interactive
/// terminal, plain lines and aligned text tables when output is redirected or plain output is asked
/// for (CI, NO_COLOR, TERM=dumb, KLF_PLAIN=1), so logs stay small and free of control codes.
module Klf.Cli.Terminal

open System
open System.Diagnostics
open System.IO
open System.Text
open Spectre.Console

/// Progress of the runs of a command. Used from the thread doing the work; while it is active, write
/// text through `Log` (not printfn), so it is shown above the bars.
type RunProgress =
    /// Starts a progress line for one run (e.g. "kif seed 1") of `total` units of work (optimizer steps).
    abstract Start: label: string * total: int -> ProgressTask
    /// A line of text shown above the bars (or printed plainly).
    abstract Log: string -> unit

/// One run's progress line.
and ProgressTask =
    /// Records `n` more units of work done.
    abstract Advance: int -> unit
    /// Changes the label, e.g. "kif seed 1 · task 2/4 agnews".
    abstract Describe: string -> unit
    /// Marks the run finished (further calls are ignored).
    abstract Done: unit -> unit

let private inv = Globalization.CultureInfo.InvariantCulture

/// One decimal, invariant culture; NaN (not measured) is blank.
let private num (x: float) = if Double.IsNaN x then "" else x.ToString("F1", inv)

/// Whether the environment asks for plain output: CI set (other than "0"/"false"), TERM=dumb, or
/// KLF_PLAIN=1. `env` reads an environment variable (null when unset). NO_COLOR is not among them:
/// it removes colour only (Spectre.Console honours it), the progress display stays.
let plainRequested (env: string -> string) : bool =
    let ci = match env "CI" with null | "" -> false | v -> not (v = "0" || v.Equals("false", StringComparison.OrdinalIgnoreCase))
    ci || env "TERM" = "dumb" || env "KLF_PLAIN" = "1"

/// The decision behind `interactive`, from its inputs: output not redirected, no request for plain
/// output (see `plainRequested`), and a terminal that `terminalCapable` (asked only then) reports
/// interactive and ANSI-capable.
let interactiveWith (env: string -> string) (outputRedirected: bool) (terminalCapable: unit -> bool) : bool =
    not outputRedirected && not (plainRequested env) && terminalCapable ()

/// True only when stdout is a terminal that supports live progress and tables (Spectre.Console's
/// capability detection) and nothing asks for plain output (see `plainRequested`).
let interactive () : bool =
    interactiveWith Environment.GetEnvironmentVariable Console.IsOutputRedirected (fun () ->
        let caps = AnsiConsole.Profile.Capabilities
        caps.Interactive && caps.Ansi)

/// Plain output: every function writes to or returns text for a given writer.
[<RequireQualifiedAccess>]
module Plain =
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

    /// Plain progress on `out`, timing with `clock` (elapsed time since any fixed origin):
    /// Start, Describe and Done print one line each; Advance prints at most one line per 10 % of the
    /// total (none at 100 %, which Done reports); Log prints its text.
    let progress (out: TextWriter) (clock: unit -> TimeSpan) : RunProgress =
        { new RunProgress with
            member _.Start(label, total) = Line(out, clock, label, total) :> ProgressTask
            member _.Log text = out.WriteLine text }

    /// Runs `body` with plain progress on `out` (wall-clock time).
    let withProgress (out: TextWriter) (body: RunProgress -> 'T) : 'T =
        let sw = Stopwatch.StartNew()
        body (progress out (fun () -> sw.Elapsed))

    /// An aligned monospace table: columns separated by two spaces, the first left-aligned, the others
    /// right-aligned, trailing blanks trimmed. A row may be shorter than the header (blank cells).
    let table (header: string list) (rows: string list list) : string =
        let n = header.Length
        for r in rows do
            if r.Length > n then invalidArg (nameof rows) $"a row has {r.Length} cells for {n} columns"
        let all = header :: rows |> List.map (fun r -> Array.ofList (r @ List.replicate (n - r.Length) ""))
        let widths = Array.init n (fun c -> all |> List.map (fun r -> r[c].Length) |> List.max)
        let sb = StringBuilder()
        for r in all do
            let cells = r |> Array.mapi (fun c s -> if c = 0 then s.PadRight widths[c] else s.PadLeft widths[c])
            sb.AppendLine(String.Join("  ", cells).TrimEnd()) |> ignore
        sb.ToString()

    /// The header and cells of an accuracy matrix (shared with the interactive table).
    let internal matrixCells (tasks: string list) (rows: float[][]) =
        let t = tasks.Length
        if rows.Length > t then invalidArg (nameof rows) $"{rows.Length} matrix rows for {t} tasks"
        for r in rows do
            if r.Length > t then invalidArg (nameof rows) $"a matrix row has {r.Length} scores for {t} tasks"
        let names = Array.ofList tasks
        "after \\ task" :: tasks, [ for j in 0 .. rows.Length - 1 -> names[j] :: [ for x in rows[j] -> num x ] ]

    /// An accuracy matrix under its title: row j = after task j, one decimal, NaN blank.
    let matrix (title: string) (tasks: string list) (rows: float[][]) : string =
        let header, cells = matrixCells tasks rows
        title + Environment.NewLine + table header cells

    /// The header of the metric table.
    let metricsHeader = [ "strategy"; "AP"; "F.Ra"; "FWT"; "BWT" ]

    /// Cells of a metric row: one decimal, NaN blank, FWT "-" when not measured.
    let metricsRow (strategy: string, ap: float, fRa: float, fwt: float option, bwt: float) =
        [ strategy; num ap; num fRa; (match fwt with Some f -> num f | None -> "-"); num bwt ]

    /// Strategy × AP / F.Ra / FWT / BWT as a text table.
    let metrics (rows: (string * float * float * float option * float) list) : string =
        table metricsHeader (List.map metricsRow rows)

/// Spectre.Console output on a given console (the real terminal, or a test console).
[<RequireQualifiedAccess>]
module Interactive =
    type private Bar(task: Spectre.Console.ProgressTask) =
        let mutable finished = false
        interface ProgressTask with
            member _.Advance n = if not finished then task.Increment(float n)
            member _.Describe text = if not finished then task.Description <- Markup.Escape text
            member _.Done() =
                if not finished then
                    finished <- true
                    task.Value <- task.MaxValue
                    task.StopTask()

    /// Runs `body` inside a Spectre progress display on `console` (description, bar, percentage,
    /// elapsed, remaining; Log lines above the bars). The body runs on the calling thread; its
    /// exception propagates after the display is closed and the cursor restored.
    let withProgress (console: IAnsiConsole) (body: RunProgress -> 'T) : 'T =
        let progress =
            console.Progress()
                .AutoClear(false)
                .HideCompleted(false)
                .Columns([| TaskDescriptionColumn(Alignment = Justify.Left) :> ProgressColumn
                            ProgressBarColumn(); PercentageColumn(); ElapsedTimeColumn(); RemainingTimeColumn() |])
        try
            progress.Start(Func<ProgressContext, 'T>(fun ctx ->
                // Refreshed on the way out too, so a failure leaves the bars as they were when it happened.
                try
                    body
                        { new RunProgress with
                            member _.Start(label, total) =
                                Bar(ctx.AddTask(Markup.Escape label, true, float (max 1 total))) :> ProgressTask
                            member _.Log text = console.WriteLine(text) }
                finally
                    ctx.Refresh()))
        finally
            console.Cursor.Show()

    let private table (title: string option) (header: string list) (rows: string list list) =
        let t = Table()
        t.Border <- TableBorder.Rounded
        title |> Option.iter (fun s -> t.Title <- TableTitle(Markup.Escape s))
        header |> List.iteri (fun c h ->
            let col = TableColumn(Markup.Escape h)
            col.Alignment <- Nullable(if c = 0 then Justify.Left else Justify.Right)
            t.AddColumn col |> ignore)
        for r in rows do
            let cells = r @ List.replicate (header.Length - r.Length) ""
            t.AddRow([| for c in cells -> Markup.Escape c |]) |> ignore
        t

    /// A Spectre table: the first column left-aligned, the others right-aligned.
    let printTable (console: IAnsiConsole) (header: string list) (rows: string list list) =
        if rows |> List.exists (fun r -> r.Length > header.Length) then invalidArg (nameof rows) "a row has more cells than the header"
        console.Write(table None header rows)

    /// An accuracy matrix as a Spectre table titled `title` (NaN blank, one decimal).
    let printMatrix (console: IAnsiConsole) (title: string) (tasks: string list) (rows: float[][]) =
        let header, cells = Plain.matrixCells tasks rows
        console.Write(table (Some title) header cells)

let mutable private active : RunProgress option = None

/// Runs `body` (on the calling thread) with progress: Spectre bars when `interactive ()`, else plain
/// lines on stdout. The body's exception propagates; the terminal is restored first. A nested call
/// reuses the progress already shown.
let withProgress (body: RunProgress -> 'T) : 'T =
    match active with
    | Some p -> body p
    | None ->
        let run (p: RunProgress) =
            active <- Some p
            try body p finally active <- None
        if interactive () then Interactive.withProgress AnsiConsole.Console run
        else Plain.withProgress Console.Out run

/// Prints an accuracy matrix (row j = after task j; NaN = not measured, shown blank; one decimal).
let printMatrix (title: string) (tasks: string list) (rows: float[][]) : unit =
    if interactive () then Interactive.printMatrix AnsiConsole.Console title tasks rows
    else Console.Out.Write(Plain.matrix title tasks rows)

/// Prints a table of text cells (e.g. "71.2 ± 0.4" for multi-seed aggregates): the first column
/// left-aligned, the others right-aligned.
let printMetricsText (header: string list) (rows: string list list) : unit =
    if interactive () then Interactive.printTable AnsiConsole.Console header rows
    else Console.Out.Write(Plain.table header rows)

/// Prints strategy × AP / F.Ra / FWT / BWT (one decimal; FWT "-" when not measured).
let printMetrics (rows: (string * float * float * float option * float) list) : unit =
    printMetricsText Plain.metricsHeader (List.map Plain.metricsRow rows)
