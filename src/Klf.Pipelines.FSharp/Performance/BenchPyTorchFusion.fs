namespace Klf.Pipelines

open System
open System.Text.Json.Nodes
open Klf.Models.Llama

/// `BenchFusion.run`'s measurements again in plain PyTorch (`pytorch_fusion.py`, beside the klf
/// program): the same rules, units, bases, shapes and timing, so each fusion row can say how Klf's
/// time compares with what a researcher's PyTorch code takes on the same machine in the same run.
[<RequireQualifiedAccess>]
module BenchPyTorchFusion =
    let private distinct (xs: string seq) = String.Join(",", Seq.distinct xs)

    /// Runs `script` on the shape of `config` (`model` names it in the message) for every (rule,
    /// units, base) of `klf` with `repeats` fusions on `threads` threads, and returns `klf` with
    /// PyTorch's fuse ms, ratio and Klf ÷ PyTorch filled in, plus a note of what ran. The rows are left
    /// as they were, with a "skipped: …" note, when PyTorch is absent, the script fails or its
    /// partition does not count the units, slices and bytes Klf's does (the figures would not compare).
    let compare (script: string) (model: string) (config: LlamaConfig) (repeats: int) (threads: int) (klf: FusionBench list) : FusionBench list * string =
        let rules (basis: string) = klf |> Seq.filter (fun f -> f.Base = basis) |> Seq.map (fun f -> f.Rule) |> distinct
        let args =
            PythonTorch.configArgs config
            @ [ "--units"; klf |> Seq.map (fun f -> f.Units) |> distinct
                "--rules"; rules "previous"; "--base-rules"; rules "pre-trained"
                "--repeats"; string repeats; "--threads"; string threads ]
        match PythonTorch.run script args 3600000 with
        | Error message -> klf, message
        | Ok(python, json) ->
            let rows =
                [ for r in json["results"].AsArray() ->
                    (r["rule"].GetValue<string>(), r["units"].GetValue<string>(), r["base"].GetValue<string>()), r ]
                |> Map.ofList
            let differs (f: FusionBench) =
                match rows.TryFind(f.Rule, f.Units, f.Base) with
                | None -> Some $"{f.Rule} on {f.Units} ({f.Base}) is missing from its output"
                | Some r ->
                    let units, slices, bytes = r["unit_count"].GetValue<int>(), r["slices"].GetValue<int>(), r["bytes"].GetValue<int64>()
                    if (units, slices, bytes) = (f.UnitCount, f.Slices, f.Bytes) then None
                    else Some $"its {f.Units} partition has {units} units, {slices} slices, {bytes} bytes; Klf's {f.UnitCount}, {f.Slices}, {f.Bytes}"
            match klf |> List.tryPick differs with
            | Some why -> klf, $"skipped: {python} {IO.Path.GetFileName script}: {why}"
            | None ->
                let version, torchThreads = json["torch"].GetValue<string>(), json["threads"].GetValue<int>()
                let note = $"ran: PyTorch {version} ({python}, {torchThreads} threads), {model}"
                [ for f in klf ->
                    let r = rows[(f.Rule, f.Units, f.Base)]
                    let ms = r["fuse_ms"].GetValue<float>()
                    { f with TorchFuseMs = ms; TorchRatio = r["ratio"].GetValue<float>(); KlfOverTorch = f.FuseMs / ms } ],
                note
