// Fine-tune a tiny LLaMA-family model on a slice of a real benchmark task, generate, save.
// Make the package feed first (scripts/pack.sh), then:
//   dotnet fsi src/Klf.Scripts/scripts/quickstart.fsx <tokenizer-folder> [task]
// The tokenizer folder holds a SentencePiece tokenizer.model (see the README).
// From the local feed scripts/pack.sh writes, found through the repository's NuGet.config; a script
// elsewhere adds it with #i "nuget: /absolute/path/to/artifacts/nuget".
#r "nuget: Klf.Pipelines"

open System
open System.IO
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Checkpoints
open Klf.Pipelines

Klf.Native.TorchNative.EnsureLoaded()

let args = fsi.CommandLineArgs |> Array.skip 1
if args.Length < 1 then failwith "usage: dotnet fsi quickstart.fsx <tokenizer-folder> [task]"
let tok = TokenizerLoader.FromFolder args[0]
let task = if args.Length > 1 then args[1] else "agnews"

let root =
    match Benchmark.locate __SOURCE_DIRECTORY__ with
    | Some b -> Path.Combine(b, "long_sequence")
    | None -> failwith "benchmarks/long_sequence not found above the script (set KLF_BENCHMARKS)"
let all = Benchmark.load root "train" task |> Benchmark.sample 1 300
let train, heldOut = all[.. 239], all[240 ..]

TorchSharp.torch.manual_seed 1L |> ignore
let model = LanguageModels.FromPreset("llama-tiny", Nullable tok.VocabSize)
let options = TrainerOptions(BatchSize = 8, MaxSteps = 60, Seed = 1, MaxLength = 256,
                             Optimizer = OptimizerOptions(LearningRate = 3e-3, WarmupSteps = 6))
let report = Finetune.run model tok options (fun s -> if s.Step % 10 = 0 then printfn "step %d loss %.3f" s.Step s.Loss) train heldOut
printfn "held-out loss %.3f -> %.3f (%.0f tokens/s)" report.HeldOutLossBefore report.HeldOutLossAfter report.TokensPerSecond

let answers = Prompt.generate model tok (GenerationOptions(MaxNewTokens = 6)) (heldOut |> Array.map (fun e -> e.Input))
printfn "held-out exact match %.1f%%" (Finetune.exactMatch answers (heldOut |> Array.map (fun e -> e.Output)))

let out = Path.Combine(Path.GetTempPath(), "klf-quickstart")
Checkpoint.Save(model, out) |> ignore
printfn "checkpoint written to %s" out
