/// What `klf run` and `klf report` write from finished runs: per sequence `metrics.json` (the
/// contract), `report.md` and the PNG plots.
module Klf.Cli.Outputs

open System
open System.IO
open Klf.Pipelines
open Klf.Cli.Report

/// The folder of a sequence's outputs: `outDir` itself when the results hold one sequence, else
/// `outDir/<sequence>` (e.g. `standard-order1`).
let sequenceDir (outDir: string) (sequences: string list) (sequence: string) =
    if sequences.Length = 1 then outDir else Path.Combine(outDir, Experiment.slug sequence)

let private inv (x: float) = x.ToString("F1", Globalization.CultureInfo.InvariantCulture)

/// "mean ± std" with one decimal (just the mean for one seed).
let meanStd (seeds: int) (m: MeanStd) = if seeds > 1 then $"{inv m.Mean} ± {inv m.Std}" else inv m.Mean

/// A file a strategy's run of one seed wrote, from the first of `runDirs` that holds it.
let private runFile (runDirs: string list) (sequence: string) (seed: int) (strategy: string) (file: string) : string option =
    runDirs
    |> List.map (fun d -> Path.Combine(d, "runs", Experiment.slug sequence, $"seed-{seed}", StrategySpec.folderName strategy, file))
    |> List.tryFind File.Exists

/// The importance per layer of a strategy on a sequence: the `importance-layers.json` its runs
/// wrote (KIF strategies), averaged over the seeds that have one; None when no run has one.
let layerImportance (runDirs: string list) (sequence: string) (seeds: int list) (strategy: string) : LayerImportance option =
    let found =
        seeds |> List.choose (fun s -> runFile runDirs sequence s strategy Kif.LayerImportanceFile) |> List.map Kif.loadLayerImportance
    match found with
    | [] -> None
    | first :: _ ->
        let same = found |> List.filter (fun li -> li.Layers = first.Layers && li.Tasks = first.Tasks)
        let n = float same.Length
        let mean (pick: LayerImportance -> float[]) = Array.init (pick first).Length (fun i -> same |> List.sumBy (fun li -> (pick li)[i]) |> fun x -> x / n)
        Some { first with
                Scores = Array.init first.Scores.Length (fun t -> mean (fun li -> li.Scores[t]))
                Accumulated = mean (fun li -> li.Accumulated) }

/// Writes, per sequence of `outcomes`, metrics.json, report.md and the plots (each file atomically);
/// `settings` go into every report; importance per layer is read from the runs under `runDirs`.
/// Returns the metrics.json paths.
let write (outDir: string) (runDirs: string list) (settings: (string * string) list) (outcomes: SeedOutcome list) : string list =
    SkiaNative.ensure ()
    let sequences = outcomes |> List.map (fun o -> o.Sequence) |> List.distinct
    [ for sequence, tasks, aggregates in Results.aggregate outcomes ->
        let dir = sequenceDir outDir sequences sequence
        Directory.CreateDirectory dir |> ignore
        let mine = outcomes |> List.filter (fun o -> o.Sequence = sequence)
        let metrics = Path.Combine(dir, "metrics.json")
        Results.writeMetrics metrics mine
        let seeds = mine |> List.map (fun o -> o.Seed)
        let seedText = String.Join(", ", seeds)
        let extra =
            [ "sequence", sequence + ": " + String.Join(" -> ", tasks)
              "seeds", (if seeds.Length > 1 then $"{seedText} (matrices and metrics are means over seeds; metrics.json has the standard deviations)" else seedText) ]
        let results =
            [ for a in aggregates ->
                ({ Name = a.Name
                   Matrix = a.MeanMatrix
                   Summary = { AP = a.AP.Mean; FRa = a.FRa.Mean; FWT = a.FWT |> Option.map (fun f -> f.Mean); BWT = a.BWT.Mean } } : Markdown.StrategyResult) ]
        let importance = [ for a in aggregates do match layerImportance runDirs sequence a.Seeds a.Name with Some li -> yield a.Name, li | None -> () ]
        let facts = mine |> List.tryPick (fun o -> if o.Facts.IsEmpty then None else Some o.Facts) |> Option.defaultValue []
        // The first seed's curves of each strategy, linked by their path relative to the report.
        let curves =
            [ for a in aggregates do
                match a.Seeds |> List.tryPick (fun s -> runFile runDirs sequence s a.Name TrainingCurves.FileName) with
                | Some p -> yield a.Name, Path.GetRelativePath(dir, p).Replace('\\', '/'), TrainingCurves.load p
                | None -> () ]
        Markdown.write dir (extra @ settings) tasks facts results importance curves |> ignore
        metrics ]
