/// `klf bench`: measured figures (training throughput, generation speed) that print, never assert.
module Klf.Cli.Bench

open System
open System.Diagnostics
open TorchSharp
open Klf.Models
open Klf.Training
open Klf.Cli.Cli

let private preset = opt<string> "--preset" "Model preset to measure." (Some "llama-5m")
let private vocab = opt<int> "--vocab-size" "Vocabulary size (default: the preset's)." None
let private batch = opt<int> "--batch" "Sequences per step." (Some 16)
let private seqLen = opt<int> "--seq-len" "Tokens per sequence (prompt + answer)." (Some 128)
let private steps = opt<int> "--steps" "Measured optimizer steps." (Some 20)
let private warmup = opt<int> "--warmup" "Unmeasured steps first." (Some 3)
let private threads = opt<int> "--threads" "Torch intra-op threads (0: torch's default)." (Some 0)

let cmd =
    command "bench" "Measure training throughput (tokens/s through forward, backward and AdamW) of a model preset." [ preset; vocab; batch; seqLen; steps; warmup; threads; Klf.Cli.Common.deviceOption ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        if pr.GetValue threads > 0 then torch.set_num_threads (pr.GetValue threads)
        Trainer.Seed 1L
        let v = pr.GetValue vocab
        let model = LanguageModels.FromPreset(pr.GetValue preset, (if v > 0 then Nullable v else Nullable()), Klf.Cli.Common.device (pr.GetValue Klf.Cli.Common.deviceOption))
        let vocabSize = (model.ConfigJson()["vocab_size"]).GetValue<int>()
        let b, t = pr.GetValue batch, pr.GetValue seqLen
        let rng = Random(7)
        // Fixed-length synthetic sequences: prompt t-8 tokens, answer 7 + EOS, ids clear of specials.
        let example () = LmExample(Array.init (t - 8) (fun _ -> rng.Next(3, vocabSize)), Array.init 7 (fun _ -> rng.Next(3, vocabSize)))
        let layout = BatchLayout.For(model, t, t)
        use runner = new StepRunner(model, OptimizerOptions(LearningRate = 3e-4, WarmupSteps = 0, TotalSteps = pr.GetValue steps + pr.GetValue warmup))
        let step () =
            use batchT = Batching.Build(Array.init b (fun _ -> example ()), layout, Trainer.DeviceOf model)
            let tokens = batchT.AttentionMask.sum().item<int64>()
            let sw = Stopwatch.StartNew()
            let m = runner.Step([| batchT |])
            sw.Elapsed.TotalSeconds, tokens, m.Loss
        for _ in 1 .. pr.GetValue warmup do step () |> ignore
        let results = [ for _ in 1 .. pr.GetValue steps -> step () ]
        let secs = results |> List.sumBy (fun (s, _, _) -> s)
        let toks = results |> List.sumBy (fun (_, n, _) -> n)
        let n = model.Module.parameters() |> Seq.sumBy (fun p -> p.numel())
        printfn "model      %s (%s), %d parameters, vocab %d" (pr.GetValue preset) model.ModelType n vocabSize
        printfn "workload   batch %d x %d tokens, AdamW, fp32, %d threads, device %O" b t (torch.get_num_threads ()) (Trainer.DeviceOf model)
        printfn "steps      %d measured after %d warm-up" results.Length (pr.GetValue warmup)
        printfn "step time  %.1f ms (mean)" (1000.0 * secs / float results.Length)
        printfn "throughput %.0f tokens/s" (float toks / secs)
        model.Module.Dispose()
        0)
