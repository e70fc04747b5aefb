namespace Klf.Pipelines

open System
open System.IO
open System.Text
open System.Text.Json

/// An ordered sequence of tasks, learned one after another, with a name (e.g. "standard/order1").
type TaskSequence = { Name: string; Tasks: TaskData list }

/// Building and transforming task sequences (curried, data-last):
/// `TaskSequence.ofOrder root orders "standard" "order1" |> TaskSequence.subsample 1 sizes |> TaskSequence.take 2`.
[<RequireQualifiedAccess>]
module TaskSequence =

    /// A sequence of the given tasks.
    let create (name: string) (tasks: TaskData list) : TaskSequence = { Name = name; Tasks = tasks }

    /// Loads the tasks of a named order from `root` (the folder holding `{train,test}/<task>.json`),
    /// e.g. `ofOrder ".../long_sequence" orders "standard" "order1"`; named "<benchmark>/<order>".
    let ofOrder (root: string) (orders: Map<string, Map<string, string list>>) (benchmark: string) (orderName: string) : TaskSequence =
        let names = Orders.get benchmark orderName orders
        create $"{benchmark}/{orderName}" (names |> List.map (Task.load root))

    /// The task names, in order.
    let names (sequence: TaskSequence) : string list = sequence.Tasks |> List.map (fun t -> t.Name)

    /// The number of tasks.
    let length (sequence: TaskSequence) : int = sequence.Tasks.Length

    /// The tasks in the given order. The names must be distinct and each must be in the sequence
    /// (a subset selects those tasks); unknown names fail with a message listing the known ones.
    let order (names: string list) (sequence: TaskSequence) : TaskSequence =
        match names |> List.countBy id |> List.filter (fun (_, c) -> c > 1) with
        | (dup, _) :: _ -> invalidArg "names" $"task \"{dup}\" is named more than once in the order"
        | [] -> ()
        let byName = sequence.Tasks |> List.map (fun t -> t.Name, t) |> Map
        let find n =
            match Map.tryFind n byName with
            | Some t -> t
            | None ->
                let known = String.Join(", ", sequence.Tasks |> List.map (fun t -> t.Name))
                invalidArg "names" $"unknown task \"{n}\" in sequence \"{sequence.Name}\"; known tasks: {known}"
        { sequence with Tasks = names |> List.map find }

    /// The first n tasks (all of them when there are fewer).
    let take (n: int) (sequence: TaskSequence) : TaskSequence =
        if n < 0 then invalidArg "n" $"take needs n >= 0, got {n}"
        { sequence with Tasks = List.truncate n sequence.Tasks }

    /// Subsamples every task (see `Task.subsample`; each task draws its own stream).
    let subsample (seed: int) (sizes: SubsampleSizes) (sequence: TaskSequence) : TaskSequence =
        { sequence with Tasks = sequence.Tasks |> List.map (Task.subsample seed sizes) }

    /// Holds out n train examples of every task for validation (see `Task.withValidation`).
    let withValidation (seed: int) (n: int) (sequence: TaskSequence) : TaskSequence =
        { sequence with Tasks = sequence.Tasks |> List.map (Task.withValidation seed n) }

    /// Applies f to every task.
    let map (f: TaskData -> TaskData) (sequence: TaskSequence) : TaskSequence =
        { sequence with Tasks = List.map f sequence.Tasks }

    /// The tasks of a, then those of b; named "<a>+<b>".
    let concat (a: TaskSequence) (b: TaskSequence) : TaskSequence =
        { Name = a.Name + "+" + b.Name; Tasks = a.Tasks @ b.Tasks }

    /// Renames the sequence.
    let rename (name: string) (sequence: TaskSequence) : TaskSequence = { sequence with Name = name }
