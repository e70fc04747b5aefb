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
    let load (folder: string) : ILanguageModel = ModelFolder.Load folder

    /// Loads a Hugging Face model folder on a device.
    let loadOn (device: torch.Device) (folder: string) : ILanguageModel = ModelFolder.Load(folder, device)

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

