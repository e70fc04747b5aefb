namespace Klf.Pipelines

open System
open TorchSharp
open Klf.Models
open Klf.Tokenizers
open Klf.Adapters
open Klf.Training
open Klf.Checkpoints

/// Models for F# pipelines: curried, data-last wrappers over LanguageModels and ILanguageModel.
[<RequireQualifiedAccess>]
module Model =
    /// Loads a Hugging Face model folder (strict key check) on the CPU in float32.
    let load (folder: string) : ILanguageModel = LanguageModels.FromFolder folder

    /// Loads a Hugging Face model folder on a device.
    let loadOn (device: torch.Device) (folder: string) : ILanguageModel = LanguageModels.FromFolder(folder, device)

    /// A randomly initialised preset (seeded), with the vocabulary of a tokenizer.
    let preset (seed: int64) (name: string) (tok: ITextTokenizer) : ILanguageModel =
        torch.manual_seed seed |> ignore
        LanguageModels.FromPreset(name, Nullable tok.VocabSize)

    /// Saves a model in Hugging Face layout (config.json + model.safetensors), each file atomically.
    let save (folder: string) (model: ILanguageModel) : unit = HfWeights.Save(model, folder)

    /// Number of parameters (trainable or not).
    let parameterCount (model: ILanguageModel) : int64 = model.Module.parameters() |> Seq.sumBy (fun p -> p.numel())

    /// Greedy answers (token ids) to prompts.
    let generateIds (options: GenerationOptions) (prompts: int[] seq) (model: ILanguageModel) : int[][] =
        model.GenerateGreedy(Array.ofSeq prompts, options)

    /// Frees the model's tensors.
    let dispose (model: ILanguageModel) : unit = model.Module.Dispose()

/// Tokenizers for F# pipelines.
[<RequireQualifiedAccess>]
module Tokenizer =
    /// Loads the tokenizer of a model folder (SentencePiece or GPT-2-style BPE).
    let load (folder: string) : ITextTokenizer = TokenizerLoader.FromFolder folder

    /// Token ids of a text, without special tokens.
    let encode (tok: ITextTokenizer) (text: string) : int[] = tok.Encode text

    /// Text of token ids, special tokens skipped.
    let decode (tok: ITextTokenizer) (ids: int[]) : string = tok.Decode ids

/// LoRA adapters for F# pipelines.
[<RequireQualifiedAccess>]
module LoraAdapter =
    /// Adds an adapter of rank r (alpha = 2r, dropout 0.05) to the named modules and freezes the rest.
    let apply (r: int) (targets: string list) (model: ILanguageModel) : LoraModel =
        Lora.Apply(model.Module, LoraConfig.ForRank(r, Array.ofList targets))

    /// Applies a full LoRA configuration.
    let applyWith (config: LoraConfig) (model: ILanguageModel) : LoraModel = Lora.Apply(model.Module, config)

    /// Saves an adapter in PEFT layout.
    let save (folder: string) (adapter: string) (lora: LoraModel) : unit = lora.SaveAdapter(folder, adapter)

/// Training for F# pipelines.
[<RequireQualifiedAccess>]
module Train =
    /// Default options with a batch size, a step count and a peak learning rate.
    let options (batchSize: int) (steps: int) (learningRate: float) : TrainerOptions =
        TrainerOptions(BatchSize = batchSize, MaxSteps = steps, Optimizer = OptimizerOptions(LearningRate = learningRate))

    /// Trains on examples; returns one metrics record per optimizer step.
    let fit (options: TrainerOptions) (examples: LmExample[]) (model: ILanguageModel) : StepMetrics[] =
        Trainer.Fit(model, examples, options) |> Array.ofSeq

    /// Mean evaluation loss over the answer tokens of examples.
    let evalLoss (examples: LmExample[]) (model: ILanguageModel) : float = Trainer.EvaluateLoss(model, examples)
