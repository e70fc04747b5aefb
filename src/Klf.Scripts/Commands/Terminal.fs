/// Terminal output of the commands: progress bars and tables (Spectre.Console) on an interactive
/// terminal; the library's plain lines (`Progress.plain`) and text tables (`TextTable`) when output
/// is redirected or plain output is asked for (CI, TERM=dumb, KLF_PLAIN=1), so logs stay small and
/// free of control codes.
module Klf.Cli.Terminal

open System
open System.Diagnostics
open System.IO
open System.Text
open Spectre.Console
open Klf.Pipelines

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
        let header, cells = TextTable.matrixCells tasks rows
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
        else run (Progress.plain Console.Out)

/// Prints an accuracy matrix (row j = after task j; NaN = not measured, shown blank; one decimal).
let printMatrix (title: string) (tasks: string list) (rows: float[][]) : unit =
    if interactive () then Interactive.printMatrix AnsiConsole.Console title tasks rows
    else Console.Out.Write(TextTable.matrix title tasks rows)

/// Prints a table of text cells (e.g. "71.2 ± 0.4" for multi-seed aggregates): the first column
/// left-aligned, the others right-aligned.
let printMetricsText (header: string list) (rows: string list list) : unit =
    if interactive () then Interactive.printTable AnsiConsole.Console header rows
    else Console.Out.Write(TextTable.render header rows)

/// Prints strategy × AP / F.Ra / FWT / BWT (one decimal; FWT "-" when not measured).
let printMetrics (rows: (string * float * float * float option * float) list) : unit =
    printMetricsText TextTable.metricsHeader (List.map TextTable.metricsRow rows)
