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
    /// memory after it.
    let run (modelName: string) (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (strategy: Strategy) (sequence: TaskSequence) : MemoryBench =
        let peaks = ResizeArray<int64>()
        let resident = ResizeArray<int64>()
        let canReset = Measure.resetPeak ()
        let control =
            { RunControl.none with
                OnTask = fun _ _ _ ->
                    Measure.peakResidentBytes () |> Option.iter peaks.Add
                    Measure.residentBytes () |> Option.iter resident.Add
                    if canReset then Measure.resetPeak () |> ignore }
        let result = Continual.execute control makeModel tok options strategy sequence
        { Strategy = strategy.Name
          Model = modelName
          Tasks = result.Tasks
          PeakBytes = List.ofSeq peaks
          ResidentBytes = List.ofSeq resident }
