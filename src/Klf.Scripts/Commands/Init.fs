/// `klf init`: write a randomly initialised model of a preset as a Hugging Face folder.
module Klf.Cli.Init

open System.IO
open TorchSharp
open Klf.Models
open Klf.Checkpoints
open Klf.Cli.Cli

let private preset = req<string> "--preset" "Model preset (see `klf presets`)."
let private out = req<string> "--out" "Folder to write config.json and model.safetensors into."
let private vocab = opt<int> "--vocab-size" "Vocabulary size (default: the preset's)." None
let private seed = opt<int64> "--seed" "Seed of the random initialisation." (Some 1L)
let private bf16 = opt<bool> "--bf16" "Store the weights as bfloat16." (Some false)

let cmd =
    command "init" "Write a randomly initialised model of a preset as a Hugging Face model folder." [ preset; out; vocab; seed; bf16 ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        torch.manual_seed (pr.GetValue seed) |> ignore
        let v = pr.GetValue vocab
        let model = LanguageModels.FromPreset(pr.GetValue preset, (if v > 0 then System.Nullable v else System.Nullable()))
        if pr.GetValue bf16 then model.Module.``to``(torch.ScalarType.BFloat16) |> ignore
        let dir = pr.GetValue out
        HfWeights.Save(model, dir)
        let n = model.Module.parameters() |> Seq.sumBy (fun p -> p.numel())
        printfn "wrote %s (%s, %d parameters)" (Path.GetFullPath dir) model.ModelType n
        0)

let presets =
    command "presets" "List the named model presets." [] (fun _ ->
        for p in LanguageModels.PresetNames do printfn "%s" p
        0)
