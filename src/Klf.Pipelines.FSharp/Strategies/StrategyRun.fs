namespace Klf.Pipelines

open System
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif
open TorchSharp

/// What a strategy sees right after the trainer fitted a task: the task, the encoded examples it
/// trained on (after `TrainExamples`) and the trainer options of the task.
type FittedTask =
    { Task: TaskData
      Train: LmExample[]
      Options: TrainerOptions }

/// A second stream of training steps for a task (Recurrent-KIF's memory steps): its examples, and
/// the interleaved steps to run once they are encoded (given the task's training seed).
type Interleaving =
    { Examples: Example[]
      Steps: int -> LmExample[] -> InterleavedSteps }

/// A strategy running on one model: the hooks of each task of the default loop.
/// Build runs with `{ StrategyRun.plain with ... }` so that new optional hooks keep their defaults.
type StrategyRun =
    { /// Hooks for training this task (the trainer runs them).
      BeginTask: TaskData -> StepHooks
      /// Called after training the task, before evaluation (KIF fuses here).
      EndTask: TaskData -> unit
      /// Frees what the strategy holds.
      Dispose: unit -> unit
      /// The examples the current task trains on, from its own training examples (before
      /// encoding); identity by default. Replay appends its memory here.
      TrainExamples: TaskData -> Example[] -> Example[]
      /// Called after the trainer fitted a task, before `EndTask` (EWC estimates its Fisher here).
      AfterFit: FittedTask -> unit
      /// Joint training (MTL): `Continual.runWith` trains once, at the last task, on the union of
      /// every task's training examples, and fills every row of the matrix with that model's scores.
      Joint: bool
      /// Writes what the strategy carries between tasks (importance, memory, Fisher, adapter count)
      /// into a folder, between tasks. The runner saves the model's parameters itself.
      SaveState: string -> unit
      /// Restores a folder written by `SaveState` into a freshly started run, before the runner loads
      /// the model's parameters (so it may first rebuild structure, e.g. add adapters).
      LoadState: string -> unit
      /// Writes the strategy's own outputs into the run's folder once the last task is done (KIF:
      /// `importance-layers.json`, the importance per layer for the report).
      WriteOutputs: string -> unit
      /// Interleaved steps on a second stream during a task's training (None: plain training).
      Interleave: TaskData -> Interleaving option
      /// Keep the weights of the lowest validation loss at the end of each task: Some true / Some
      /// false, or None for the run's default (`RunControl.BestValidation`).
      BestValidation: bool option }

    /// The default loop without hooks (identity data, no joint training).
    static member plain : StrategyRun =
        { BeginTask = (fun _ -> StepHooks())
          EndTask = ignore
          Dispose = ignore
          TrainExamples = (fun _ xs -> xs)
          AfterFit = ignore
          Joint = false
          SaveState = ignore
          LoadState = ignore
          WriteOutputs = ignore
          Interleave = (fun _ -> None)
          BestValidation = None }

/// A continual-learning strategy: the default training loop plus hooks. `Start` prepares a fresh
/// model (e.g. adds LoRA) and returns the per-task hooks.
type Strategy = { Name: string; Start: ILanguageModel -> StrategyRun }
