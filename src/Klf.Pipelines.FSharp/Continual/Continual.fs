namespace Klf.Pipelines

open System
open System.IO
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Checkpoints

/// The outcome of one strategy on one task sequence.
type ContinualResult =
    { Strategy: string
      Tasks: string list
      /// a_{j,i} in percent: after training task j (row), score on task i (column); NaN above the diagonal.
      Matrix: AccuracyMatrix
      Summary: MetricSummary }

/// What a continual run reports and where it keeps its state. Build with
/// `{ RunControl.none with ... }` so that new fields keep their defaults.
type RunControl =
    { /// Sees each row of the matrix as it is measured: task index (0-based), task name, scores.
      OnTask: int -> string -> float[] -> unit
      /// Sees each optimizer step: task index (0-based), step number within the task (1-based), planned steps.
      OnStep: int -> int -> int -> unit
      /// Sees the resumption of a run: the number of tasks already completed.
      OnResume: int -> unit
      /// The run's folder: after each task the whole continual state is saved under
      /// `RunState.taskDir`, and a run started on a folder that holds states continues after the
      /// latest one (same matrix as an uninterrupted run). None: nothing is saved.
      StateDir: string option
      /// Keep every task's state (true) or only the latest (false).
      KeepAllStates: bool
      /// Best-validation checkpoints for strategies that do not set it (`StrategyRun.BestValidation`):
      /// each task then needs validation examples (`TaskData.Validation`).
      BestValidation: bool
      /// Optimizer steps between validation measurements (the last step is always measured).
      EvalEvery: int
      /// Sees what the trainer did on each task: task index (0-based), task name, the fit's result
      /// (validation losses and the step whose weights were kept).
      OnFit: int -> string -> FitResult -> unit }

    /// No callbacks, no state, no best-validation.
    static member none : RunControl =
        { OnTask = (fun _ _ _ -> ())
          OnStep = (fun _ _ _ -> ())
          OnResume = ignore
          StateDir = None
          KeepAllStates = true
          BestValidation = false
          EvalEvery = 10
          OnFit = (fun _ _ _ -> ()) }

/// Runs a strategy over a task sequence: train task j with the strategy's hooks (on the examples
/// its `TrainExamples` returns), then evaluate every task seen so far on its test split (batched
/// greedy decoding with the KV cache; long prompts cut to the trainer's MaxLength as in training).
[<RequireQualifiedAccess>]
module Continual =
    /// Runs `strategy` on a fresh model from `makeModel` over `sequence` with the trainer options
    /// (task j trains with seed `options.Seed + j`), under `control` (callbacks; per-task state and
    /// resumption when `control.StateDir` is set). Joint strategies (MTL) save no per-task state: an
    /// interrupted joint run starts again.
    let execute (control: RunControl) (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer)
                (options: TrainerOptions) (strategy: Strategy) (sequence: TaskSequence) : ContinualResult =
        let tasks = Array.ofList sequence.Tasks
        let names = tasks |> Array.map (fun t -> t.Name) |> List.ofArray
        let model = makeModel ()
        let run = strategy.Start model
        try
            let mutable matrix = Metrics.empty tasks.Length
            let rows = ResizeArray<float[]>()
            let record j (row: float[]) =
                row |> Array.iteri (fun i a -> matrix <- Metrics.withEntry j i a matrix)
                rows.Add row
            let encode = Prompt.examples model.Family tok
            let fit (j: int) (task: TaskData) (examples: Example[]) (validation: Example[]) (stepsScale: int) =
                // What BeginTask draws from torch's generator (a new LoRA adapter's initialisation)
                // must not depend on what ran before in this process: a resumed run starts this task
                // in a fresh process and must draw the same numbers as an uninterrupted one.
                Trainer.Seed(int64 (Task.streamSeed (options.Seed + j) task.Name "begin-task"))
                let hooks = run.BeginTask task
                let train = encode (run.TrainExamples task examples)
                let seeded = options.WithSeed(options.Seed + j)
                let taskOptions = if stepsScale > 1 && seeded.MaxSteps > 0 then seeded.WithMaxSteps(seeded.MaxSteps * stepsScale) else seeded
                let planned = Trainer.PlannedSteps(train.Length, taskOptions)
                let best = defaultArg run.BestValidation control.BestValidation
                if best && validation.Length = 0 then
                    raise (InvalidOperationException $"{strategy.Name}: best-validation is on, but task {task.Name} has no validation examples (hold some out with validation-examples, or set best-validation: false)")
                let validationSet = if best then ValidationSet(encode validation, control.EvalEvery) else null
                let interleave =
                    match run.Interleave task with
                    | Some i -> i.Steps taskOptions.Seed (encode i.Examples)
                    | None -> null
                let mutable step = 0
                let onStep = Action<StepMetrics>(fun _ -> step <- step + 1; control.OnStep j step planned)
                let result =
                    try Trainer.Run(model, train, taskOptions, FitExtras(hooks, onStep, validationSet, interleave))
                    with :? NonFiniteStepException as e ->
                        raise (InvalidOperationException($"{strategy.Name}, task {j + 1} ({task.Name}): {e.Message}; the states of the tasks before it are kept", e))
                control.OnFit j task.Name result
                run.AfterFit { Task = task; Train = train; Options = taskOptions }
                run.EndTask task
            let evaluate (j: int) =
                [| for i in 0 .. j ->
                    let t = tasks[i]
                    Evaluate.taskWithin options model tok (Metric.ofName t.Metric) (Task.maxNewTokens (fun s -> tok.Encode s) t) t.Test |]
            if run.Joint then
                // MTL: one training on the union at the last task, with the step budget of the whole
                // sequence (T × the per-task steps); its scores fill every row.
                let last = tasks.Length - 1
                if last >= 0 then
                    fit last tasks[last] (tasks |> Array.collect (fun t -> t.Train)) (tasks |> Array.collect (fun t -> t.Validation)) tasks.Length
                    let scores = evaluate last
                    for j in 0 .. last do
                        record j scores[.. j]
                        control.OnTask j tasks[j].Name scores[.. j]
            else
                let mutable start = 0
                match control.StateDir with
                | Some dir ->
                    RunState.cleanTemporaries dir
                    match RunState.latest dir with
                    | Some (j, folder) when j < tasks.Length ->
                        let saved = RunState.readRows folder strategy.Name names
                        if saved.Length <> j + 1 then raise (InvalidDataException $"{folder}: {saved.Length} rows for {j + 1} completed tasks")
                        run.LoadState folder
                        ModuleState.Load(model.Module, Path.Combine(folder, RunState.ModelFile))
                        saved |> Array.iteri record
                        start <- j + 1
                        control.OnResume start
                    | Some (j, folder) -> raise (InvalidDataException $"{folder}: state after task {j + 1} of a {tasks.Length}-task sequence")
                    | None -> ()
                | None -> ()
                for j in start .. tasks.Length - 1 do
                    let task = tasks[j]
                    fit j task task.Train task.Validation 1
                    let row = evaluate j
                    record j row
                    control.OnTask j task.Name row
                    match control.StateDir with
                    | Some dir ->
                        RunState.save dir j control.KeepAllStates (fun tmp ->
                            ModuleState.Save(model.Module, Path.Combine(tmp, RunState.ModelFile))
                            run.SaveState tmp
                            RunState.writeRows tmp strategy.Name names (rows.ToArray()))
                    | None -> ()
                match control.StateDir with
                | Some dir when tasks.Length > 0 -> run.WriteOutputs dir
                | _ -> ()
            { Strategy = strategy.Name
              Tasks = names
              Matrix = matrix
              Summary = Metrics.summary None matrix }
        finally
            run.Dispose ()
            model.Dispose()

    /// Runs `strategy` with a row callback and no saved state (see `execute`).
    let runWith (onTask: int -> string -> float[] -> unit) (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer)
                (options: TrainerOptions) (strategy: Strategy) (sequence: TaskSequence) : ContinualResult =
        execute { RunControl.none with OnTask = onTask } makeModel tok options strategy sequence

    /// ã_i of one task for FWT: a fresh model trained on task j alone (plain fine-tuning, seed
    /// `options.Seed + j` like task j of the sequence), scored on its test split.
    let singleTaskScore (control: RunControl) (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (sequence: TaskSequence) (j: int) : float =
        let task = sequence.Tasks[j]
        let one = TaskSequence.create task.Name [ task ]
        let r = execute control makeModel tok (options.WithSeed(options.Seed + j)) Plain.seqFT one
        r.Matrix[0, 0]

    /// The starting model's score on every task of the sequence before any training (zero-shot), in
    /// sequence order, each on its test split (cut to the options' MaxLength as training cuts).
    let zeroShotScores (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (sequence: TaskSequence) : float[] =
        use model = makeModel ()
        [| for t in sequence.Tasks ->
            Evaluate.taskWithin options model tok (Metric.ofName t.Metric) (Task.maxNewTokens (fun s -> tok.Encode s) t) t.Test |]

    /// ã_i for FWT: for each task, a fresh model trained on that task alone (plain fine-tuning with
    /// the same options), scored on its test split. Measured, never a constant.
    let singleTaskScores (makeModel: unit -> ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (sequence: TaskSequence) : float[] =
        Array.init sequence.Tasks.Length (singleTaskScore RunControl.none makeModel tok options sequence)

    /// Runs without progress output.
    let run makeModel tok options strategy sequence = runWith (fun _ _ _ -> ()) makeModel tok options strategy sequence
