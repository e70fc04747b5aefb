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

/// Writes, per sequence of `outcomes`, metrics.json, report.md and the plots (each file atomically);
/// `settings` go into every report. Returns the metrics.json paths.
let write (outDir: string) (settings: (string * string) list) (outcomes: SeedOutcome list) : string list =
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
        Markdown.write dir (extra @ settings) tasks results |> ignore
        metrics ]
