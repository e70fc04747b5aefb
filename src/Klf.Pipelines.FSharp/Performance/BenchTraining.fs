namespace Klf.Pipelines

open System
open System.Diagnostics
open TorchSharp
open Klf.Models
open Klf.Models.Llama
open Klf.Training
open Klf.Importance

/// Benchmarks of training: libtorch's matmul peak, a training step's throughput and MFU, and the
/// cost of KIF's importance tracking. Each prints nothing and returns figures.
[<RequireQualifiedAccess>]
module BenchTraining =
    /// The best fp32 matmul rate (GFLOP/s) over square sizes 512 to 2048 (2n³ FLOPs per product,
    /// median of 5 after 2 warm-up products), on the current thread count.
    let matmulPeak () : MatmulPeak =
        use _ng = torch.no_grad()
        [ for n in [ 512; 1024; 1536; 2048 ] ->
            use a = torch.randn(int64 n, int64 n)
            use b = torch.randn(int64 n, int64 n)
            let reps = if n <= 1024 then 10 else 3
            let times = Measure.runs 2 5 (fun () -> for _ in 1 .. reps do torch.matmul(a, b).Dispose())
            n, 2.0 * float n ** 3.0 * float reps / (Measure.median times / 1000.0) / 1e9 ]
        |> List.maxBy snd
        |> fun (n, g) -> { Size = n; Gflops = g }

    /// Fixed-length synthetic sequences: a prompt of `seqLen` − 8 random ids and a 7-token answer
    /// (8 label positions with the EOS the batch adds), ids clear of the special ones.
    let syntheticBatch (model: ILanguageModel) (rng: Random) (batch: int) (seqLen: int) : LmBatch =
        let vocab = (model.ConfigJson()["vocab_size"]).GetValue<int>()
        let example () = LmExample(Array.init (seqLen - 8) (fun _ -> rng.Next(3, vocab)), Array.init 7 (fun _ -> rng.Next(3, vocab)))
        Batching.Build(Array.init batch (fun _ -> example ()), BatchLayout.For(model, seqLen, seqLen), Trainer.DeviceOf model)

    let private llamaConfig (model: ILanguageModel) =
        match model with
        | :? LlamaForCausalLM as l -> l.Config
        | _ -> invalidArg "model" "the training benchmark counts FLOPs of LLaMA-family models only"

    /// Median time of a training step of `model` (AdamW, clipping, fp32) on synthetic batches of
    /// `batch` × `seqLen` tokens, after `warmup` steps, with tokens/s, FLOPs (`TrainingFlops`) and
    /// MFU against `peak`.
    let trainStep (name: string) (model: ILanguageModel) (batch: int) (seqLen: int) (warmup: int) (steps: int) (peak: MatmulPeak) : TrainBench =
        let config = llamaConfig model
        let rng = Random(7)
        use runner = new StepRunner(model, OptimizerOptions(LearningRate = 3e-4, WarmupSteps = 0))
        let step () =
            use b = syntheticBatch model rng batch seqLen
            let sw = Stopwatch.StartNew()
            runner.Step([| b |]) |> ignore
            sw.Elapsed.TotalMilliseconds
        for _ in 1 .. warmup do step () |> ignore
        let ms = Measure.median [ for _ in 1 .. steps -> step () ]
        let flops = TrainingFlops.llamaStep config batch seqLen 8
        let count (f: torch.Tensor -> bool) = model.Module.parameters() |> Seq.filter f |> Seq.sumBy (fun p -> p.numel())
        let gflops = flops / (ms / 1000.0) / 1e9
        { Model = name
          Parameters = count (fun _ -> true)
          Trainable = count (fun p -> p.requires_grad)
          Batch = batch
          SeqLen = seqLen
          Labels = 8
          StepMs = ms
          TokensPerSecond = float (batch * seqLen) / (ms / 1000.0)
          FlopsPerStep = flops
          Gflops = gflops
          Mfu = gflops / peak.Gflops }

    /// Step time with an `ImportanceTracker` attached (every step counted) ÷ without, on `model`
    /// (its trainable parameters: all, or the LoRA adapter's): `repeats` repeats, each `pairs` pairs
    /// of steps in ABBA order (so load drift hits both alike) giving the ratio of the medians; the
    /// result is the median of the repeats' ratios, with each repeat's.
    let importanceOverhead (training: string) (model: ILanguageModel) (batch: int) (seqLen: int) (pairs: int) (repeats: int) : ImportanceBench =
        let rng = Random(11)
        use runner = new StepRunner(model, OptimizerOptions(LearningRate = 3e-4, WarmupSteps = 0))
        let hooks = StepHooks()
        use tracker = new ImportanceTracker(ImportanceOptions(SkipFirstStep = false, SkipLastStep = false))
        let hookClock = Stopwatch()
        let hookMs = Collections.Generic.List<float>()
        hooks.AfterOptimizerStep.Add(fun _ -> hookClock.Restart())
        tracker.Attach(hooks, model.Module)
        hooks.AfterOptimizerStep.Add(fun _ -> hookClock.Stop(); hookMs.Add hookClock.Elapsed.TotalMilliseconds)
        let step (h: StepHooks) =
            use b = syntheticBatch model rng batch seqLen
            let sw = Stopwatch.StartNew()
            runner.Step([| b |], h) |> ignore
            sw.Elapsed.TotalMilliseconds
        for _ in 1 .. 2 do step null |> ignore; step hooks |> ignore
        let runs =
            [ for _ in 1 .. repeats ->
                let measured =
                    [ for i in 1 .. pairs ->
                        if i % 2 = 1 then let a = step null in a, step hooks
                        else let b = step hooks in step null, b ]
                Measure.median (List.map fst measured), Measure.median (List.map snd measured) ]
        let ratios = runs |> List.map (fun (plain, tracked) -> tracked / plain)
        { Training = training
          PlainMs = Measure.median (List.map fst runs)
          TrackedMs = Measure.median (List.map snd runs)
          Ratio = Measure.median ratios
          Ratios = ratios
          HookMs = Measure.median (hookMs |> Seq.skip 2 |> List.ofSeq) }
