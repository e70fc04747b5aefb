namespace Klf.Pipelines

open System
open System.IO
open System.Text
open System.Text.Json

/// What a report states about a task besides its scores: its metric and, for a classification
/// task, its number of labels (its chance level is 1 / labels).
type TaskFacts =
    { Name: string
      /// "exact-match" or "rouge-l".
      Metric: string
      /// The number of distinct labels of a classification task; None for a generation task.
      Labels: int option }

/// Facts of tasks and the chance levels they imply.
[<RequireQualifiedAccess>]
module TaskFacts =

    /// At most this many distinct answers make an exact-match task a classification task.
    [<Literal>]
    let MaxLabels = Task.MaxLabels

    /// The facts of a task: its metric, and for an exact-match task whose answers (trimmed and
    /// lower-cased, as exact match compares them, over every split) take at most MaxLabels distinct
    /// values, that number of labels. Take them from the whole task, before subsampling.
    let ofTask (task: TaskData) : TaskFacts =
        let labels =
            if task.Metric <> Benchmark.DefaultMetric then None
            else
                let n =
                    Seq.concat [ task.Train; task.Validation; task.Test ]
                    |> Seq.map (fun e -> (if isNull e.Output then "" else e.Output).Trim().ToLowerInvariant())
                    |> Seq.distinct |> Seq.length
                if n >= 1 && n <= MaxLabels then Some n else None
        { Name = task.Name; Metric = task.Metric; Labels = labels }

    /// The chance level in percent of a classification task (100 / labels: always answering one label
    /// of a balanced test set); None for a generation task.
    let chance (facts: TaskFacts) : float option = facts.Labels |> Option.map (fun n -> 100.0 / float n)

    /// The stream's average chance level (the AP of guessing): the mean of the tasks' chance levels,
    /// when every task has one.
    let streamChance (facts: TaskFacts list) : float option =
        let cs = facts |> List.map chance
        if facts.IsEmpty || List.exists Option.isNone cs then None else Some(cs |> List.averageBy Option.get)
