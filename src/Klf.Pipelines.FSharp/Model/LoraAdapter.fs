namespace Klf.Pipelines

open System
open TorchSharp
open Klf.Models
open Klf.Tokenizers
open Klf.Adapters
open Klf.Training
open Klf.Checkpoints

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
