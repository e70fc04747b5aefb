/// DIR/report.md of a continual run: settings, per strategy the accuracy matrix, the metric
/// table and links to the PNG plots written beside it (see Plots).
module Klf.Reports.Markdown

open System
open System.IO
open System.Text
open Klf.Checkpoints
open Klf.Formats
open Klf.Pipelines

/// One strategy's results as the report needs them.
type StrategyResult = { Name: string; Matrix: AccuracyMatrix; Summary: MetricSummary }

let private inv = Globalization.CultureInfo.InvariantCulture
let private pct (x: float) = if Double.IsNaN x then "" else x.ToString("F1", inv)
let private cell (s: string) = s.Replace("|", "\\|")

/// A file-name-safe form of a strategy name (letters, digits, '-', '_', '.'; others become '-').
let slug (name: string) =
    String(name.ToLowerInvariant() |> Seq.map (fun c -> if Char.IsAsciiLetterOrDigit c || c = '-' || c = '_' || c = '.' then c else '-') |> Array.ofSeq)

let heatmapFile (strategy: string) = $"heatmap-{slug strategy}.png"
let tasksOverTimeFile (strategy: string) = $"tasks-over-time-{slug strategy}.png"
let [<Literal>] MetricsFile = "metrics.png"
/// The PNG of a KIF strategy's importance per layer.
let importanceFile (strategy: string) = $"importance-per-layer-{slug strategy}.png"
/// The training-curve plot of a strategy.
let curvesFile (strategy: string) = $"training-loss-{slug strategy}.png"

let private score (x: float) = if Double.IsNaN x then "" else x.ToString("F2", inv)

/// Importance per layer as a Markdown table: rows = layers (natural order), columns = Ŝ after each
/// task, then Â after the last; two decimals, blank for NaN.
let importanceTable (li: LayerImportance) =
    let sb = StringBuilder()
    let tasks = Array.ofList li.Tasks
    sb.Append("| layer | ").Append(String.Join(" | ", tasks |> Array.map (fun t -> cell $"Ŝ {t}"))).AppendLine(" | Â |") |> ignore
    sb.Append("| --- |").Append(String.replicate (tasks.Length + 1) " ---: |").AppendLine() |> ignore
    li.Layers |> List.iteri (fun l name ->
        let row = [| for k in 0 .. tasks.Length - 1 -> score (li.Scores[k][l]) |]
        sb.Append($"| {cell name} | ").Append(String.Join(" | ", row)).AppendLine($" | {score (li.Accumulated[l])} |") |> ignore)
    sb.ToString()

/// The accuracy matrix as a Markdown table: rows = after task j, columns = tasks, percent with one
/// decimal, blank where not measured (above the diagonal).
let matrixTable (tasks: string list) (m: AccuracyMatrix) =
    let sb = StringBuilder()
    let names = Array.ofList tasks
    sb.Append("| after \\ task | ").Append(String.Join(" | ", names |> Array.map cell)).AppendLine(" |") |> ignore
    sb.Append("| --- |").Append(String.replicate names.Length " ---: |").AppendLine() |> ignore
    for j in 0 .. m.Size - 1 do
        let row = [| for i in 0 .. m.Size - 1 -> pct m[j, i] |]
        sb.Append($"| {cell names[j]} | ").Append(String.Join(" | ", row)).AppendLine(" |") |> ignore
    sb.ToString()

/// Strategy × AP / F.Ra / FWT / BWT (FWT "-" when no single-task runs were made), and a last row
/// The tasks table's column of zero-shot scores.
[<Literal>]
let ZeroShotColumn = "zero-shot"

/// The tasks table's column of single-task scores.
[<Literal>]
let SingleTaskColumn = "single-task ã_i"

/// "chance" with the stream's average chance level under AP when it is known.
let metricTable (chance: float option) (results: StrategyResult list) =
    let sb = StringBuilder()
    sb.AppendLine("| strategy | AP | F.Ra | FWT | BWT |").AppendLine("| --- | ---: | ---: | ---: | ---: |") |> ignore
    for r in results do
        let s = r.Summary
        let fwt = match s.FWT with Some f -> pct f | None -> "-"
        sb.AppendLine($"| {cell r.Name} | {pct s.AP} | {pct s.FRa} | {fwt} | {pct s.BWT} |") |> ignore
    match chance with
    | Some c -> sb.AppendLine($"| *chance (guessing)* | {pct c} | | | |") |> ignore
    | None -> ()
    sb.ToString()

/// The tasks with their metric, number of labels and chance level (a generation task has neither),
/// and one column per entry of `taskScores` (a name and one score per task, in the facts' order:
/// zero-shot, single-task).
let factsTableWith (taskScores: (string * float[]) list) (facts: TaskFacts list) =
    let sb = StringBuilder()
    let extra = String.Join("", taskScores |> List.map (fun (name, _) -> $" {cell name} |"))
    let rule = String.Join("", taskScores |> List.map (fun _ -> " ---: |"))
    sb.AppendLine($"| task | metric | labels | chance |{extra}").AppendLine($"| --- | --- | ---: | ---: |{rule}") |> ignore
    facts |> List.iteri (fun i f ->
        let labels = match f.Labels with Some n -> string n | None -> "-"
        let chance = match TaskFacts.chance f with Some c -> pct c | None -> "-"
        let score (xs: float[]) = if i < xs.Length then pct xs[i] else "-"
        let scores = String.Join("", taskScores |> List.map (fun (_, xs) -> $" {score xs} |"))
        sb.AppendLine($"| {cell f.Name} | {f.Metric} | {labels} | {chance} |{scores}") |> ignore)
    sb.ToString()

/// The tasks with their metric, number of labels and chance level (a generation task has neither).
let factsTable (facts: TaskFacts list) = factsTableWith [] facts

/// The whole report.md text. taskScores: per-task score columns of the tasks table (name, one score
/// per task: the zero-shot and single-task scores); settings: (name, value) pairs shown as a table; facts:
/// each task's metric and labels ([] when the runs did not record them); importance: per KIF strategy
/// (name → data), its importance per layer (the section says so when the list is empty).
let rec renderWith (taskScores: (string * float[]) list) (settings: (string * string) list) (tasks: string list) (facts: TaskFacts list)
                   (results: StrategyResult list) (importance: (string * LayerImportance) list) (curves: (string * string * CurvePoint list) list) =
    let sb = StringBuilder()
    let line (s: string) = sb.AppendLine s |> ignore
    line "# Continual run report"
    line ""
    let order = String.Join(" → ", tasks)
    let chance = TaskFacts.streamChance facts
    line $"Tasks in order: {order}. Scores in percent (exact match or ROUGE-L per task, as below); BWT, F.Ra and FWT in points. Raw numbers: [metrics.json](metrics.json)."
    line ""
    if not facts.IsEmpty then
        line "## Tasks"
        line ""
        line "Each task's metric and, for a classification task, its labels and chance level (100 / labels, the score of always giving one label on a balanced test set)."
        for name, _ in taskScores do
            if name = ZeroShotColumn then line "Zero-shot: the starting model's score before any training."
            elif name = SingleTaskColumn then line "Single-task ã_i: a fresh model trained on that task alone (the reference of FWT)."
        line ""
        sb.Append(factsTableWith taskScores facts) |> ignore
        line ""
        match chance with
        | Some c -> line $"Stream average chance: {pct c} (the AP of guessing)."
        | None -> line "Stream average chance: not defined (a task is not a classification task)."
        line ""
    line "## Settings"
    line ""
    line "| setting | value |"
    line "| --- | --- |"
    for k, v in settings do line $"| {cell k} | {cell v} |"
    line ""
    line "## Metrics"
    line ""
    sb.Append(metricTable chance results) |> ignore
    line ""
    line $"![AP and BWT per strategy]({MetricsFile})"
    line ""
    for r in results do
        line $"## {r.Name}"
        line ""
        line "Accuracy matrix (row = after training that task, column = task evaluated; blank = not measured yet):"
        line ""
        sb.Append(matrixTable tasks r.Matrix) |> ignore
        line ""
        line $"![{r.Name}: accuracy matrix]({heatmapFile r.Name})"
        line ""
        line $"![{r.Name}: each task's score over time]({tasksOverTimeFile r.Name})"
        line ""
        match curves |> List.tryFind (fun (n, _, _) -> n = r.Name) with
        | Some(_, source, _) ->
            line $"![{r.Name}: training loss]({curvesFile r.Name})"
            line ""
            line $"Training and validation loss per step: [{source}]({source})."
            line ""
        | None -> ()
    line "## Importance per layer (KIF)"
    line ""
    if importance.IsEmpty then
        line "Not available: the run results do not expose importance scores yet."
    else
        line "Mean normalised importance of the skill units of each layer: Ŝ after each task and the accumulated Â after the last (each unit counts once)."
        line ""
        for name, li in importance do
            line $"### {name}"
            line ""
            line $"![{name}: importance per layer]({importanceFile name})"
            line ""
            sb.Append(importanceTable li) |> ignore
            line ""
    sb.ToString()

/// The whole report.md text without per-task score columns (see `renderWith`).
and render settings tasks facts results importance curves = renderWith [] settings tasks facts results importance curves

/// Writes report.md and the PNGs into dir (each file atomically: temp name, then rename) and
/// returns the paths written, report.md first. taskScores: per-task score columns of the tasks table
/// (see `renderWith`). importance: per KIF strategy (name → data), its importance per layer, plotted
/// and tabulated (pass [] when there is none).
let rec writeWith (taskScores: (string * float[]) list) (dir: string) (settings: (string * string) list) (tasks: string list) (facts: TaskFacts list)
                  (results: StrategyResult list) (importance: (string * LayerImportance) list) (curves: (string * string * CurvePoint list) list) : string list =
    Directory.CreateDirectory dir |> ignore
    let bytes (name: string) (data: byte[]) =
        let p = Path.Combine(dir, name)
        AtomicFile.Write(p, fun s -> s.Write(data, 0, data.Length))
        p
    let perTaskChance = [| for t in tasks -> facts |> List.tryFind (fun f -> f.Name = t) |> Option.bind TaskFacts.chance |]
    let pngs =
        [ for r in results do
            yield bytes (heatmapFile r.Name) (Plots.heatmap r.Name tasks r.Matrix)
            yield bytes (tasksOverTimeFile r.Name) (Plots.tasksOverTime r.Name tasks perTaskChance r.Matrix)
          if not results.IsEmpty then
            yield bytes MetricsFile (Plots.metrics (TaskFacts.streamChance facts) [ for r in results -> r.Name, r.Summary ])
          for name, _, points in curves do
            yield bytes (curvesFile name) (Plots.trainingCurves $"{name}: training loss" points)
          for name, li in importance do
            let p = Path.Combine(dir, importanceFile name)
            Plots.importancePerLayer p $"{name}: importance per layer" li
            yield p ]
    let md = Path.Combine(dir, "report.md")
    AtomicFile.WriteAllText(md, renderWith taskScores settings tasks facts results importance curves)
    md :: pngs

/// Writes report.md and the PNGs without per-task score columns (see `writeWith`).
and write dir settings tasks facts results importance curves = writeWith [] dir settings tasks facts results importance curves
