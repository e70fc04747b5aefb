/// `klf import olora SRC --out DIR`: a benchmark folder Klf reads, from another project's layout.
module Klf.Cli.Import

open System
open System.CommandLine
open System.IO
open Klf.Pipelines
open Klf.Cli.Cli

let private src =
    let a = Argument<string>("SRC")
    a.Description <- "O-LoRA's CL_Benchmark folder: <Category>/<Dataset>/{train,dev,test}.json and labels.json."
    a
let private out = req<string> "--out" "The benchmark folder to write (must not exist): {train,dev,test}/<dataset>.json and benchmark.json." |> check folderToWrite
let private instructionsOpt = opt<string> "--instructions" "O-LoRA's configs/instruction_config.json (default: SRC/../configs/instruction_config.json)." None
let private taskName = opt<bool> "--add-task-name" "Prefix each prompt with Task:<Category> (O-LoRA's add_task_name)." (Some false)
let private datasetName = opt<bool> "--add-dataset-name" "Prefix each prompt with Dataset:<dataset> (O-LoRA's add_dataset_name)." (Some false)

let private olora =
    let c = command "olora" "Import O-LoRA's CL_Benchmark layout (prompts built from each category's instruction, as O-LoRA does)." [ out; instructionsOpt; taskName; datasetName ] (fun pr ->
        let source = pr.GetValue src
        let instructions =
            match pr.GetValue instructionsOpt with
            | null | "" -> Path.Combine(Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(Path.GetFullPath source)), "configs", "instruction_config.json")
            | f -> f
        let written = OLoraImport.run source instructions (pr.GetValue taskName) (pr.GetValue datasetName) (pr.GetValue out)
        for t in written do
            let counts = String.Join(", ", t.Counts |> List.map (fun (s, n) -> $"{s} {n}"))
            printfn "%-12s %-6s %s; %d labels" t.Task t.Category counts t.Labels.Length
        printfn "wrote %s (%d tasks); run it with klf run --benchmark %s --tasks %s" (Path.GetFullPath(pr.GetValue out)) written.Length (pr.GetValue out) (String.Join(",", written |> List.map (fun t -> t.Task)))
        0)
    c.Arguments.Add src
    c

/// `klf import`: its subcommands.
let cmd =
    let c = Command("import", "Import a benchmark from another project's layout into a folder Klf reads.")
    c.Subcommands.Add olora
    c
