namespace Klf.Pipelines

open System
open System.IO
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif
open TorchSharp

/// The replay memory (of Replay, KIF + replay and Recurrent-KIF), `attach` to add it to any run, and
/// the Replay strategy.
[<RequireQualifiedAccess>]
module Replay =
    /// Reference memory size: 2 % of each earlier task's training set.
    [<Literal>]
    let DefaultFraction = 0.02

    /// Reference seed of the memory sampling (fixed, independent of the training seed).
    [<Literal>]
    let DefaultSeed = 42

    /// Memory size for a training set of n examples: round(fraction · n) (halves away from zero),
    /// at least 1 when n ≥ 1.
    let size (fraction: float) (n: int) : int =
        if n <= 0 then 0 else max 1 (int (Math.Round(fraction * float n, MidpointRounding.AwayFromZero)))

    /// The memory of one task: `size fraction |Train|` training examples, label-balanced (the
    /// examples are grouped by their trimmed output; labels take turns, in a seeded order, each
    /// contributing its seeded-shuffled examples, so label counts differ by at most one while a
    /// label has examples left) and seeded: the same seed and task give the same memory. The
    /// random stream derives from the seed and the task name (`Task.streamSeed ... "replay"`).
    let memory (seed: int) (fraction: float) (task: TaskData) : Example[] =
        let n = size fraction task.Train.Length
        if n = 0 then [||]
        else
            let rng = Random(Task.streamSeed seed task.Name "replay")
            let groups =
                task.Train
                |> Array.groupBy (fun e -> e.Output.Trim())
                |> Array.sortBy fst
                |> Array.map (fun (_, xs) -> let a = Array.copy xs in rng.Shuffle a; a)
            rng.Shuffle groups
            let picked = ResizeArray<Example>(n)
            let mutable k = 0
            while picked.Count < n do
                for g in groups do
                    if picked.Count < n && k < g.Length then picked.Add g[k]
                k <- k + 1
            picked.ToArray()

    /// File name of the saved memories in a run's task state.
    [<Literal>]
    let StateFile = "replay-memory.json"

    /// Writes the memories (one array per earlier task, in order) as JSON, atomically; an example's
    /// choices are kept with it.
    let save (path: string) (memories: Example[] list) : unit =
        let arr = Text.Json.Nodes.JsonArray()
        for m in memories do
            let task = Text.Json.Nodes.JsonArray()
            for e in m do
                let o = Text.Json.Nodes.JsonObject()
                o["id"] <- Text.Json.Nodes.JsonValue.Create e.Id
                o["input"] <- Text.Json.Nodes.JsonValue.Create e.Input
                o["output"] <- Text.Json.Nodes.JsonValue.Create e.Output
                if e.Choices.Length > 0 then
                    o["choices"] <- Text.Json.Nodes.JsonArray([| for c in e.Choices -> Text.Json.Nodes.JsonValue.Create c :> Text.Json.Nodes.JsonNode |])
                task.Add o
            arr.Add task
        Klf.Formats.AtomicFile.WriteAllText(path, arr.ToJsonString())

    /// Reads memories written by `save`; a missing or malformed file is an error naming it.
    let load (path: string) : Example[] list =
        if not (IO.File.Exists path) then raise (IO.FileNotFoundException($"no replay memory at {path}", path))
        try
            let arr = Text.Json.Nodes.JsonNode.Parse(IO.File.ReadAllText path).AsArray()
            [ for task in arr ->
                [| for e in task.AsArray() ->
                    { Id = e["id"].GetValue<string>(); Input = e["input"].GetValue<string>(); Output = e["output"].GetValue<string>()
                      Choices = match e["choices"] with null -> [||] | c -> [| for x in c.AsArray() -> x.GetValue<string>() |] } |] ]
        with
        | :? Text.Json.JsonException
        | :? InvalidOperationException
        | :? NullReferenceException as e -> raise (IO.InvalidDataException($"{path}: not a replay memory file ({e.Message})"))

    /// Adds a replay memory to a run: after each task its memory (`memory seed fraction`)
    /// is kept; each later task trains on its own examples followed by every earlier task's memory
    /// (the trainer's bucketed sampler mixes them into the batches).
    let attach (seed: int) (fraction: float) (run: StrategyRun) : StrategyRun =
        let memories = ResizeArray<Example[]>()
        { run with
            TrainExamples = fun t xs -> Array.append (run.TrainExamples t xs) (Array.concat memories)
            EndTask = fun t -> run.EndTask t; memories.Add(memory seed fraction t)
            SaveState = fun dir -> run.SaveState dir; save (Path.Combine(dir, StateFile)) (List.ofSeq memories)
            LoadState = fun dir ->
                run.LoadState dir
                memories.Clear()
                memories.AddRange(load (Path.Combine(dir, StateFile))) }

    /// Replay: full fine-tuning with a memory of `fraction` of each earlier task (≥ 1, label-balanced, seeded).
    let replayWith (seed: int) (fraction: float) : Strategy =
        { Name = "replay"; Start = fun _ -> attach seed fraction StrategyRun.plain }

    /// Replay with the reference memory (2 %, seed 42).
    let replay : Strategy = replayWith DefaultSeed DefaultFraction
