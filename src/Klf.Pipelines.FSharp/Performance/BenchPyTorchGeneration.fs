namespace Klf.Pipelines

open System
open Klf.Models.Llama

/// `BenchGeneration.run`'s greedy decoding again in PyTorch (`pytorch_generate.py`, beside the klf
/// program): the same shape, batch sizes, prompt length, token counts and timing, with the HF-style
/// KV cache (grown by torch.cat) and without one, so each decoding row can say how Klf's time
/// compares with PyTorch's on the same machine in the same run.
[<RequireQualifiedAccess>]
module BenchPyTorchGeneration =
    let private distinct (xs: int seq) = String.Join(",", Seq.distinct xs)

    /// Runs `script` on the shape of `config` (`model` names it in the message) for every (batch,
    /// new tokens) of `klf` (best of `repeats` on `threads` threads) and returns `klf` with PyTorch's
    /// times, tokens/s and Klf ÷ PyTorch filled in, plus a note of what ran; the rows as they were,
    /// with a "skipped: …" note, when PyTorch is absent or the script fails.
    let compare (script: string) (model: string) (config: LlamaConfig) (repeats: int) (threads: int) (klf: GenerationBench list) : GenerationBench list * string =
        let prompts = klf |> List.map (fun g -> g.Prompt) |> List.distinct
        if prompts.Length > 1 then klf, "skipped: the decoding rows use several prompt lengths; pytorch_generate.py takes one"
        else
        let args =
            PythonTorch.configArgs config
            @ [ "--batches"; klf |> Seq.map (fun g -> g.Batch) |> distinct
                "--new-tokens"; klf |> Seq.map (fun g -> g.NewTokens) |> distinct
                "--prompt"; string (List.head prompts); "--repeats"; string repeats; "--threads"; string threads ]
        match PythonTorch.run script args 3600000 with
        | Error message -> klf, message
        | Ok(python, json) ->
            let rows =
                [ for r in json["results"].AsArray() -> (r["batch"].GetValue<int>(), r["new_tokens"].GetValue<int>()), r ] |> Map.ofList
            match klf |> List.tryFind (fun g -> not (rows.ContainsKey(g.Batch, g.NewTokens))) with
            | Some g -> klf, $"skipped: {python} {IO.Path.GetFileName script} gave no row for batch {g.Batch}, {g.NewTokens} new tokens"
            | None ->
                let version, torchThreads = json["torch"].GetValue<string>(), json["threads"].GetValue<int>()
                let note = $"ran: PyTorch {version} ({python}, {torchThreads} threads), {model}"
                [ for g in klf ->
                    let r = rows[(g.Batch, g.NewTokens)]
                    let cached, uncached = r["cache_ms"].GetValue<float>(), r["no_cache_ms"].GetValue<float>()
                    { g with
                        TorchCacheMs = cached
                        TorchNoCacheMs = uncached
                        TorchCacheTokensPerSecond = r["cache_tokens_per_s"].GetValue<float>()
                        TorchNoCacheTokensPerSecond = r["no_cache_tokens_per_s"].GetValue<float>()
                        KlfOverTorchCache = g.CacheMs / cached
                        KlfOverTorchNoCache = g.NoCacheMs / uncached } ],
                note
