namespace Klf.Pipelines

open System
open System.Text

/// Results as plain monospace text (what `klf run` prints when its output is not an interactive
/// terminal, and what a script can print or log): aligned tables, accuracy matrices, metric tables.
[<RequireQualifiedAccess>]
module TextTable =
    let private inv = Globalization.CultureInfo.InvariantCulture

    /// One decimal, invariant culture; NaN (not measured) is blank.
    let number (x: float) = if Double.IsNaN x then "" else x.ToString("F1", inv)

    /// An aligned table: columns separated by two spaces, the first left-aligned, the others
    /// right-aligned, trailing blanks trimmed. A row may be shorter than the header (blank cells); a
    /// longer one is an ArgumentException.
    let render (header: string list) (rows: string list list) : string =
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

    /// The header and cells of an accuracy matrix (row j = after task j; one decimal, NaN blank), for
    /// any table renderer. More rows than tasks, or a row longer than the tasks, is an ArgumentException.
    let matrixCells (tasks: string list) (rows: float[][]) : string list * string list list =
        let t = tasks.Length
        if rows.Length > t then invalidArg (nameof rows) $"{rows.Length} matrix rows for {t} tasks"
        for r in rows do
            if r.Length > t then invalidArg (nameof rows) $"a matrix row has {r.Length} scores for {t} tasks"
        let names = Array.ofList tasks
        "after \\ task" :: tasks, [ for j in 0 .. rows.Length - 1 -> names[j] :: [ for x in rows[j] -> number x ] ]

    /// An accuracy matrix under its title.
    let matrix (title: string) (tasks: string list) (rows: float[][]) : string =
        let header, cells = matrixCells tasks rows
        title + Environment.NewLine + render header cells

    /// The header of the metric table.
    let metricsHeader = [ "strategy"; "AP"; "F.Ra"; "FWT"; "BWT" ]

    /// Cells of a metric row: one decimal, NaN blank, FWT "-" when not measured.
    let metricsRow (strategy: string, ap: float, fRa: float, fwt: float option, bwt: float) =
        [ strategy; number ap; number fRa; (match fwt with Some f -> number f | None -> "-"); number bwt ]

    /// Strategy × AP / F.Ra / FWT / BWT.
    let metrics (rows: (string * float * float * float option * float) list) : string =
        render metricsHeader (List.map metricsRow rows)
