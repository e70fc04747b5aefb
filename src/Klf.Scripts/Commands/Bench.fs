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
let private loraR = opt<int> "--lora-r" "Train a LoRA adapter of this rank instead of all weights (0 = full fine-tuning)." (Some 0)
let private importance =
    opt<bool> "--importance" "Also measure KIF importance tracking: alternate steps without and with an ImportanceTracker attached (every step counted) and print both step times and their ratio." (Some false)

let private median (xs: float list) =
    let a = List.sort xs |> Array.ofList
    if a.Length % 2 = 1 then a.[a.Length / 2] else 0.5 * (a.[a.Length / 2 - 1] + a.[a.Length / 2])

let cmd =
    command "bench" "Measure training throughput (tokens/s through forward, backward and AdamW) of a model preset." [ preset; vocab; batch; seqLen; steps; warmup; threads; loraR; Klf.Cli.Common.loraAlphaOption; Klf.Cli.Common.loraDropoutOption; Klf.Cli.Common.loraTargetsOption; importance; Klf.Cli.Common.deviceOption ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        if pr.GetValue threads > 0 then torch.set_num_threads (pr.GetValue threads)
        Trainer.Seed 1L
        let v = pr.GetValue vocab
        let model = LanguageModels.FromPreset(pr.GetValue preset, (if v > 0 then Nullable v else Nullable()), Klf.Cli.Common.device (pr.GetValue Klf.Cli.Common.deviceOption))
        let vocabSize = (model.ConfigJson()["vocab_size"]).GetValue<int>()
        let r = pr.GetValue loraR
        if r > 0 then Klf.Adapters.Lora.Apply(model.Module, Klf.Cli.Common.loraConfig pr model.Family r) |> ignore
        let withImportance = pr.GetValue importance
        let measured = pr.GetValue steps * (if withImportance then 2 else 1)
        let b, t = pr.GetValue batch, pr.GetValue seqLen
        let rng = Random(7)
        // Fixed-length synthetic sequences: prompt t-8 tokens, answer 7 + EOS, ids clear of specials.
        let example () = LmExample(Array.init (t - 8) (fun _ -> rng.Next(3, vocabSize)), Array.init 7 (fun _ -> rng.Next(3, vocabSize)))
        let layout = BatchLayout.For(model, t, t)
        use runner = new StepRunner(model, OptimizerOptions(LearningRate = 3e-4, WarmupSteps = 0, TotalSteps = measured + pr.GetValue warmup))
        let hooks = Klf.Training.StepHooks()
        use tracker = new Klf.Importance.ImportanceTracker(Klf.Importance.ImportanceOptions(SkipFirstStep = false, SkipLastStep = false))
        // The tracker's own cost, timed by hooks placed just before and after it in the same list.
        let hookClock = Stopwatch()
        let hookMs = Collections.Generic.List<float>()
        if withImportance then
            hooks.AfterOptimizerStep.Add(fun _ -> hookClock.Restart())
            tracker.Attach(hooks, model.Module)
            hooks.AfterOptimizerStep.Add(fun _ -> hookClock.Stop(); hookMs.Add hookClock.Elapsed.TotalMilliseconds)
        let stepWith (h: Klf.Training.StepHooks) =
            use batchT = Batching.Build(Array.init b (fun _ -> example ()), layout, Trainer.DeviceOf model)
            let tokens = batchT.AttentionMask.sum().item<int64>()
            let sw = Stopwatch.StartNew()
            let m = runner.Step([| batchT |], h)
            sw.Elapsed.TotalSeconds, tokens, m.Loss
        let step () = stepWith null
        for _ in 1 .. pr.GetValue warmup do (if withImportance then stepWith hooks else step ()) |> ignore
        // With --importance the measured steps alternate plain / tracked in ABBA order, so load drift and
        // any first-or-second-in-pair effect hit both alike.
        let pairs =
            [ for i in 1 .. pr.GetValue steps ->
                if not withImportance then step (), None
                elif i % 2 = 1 then let a = step () in a, Some (stepWith hooks)
                else let b = stepWith hooks in step (), Some b ]
        let results = pairs |> List.map fst
        let secs = results |> List.sumBy (fun (s, _, _) -> s)
        let toks = results |> List.sumBy (fun (_, n, _) -> n)
        let n = model.Module.parameters() |> Seq.sumBy (fun p -> p.numel())
        printfn "model      %s (%s), %d parameters, vocab %d" (pr.GetValue preset) model.ModelType n vocabSize
        printfn "workload   batch %d x %d tokens, AdamW, fp32, %d threads, device %O" b t (torch.get_num_threads ()) (Trainer.DeviceOf model)
        printfn "steps      %d measured after %d warm-up" results.Length (pr.GetValue warmup)
        printfn "step time  %.1f ms (mean)" (1000.0 * secs / float results.Length)
        printfn "throughput %.0f tokens/s" (float toks / secs)
        let trainable = model.Module.parameters() |> Seq.filter (fun p -> p.requires_grad) |> Seq.sumBy (fun p -> p.numel())
        printfn "training   %s, %d trainable parameters" (if r > 0 then $"LoRA r={r}" else "all weights") trainable
        if withImportance then
            let plain = results |> List.map (fun (s, _, _) -> 1000.0 * s)
            let tracked = pairs |> List.choose snd |> List.map (fun (s, _, _) -> 1000.0 * s)
            let mean xs = List.average xs
            printfn "importance %d tracked parameters (%d elements), 2 float32 buffers each, every step counted" tracker.Names.Count
                (model.Module.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.sumBy (fun struct (_, p) -> p.numel()))
            printfn "step time  without tracker %.1f ms mean, %.1f ms median" (mean plain) (median plain)
            printfn "step time  with tracker    %.1f ms mean, %.1f ms median" (mean tracked) (median tracked)
            printfn "ratio      %.3f (mean), %.3f (median) with / without" (mean tracked / mean plain) (median tracked / median plain)
            let own = hookMs |> Seq.skip (hookMs.Count - tracked.Length) |> List.ofSeq
            printfn "tracker    %.2f ms mean, %.2f ms median per step inside the hook = %.2f%% of the plain median step" (mean own) (median own) (100.0 * median own / median plain)
        model.Dispose()
        0)
