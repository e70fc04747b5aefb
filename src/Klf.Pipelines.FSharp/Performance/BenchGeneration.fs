namespace Klf.Pipelines

open System
open Klf.Models

/// Greedy decoding speed with and without the KV cache (no EOS stop, so every row decodes the full
/// number of new tokens).
[<RequireQualifiedAccess>]
module BenchGeneration =
    /// For each count of `newTokens`: `batch` random prompts of `prompt` tokens decoded greedily with
    /// the cache and without it (best of `repeats` each), tokens/s and the speedup.
    let run (name: string) (model: ILanguageModel) (batch: int) (prompt: int) (newTokens: int list) (repeats: int) : GenerationBench list =
        let vocab = (model.ConfigJson()["vocab_size"]).GetValue<int>()
        let rng = Random(13)
        let prompts = Array.init batch (fun _ -> Array.init prompt (fun _ -> rng.Next(3, vocab)))
        [ for n in newTokens ->
            let timed (cache: bool) =
                let options = GenerationOptions(MaxNewTokens = n, EosTokenIds = [||], UseCache = cache, BatchSize = batch)
                model.GenerateGreedy(prompts, GenerationOptions(MaxNewTokens = 4, EosTokenIds = [||], UseCache = cache, BatchSize = batch)) |> ignore // warm-up
                [ for _ in 1 .. repeats -> Measure.ms (fun () -> model.GenerateGreedy(prompts, options) |> ignore) ] |> List.min
            let cached, uncached = timed true, timed false
            let rate (ms: float) = float (batch * n) / (ms / 1000.0)
            { Model = name
              Batch = batch
              Prompt = prompt
              NewTokens = n
              CacheMs = cached
              NoCacheMs = uncached
              CacheTokensPerSecond = rate cached
              NoCacheTokensPerSecond = rate uncached
              Speedup = uncached / cached
              TorchCacheMs = nan
              TorchNoCacheMs = nan
              TorchCacheTokensPerSecond = nan
              TorchNoCacheTokensPerSecond = nan
              KlfOverTorchCache = nan
              KlfOverTorchNoCache = nan } ]
