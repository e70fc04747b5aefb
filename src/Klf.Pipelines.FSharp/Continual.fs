namespace Klf.Pipelines

open System
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif

/// A strategy running on one model: the hooks of each task of the default loop.
type StrategyRun =
    { /// Hooks for training this task (the trainer runs them).
      BeginTask: TaskData -> StepHooks
      /// Called after training the task, before evaluation (KIF fuses here).
      EndTask: TaskData -> unit
      /// Frees what the strategy holds.
      Dispose: unit -> unit }

/// A continual-learning strategy: the default training loop plus hooks. `Start` prepares a fresh
/// model (e.g. adds LoRA) and returns the per-task hooks.
type Strategy = { Name: string; Start: ILanguageModel -> StrategyRun }

/// The strategies available so far, selectable by name.
[<RequireQualifiedAccess>]
module Strategy =
    let private plain = { BeginTask = (fun _ -> StepHooks()); EndTask = ignore; Dispose = ignore }

    let private loraTargets (model: ILanguageModel) =
        if model.Family = ModelFamily.DecoderOnly then [| "q_proj"; "v_proj" |] else [| "q"; "v" |]

    /// Sequential full fine-tuning: each task trains all weights, nothing protects earlier tasks.
    let seqFT : Strategy = { Name = "seqft"; Start = fun _ -> plain }

    /// One LoRA adapter (rank r, on q and v) trained through the whole sequence.
    let seqLora (r: int) : Strategy =
        { Name = "seqlora"
          Start = fun model ->
            LoraAdapter.applyWith (LoraConfig(R = r, Alpha = float (2 * r), Dropout = 0.05, TargetModules = loraTargets model)) model |> ignore
            plain }

    /// KIF with full fine-tuning: whole-tensor units, first-order importance, the static rule.
    let kifWith (options: KifOptions) : Strategy =
        { Name = "kif"
          Start = fun model ->
            let session = new KifSession(model, options)
            { BeginTask = fun t -> session.BeginTask t.Name
              EndTask = fun _ -> session.EndTask() |> ignore
              Dispose = session.Dispose } }

    /// KIF with full fine-tuning and the reference settings.
    let kif : Strategy = kifWith (KifOptions.FullFineTuning())

    /// KIF-LoRA: rank-1 units of a LoRA of rank r, second-order importance, the adaptive rule and
    /// the orthogonality term (λ_orth = 0.1).
    let kifLora (r: int) : Strategy =
        { Name = "kif-lora"
          Start = fun model ->
            let lora = LoraAdapter.applyWith (LoraConfig(R = r, Alpha = float (2 * r), Dropout = 0.05, TargetModules = loraTargets model)) model
            let session = new KifSession(model, KifOptions.Lora())
            { BeginTask = fun t -> Orthogonality.AddTo(session.BeginTask t.Name, lora, "default")
              EndTask = fun _ -> session.EndTask() |> ignore
              Dispose = session.Dispose } }

    /// Every strategy by name (LoRA rank 8).
    let all : Strategy list = [ seqFT; seqLora 8; kif; kifLora 8 ]

    /// Names of the strategies.
    let names = all |> List.map (fun s -> s.Name)

    /// A strategy by name; unknown names list the known ones.
    let byName (name: string) : Strategy =
        match all |> List.tryFind (fun s -> String.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase)) with
        | Some s -> s
        | None ->
            let known = String.Join(", ", names)
            invalidArg "name" $"unknown strategy \"{name}\" (known: {known})"

/// The outcome of one strategy on one task sequence.
type ContinualResult =
    { Strategy: string
      Tasks: string list
      /// a_{j,i} in percent: after training task j (row), score on task i (column); NaN above the diagonal.
      Matrix: AccuracyMatrix
      Summary: MetricSummary }

/// Runs a strategy over a task sequence: train task j with the strategy's hooks, then evaluate
/// every task seen so far on its test split (batched greedy decoding with the KV cache).
[<RequireQualifiedAccess>]
module Continual =
    /// Runs `strategy` on a fresh model from `makeModel` over `sequence` with the trainer options
    /// (each task's seed derives from the options' seed and its position). `onTask` sees each row.
    let runWith (onTask: int -> string -> float[] -> unit) (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer)
                (options: TrainerOptions) (strategy: Strategy) (sequence: TaskSequence) : ContinualResult =
        let tasks = Array.ofList sequence.Tasks
        let model = makeModel ()
        let run = strategy.Start model
        try
            let mutable matrix = Metrics.empty tasks.Length
            for j in 0 .. tasks.Length - 1 do
                let task = tasks[j]
                let hooks = run.BeginTask task
                let train = Prompt.examples model.Family tok task.Train
                let o = options
                let taskOptions = TrainerOptions(o.BatchSize, o.AccumulationSteps, o.Epochs, o.MaxSteps, o.Seed + j, o.PoolBatches, o.Optimizer, o.MaxLength, o.MaxTargetLength)
                Trainer.Fit(model, train, taskOptions, hooks) |> ignore
                run.EndTask task
                let row =
                    [| for i in 0 .. j ->
                        let t = tasks[i]
                        Evaluate.task model tok (Metric.ofName t.Metric) (Task.maxNewTokens (fun s -> tok.Encode s) t) t.Test |]
                row |> Array.iteri (fun i a -> matrix <- Metrics.withEntry j i a matrix)
                onTask j task.Name row
            { Strategy = strategy.Name
              Tasks = tasks |> Array.map (fun t -> t.Name) |> List.ofArray
              Matrix = matrix
              Summary = Metrics.summary None matrix }
        finally
            run.Dispose ()
            model.Module.Dispose()

    /// ã_i for FWT: for each task, a fresh model trained on that task alone (plain fine-tuning with
    /// the same options), scored on its test split. Measured, never a constant.
    let singleTaskScores (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (sequence: TaskSequence) : float[] =
        sequence.Tasks
        |> List.mapi (fun j task ->
            let one = TaskSequence.create task.Name [ task ]
            let o = options
            let taskOptions = TrainerOptions(o.BatchSize, o.AccumulationSteps, o.Epochs, o.MaxSteps, o.Seed + j, o.PoolBatches, o.Optimizer, o.MaxLength, o.MaxTargetLength)
            let r = runWith (fun _ _ _ -> ()) makeModel tok taskOptions Strategy.seqFT one
            r.Matrix[0, 0])
        |> Array.ofList

    /// Runs without progress output.
    let run makeModel tok options strategy sequence = runWith (fun _ _ _ -> ()) makeModel tok options strategy sequence
