/// `klf generate`: greedy answers from a model, for given prompts or a benchmark split (with exact match).
module Klf.Cli.Generate

open System
open Klf.Checkpoints
open Klf.Models
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common

let private model = req<string> "--model" "Hugging Face model folder."
let private tokenizer = tokenizerOption
let private prompt = opt<string[]> "--prompt" "Prompt text (repeatable)." None
let private benchmark = benchmarkOption
let private task = opt<string> "--task" "Answer examples of this task instead of --prompt." None
let private split = opt<string> "--split" "Split of --task." (Some "test")
let private n = opt<int> "--n" "Number of examples of --task (seeded sample)." (Some 20) |> check (atLeast 1)
let private maxNew = opt<int> "--max-new-tokens" "Cap on generated tokens." (Some 16) |> check (atLeast 1)
let private batch = opt<int> "--batch" "Prompts decoded together." (Some 16) |> check (atLeast 1)
let private noCache = opt<bool> "--no-cache" "Recompute the whole prefix every step (slow; for checking the cache)." (Some false)

let cmd =
    command "generate" "Greedy generation with the KV cache, for prompts or a benchmark split (reports exact match)." [ model; tokenizer; prompt; benchmark; task; split; n; maxNew; batch; noCache; deviceOption ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let tok, _ = loadTokenizer (pr.GetValue tokenizer) (pr.GetValue model)
        let m = ModelFolder.Load(pr.GetValue model, device (pr.GetValue deviceOption))
        let options = GenerationOptions(MaxNewTokens = pr.GetValue maxNew, BatchSize = pr.GetValue batch, UseCache = not (pr.GetValue noCache))
        match pr.GetValue task with
        | null | "" ->
            let prompts = pr.GetValue prompt
            if isNull prompts || prompts.Length = 0 then raise (ArgumentException "give --prompt TEXT or --task NAME")
            for p, a in Array.zip prompts (Prompt.generate m tok options prompts) do
                printfn "%s\n=> %s" p a
        | t ->
            let examples = Benchmark.load (benchmarkRoot (pr.GetValue benchmark)) (pr.GetValue split) t |> Benchmark.sample 1 (pr.GetValue n)
            let answers = Prompt.generate m tok options (examples |> Array.map (fun e -> e.Input))
            for e, a in Array.zip examples answers do
                printfn "%-12s expected %-20s got %s" e.Id e.Output a
            printfn "exact match %.1f%% over %d examples of %s/%s" (Finetune.exactMatch answers (examples |> Array.map (fun e -> e.Output))) examples.Length t (pr.GetValue split)
        m.Dispose()
        0)
