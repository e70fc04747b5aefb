/// Loading what the commands share: models, tokenizers, benchmark tasks.
module Klf.Cli.Common

open System
open System.IO
open TorchSharp
open Klf.Checkpoints
open Klf.Models
open Klf.Tokenizers
open Klf.Pipelines

/// The benchmark root holding `{train,dev,test}/<task>.json`: the given folder, else the shared
/// Long Sequence benchmark found beside the checkout (or via KLF_BENCHMARKS).
let benchmarkRoot (given: string) =
    match given with
    | null | "" -> Benchmark.defaultRoot ()
    | p -> p

/// The --tokenizer option shared by the commands that tokenize.
let tokenizerOption = Cli.opt<string> "--tokenizer" "Tokenizer folder (default: the model folder)." None

/// The --benchmark option shared by the commands that read tasks.
let benchmarkOption = Cli.opt<string> "--benchmark" "Benchmark root with {train,dev,test}/<task>.json (default: the shared Long Sequence benchmark)." None

/// The LoRA options of the commands that take --lora-r (--lora-r itself stays with each command: its help differs).
let loraAlphaOption = Cli.opt<float> "--lora-alpha" "LoRA alpha; the update is scaled by alpha / r (default: 2r, the project's convention)." None |> Cli.check Cli.finitePositive
/// --lora-dropout: dropout on the adapter's input while training.
let loraDropoutOption = Cli.opt<float> "--lora-dropout" "Dropout on the LoRA adapter's input while training." (Some (Klf.Adapters.LoraConfig.ForRank 1).Dropout)
                        |> Cli.check (fun v -> if v >= 0.0 && v < 1.0 then None else Some $"must lie in [0, 1), got {v}")
/// --lora-targets: the adapted modules.
let loraTargetsOption = Cli.opt<string> "--lora-targets" "Comma-separated module names for LoRA (default: q_proj,v_proj for LLaMA; q,v for T5; query,value for BERT)." None

/// The LoRA configuration of rank r from --lora-alpha, --lora-dropout and --lora-targets (LoraConfig.ForRank
/// for what is not given), for a model of this family. Values out of range are a clear error naming the flag.
let loraConfig (pr: System.CommandLine.ParseResult) (family: ModelFamily) (r: int) : Klf.Adapters.LoraConfig =
    let targets =
        match pr.GetValue loraTargetsOption with
        | null | "" -> Klf.Adapters.LoraConfig.DefaultTargets family
        | s -> s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
    if targets.Length = 0 then raise (ArgumentException "--lora-targets names no module")
    let c = Klf.Adapters.LoraConfig.ForRank(r, targets)
    let alpha = match pr.GetResult loraAlphaOption with null -> c.Alpha | _ -> pr.GetValue loraAlphaOption
    let dropout = pr.GetValue loraDropoutOption
    Klf.Adapters.LoraConfig(R = r, Alpha = alpha, Dropout = dropout, TargetModules = c.TargetModules)

/// The --device option of the commands that compute.
let deviceOption = Cli.opt<string> "--device" "Compute device: cpu, cuda or cuda:N." (Some "cpu")

/// Whether a --save-dtype value asks for bf16 storage (fp32: false); any other value is a clear error.
let savesBf16 (value: string) : bool =
    match value with
    | "fp32" -> false
    | "bf16" -> true
    | other -> raise (ArgumentException $"--save-dtype must be fp32 or bf16, got \"{other}\"")

/// Parses a device name; CUDA without a CUDA build or GPU is a clear error.
let device (name: string) : torch.Device =
    if name.StartsWith("cuda", StringComparison.OrdinalIgnoreCase) && not (torch.cuda.is_available ()) then
        raise (ArgumentException $"device {name} requested but CUDA is not available (this build uses LibTorch for the CPU unless built with -p:TorchBackend=cuda)")
    try torch.device name
    with _ -> raise (ArgumentException($"unknown device \"{name}\" (use cpu, cuda or cuda:N)"))

/// A model from a folder, or a fresh preset sized to the tokenizer's vocabulary, on a device.
let loadModel (modelDir: string) (preset: string) (tok: ITextTokenizer) (seed: int64) (dev: torch.Device) : ILanguageModel =
    match modelDir, preset with
    | (null | ""), (null | "") -> raise (ArgumentException "give --model DIR (a Hugging Face model folder) or --preset NAME")
    | (null | ""), p ->
        torch.manual_seed seed |> ignore
        LanguageModels.FromPreset(p, Nullable tok.VocabSize, dev)
    | d, _ -> ModelFolder.Load(d, dev)

/// The tokenizer of --tokenizer, else of the model folder.
let loadTokenizer (tokDir: string) (modelDir: string) : ITextTokenizer * string =
    let dir =
        match tokDir, modelDir with
        | (null | ""), (null | "") -> raise (ArgumentException "give --tokenizer DIR (or a --model folder that holds a tokenizer)")
        | (null | ""), m -> m
        | t, _ -> t
    TokenizerLoader.FromFolder dir, dir

/// The tokenizer files in a folder (to copy next to saved weights).
let tokenizerFiles (dir: string) = List.ofSeq (Klf.Tokenizers.TokenizerLoader.FilesIn dir)
