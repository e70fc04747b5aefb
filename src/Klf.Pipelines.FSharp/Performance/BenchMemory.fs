namespace Klf.Pipelines

open Klf.Models
open Klf.Tokenizers
open Klf.Training

/// Memory across the tasks of a continual run: the peak resident memory during each task and the
/// resident memory after it (Linux /proc; empty lists elsewhere).
[<RequireQualifiedAccess>]
module BenchMemory =
    /// Runs `strategy` over `sequence` and records, per task, the peak resident memory while it
    /// trained and was evaluated (the peak is reset when the previous task ends) and the resident
    /// memory after it, once garbage is collected and the C heap trimmed: what the strategy still
    /// holds rather than what the allocators keep for reuse (which also starts each task from the
    /// same trimmed heap, so allocator fragmentation does not add up across tasks).
    let run (modelName: string) (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (strategy: Strategy) (sequence: TaskSequence) : MemoryBench =
        let peaks = ResizeArray<int64>()
        let resident = ResizeArray<int64>()
        let canReset = Measure.resetPeak ()
        let control =
            { RunControl.none with
                OnTask = fun _ _ _ ->
                    Measure.peakResidentBytes () |> Option.iter peaks.Add
                    Measure.trimHeap ()
                    Measure.residentBytes () |> Option.iter resident.Add
                    if canReset then Measure.resetPeak () |> ignore }
        let result = Continual.execute control makeModel tok options strategy sequence
        { Strategy = strategy.Name
          Model = modelName
          Tasks = result.Tasks
          PeakBytes = List.ofSeq peaks
          ResidentBytes = List.ofSeq resident }

    /// LoRA (rank 8 on q and v) training of `model` for `steps` synthetic steps over a float32 base and
    /// over a bfloat16 one: parameter bytes, peak resident memory while training (the heap trimmed and
    /// the peak reset once the model is built and its base converted, so the float32 build does not
    /// count), median step time and the last loss.
    let lowPrecisionBase (name: string) (makeModel: unit -> ILanguageModel) (batch: int) (seqLen: int) (steps: int) : LowPrecisionBench list =
        [ for low in [ false; true ] ->
            use model = makeModel ()
            let lora = Klf.Adapters.Lora.Apply(model.Module, Klf.Adapters.LoraConfig.ForRank 8)
            if low then Klf.Adapters.LowPrecisionBase.Hold(lora, TorchSharp.torch.ScalarType.BFloat16) |> ignore
            Measure.trimHeap ()
            let canReset = Measure.resetPeak ()
            let bytes (trainable: bool) =
                model.Module.parameters() |> Seq.filter (fun p -> p.requires_grad = trainable) |> Seq.sumBy (fun p -> p.numel() * p.ElementSize)
            let rng = System.Random(7)
            use runner = new StepRunner(model, OptimizerOptions(LearningRate = 1e-3, WarmupSteps = 0))
            let times, losses =
                [ for _ in 1 .. steps ->
                    use b = BenchTraining.syntheticBatch model rng batch seqLen
                    let sw = System.Diagnostics.Stopwatch.StartNew()
                    let m = runner.Step([| b |])
                    sw.Elapsed.TotalMilliseconds, m.Loss ]
                |> List.unzip
            { Model = name
              Base = (if low then "bfloat16" else "float32")
              FrozenBytes = bytes false
              TrainableBytes = bytes true
              PeakBytes = (if canReset then defaultArg (Measure.peakResidentBytes ()) 0L else 0L)
              StepMs = Measure.median (List.tail times)
              Loss = List.last losses } ]

