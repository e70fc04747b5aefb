/// `klf init`: write a randomly initialised model of a preset as a Hugging Face folder.
module Klf.Cli.Init

open System.IO
open TorchSharp
open Klf.Models
open Klf.Checkpoints
open Klf.Cli.Cli

let private preset = opt<string> "--preset" "Model preset (see `klf presets`)." None
let private config = opt<string> "--config" "A config.json to build instead of a preset." None
let private out = req<string> "--out" "Folder to write config.json and model.safetensors into." |> check folderToWrite
let private vocab = opt<int> "--vocab-size" "Vocabulary size (default: the preset's)." None |> check (atLeast 1)
let private seed = opt<int64> "--seed" "Seed of the random initialisation." (Some 1L)
let private bf16 = opt<bool> "--bf16" "Store the weights as bfloat16." (Some false)
let private streamed =
    opt<bool> "--streamed" "Write tensor by tensor without building the model in memory (models larger than memory): weights from N(0, initializer_range) seeded per tensor, norms 1, biases 0 (RandomCheckpoint), not the family's own initialisation." (Some false)
let private maxShard = opt<int64> "--max-shard-bytes" "Shard the weights into files of at most this many bytes (0: one file)." (Some 0L) |> check (atLeast64 0L)

let cmd =
    command "init" "Write a randomly initialised model of a preset or config as a Hugging Face model folder." [ preset; config; out; vocab; seed; bf16; streamed; maxShard ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let dir = pr.GetValue out
        let shard = match pr.GetValue maxShard with n when n > 0L -> System.Nullable n | _ -> System.Nullable()
        let dtype = if pr.GetValue bf16 then System.Nullable torch.ScalarType.BFloat16 else System.Nullable()
        let configJson () =
            match pr.GetValue config, pr.GetValue preset with
            | (null | ""), (null | "") -> raise (System.ArgumentException "give --preset or --config")
            | (null | ""), p ->
                let v = pr.GetValue vocab
                use m = LanguageModels.FromPreset(p, (if v > 0 then System.Nullable v else System.Nullable()), torch.META)
                m.ConfigJson(), $"preset {p}"
            | c, (null | "") ->
                if not (File.Exists c) then raise (FileNotFoundException($"{c}: config not found", c))
                (System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText c).AsObject()), c
            | _ -> raise (System.ArgumentException "give --preset or --config, not both")
        if pr.GetValue streamed then
            let json, source = configJson ()
            let n = RandomCheckpoint.Write(json, source, dir, pr.GetValue seed, shard, dtype)
            printfn "wrote %s (%s, %d parameters, tensor by tensor)" (Path.GetFullPath dir) (json["model_type"].GetValue<string>()) n
        else
            let json, source = configJson ()
            torch.manual_seed (pr.GetValue seed) |> ignore
            use model = LanguageModels.FromConfig(json, source)
            if pr.GetValue bf16 then model.Module.``to``(torch.ScalarType.BFloat16) |> ignore
            HfWeights.Save(model, dir, shard)
            let n = model.Module.parameters() |> Seq.sumBy (fun p -> p.numel())
            printfn "wrote %s (%s, %d parameters)" (Path.GetFullPath dir) model.ModelType n
        0)

let presets =
    command "presets" "List the named model presets." [] (fun _ ->
        for p in LanguageModels.PresetNames do printfn "%s" p
        0)
