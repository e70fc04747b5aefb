namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Formats

/// What one run of an experiment computes.
type RunKind =
    /// A strategy over the whole sequence.
    | StrategyRun of strategy: string
    /// Task j (0-based) of the sequence alone, for FWT (plain fine-tuning).
    | SingleTask of task: int
    /// The starting model scored on every task before any training.
    | ZeroShot

/// One run of an experiment: a sequence, a seed and what to run; `Id` is its folder under the
/// experiment's output, `runs/<sequence>/seed-<s>/<strategy or single-NN-task>`.
type RunSpec = { Sequence: string; Seed: int; Kind: RunKind; Id: string }

/// The stored outcome of a finished run (its `result.json`). For a single-task run, `Tasks` holds
/// that task and `Rows` the one score; for the zero-shot run, `Rows` is one row of every task's score.
type RunResult =
    { Sequence: string
      Seed: int
      Kind: RunKind
      /// a_{j,i} rows in percent (NaN above the diagonal).
      Rows: float[][]
      Tasks: string list
      /// The metric and number of labels of each task of Tasks ([] in results written before they were recorded).
      Facts: TaskFacts list }

/// The stored outcome of each run of an experiment: `result.json` written and read back, the task
/// facts in it, and every finished run of one or many output folders.
[<RequireQualifiedAccess>]
module RunRecords =
    /// File of a finished run's rows.
    [<Literal>]
    let ResultFile = "result.json"

    /// A run kind as the JSON fields of its manifest and result: `strategy`, `single-task` or `zero-shot`.
    let kindJson (kind: RunKind) =
        let o = JsonObject()
        match kind with
        | StrategyRun s -> o["strategy"] <- JsonValue.Create s
        | SingleTask j -> o["single-task"] <- JsonValue.Create j
        | ZeroShot -> o["zero-shot"] <- JsonValue.Create true
        o

    /// One task's facts as JSON: `{ "task", "metric", "labels" (null for generation), "chance" (percent or null) }`.
    let factsJson (f: TaskFacts) : JsonObject =
        let o = JsonObject()
        o["task"] <- JsonValue.Create f.Name
        o["metric"] <- JsonValue.Create f.Metric
        o["labels"] <- (match f.Labels with Some n -> JsonValue.Create n :> JsonNode | None -> null)
        o["chance"] <- (match TaskFacts.chance f with Some c -> JsonValue.Create c :> JsonNode | None -> null)
        o

    /// The task facts of a `task-facts` array (of result.json or metrics.json); [] for null. A malformed
    /// entry names the file.
    let factsOfJson (path: string) (node: JsonNode) : TaskFacts list =
        match node with
        | null -> []
        | :? JsonArray as a ->
            [ for f in a ->
                match f with
                | :? JsonObject as o when not (isNull o["task"]) && not (isNull o["metric"]) ->
                    { Name = o["task"].GetValue<string>(); Metric = o["metric"].GetValue<string>()
                      Labels = (match o["labels"] with null -> None | n -> Some(n.GetValue<int>())) }
                | _ -> raise (InvalidDataException($"{path}: each entry of \"task-facts\" needs a task and a metric")) ]
        | _ -> raise (InvalidDataException($"{path}: \"task-facts\" must be an array"))

    /// Writes a finished run's `result.json`, atomically.
    let write (path: string) (r: RunResult) =
        let o = kindJson r.Kind
        o["sequence"] <- JsonValue.Create r.Sequence
        o["seed"] <- JsonValue.Create r.Seed
        o["tasks"] <- JsonArray([| for t in r.Tasks -> JsonValue.Create t :> JsonNode |])
        o["rows"] <- RunState.rowsToJson r.Rows
        o["task-facts"] <- JsonArray([| for f in r.Facts -> factsJson f :> JsonNode |])
        AtomicFile.WriteAllText(path, o.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))

    /// Reads a run's `result.json`; errors name the file.
    let read (path: string) : RunResult =
        let bad what = raise (InvalidDataException($"{path}: {what}"))
        let json =
            try JsonNode.Parse(File.ReadAllText path)
            with :? Text.Json.JsonException as e -> bad $"not valid JSON ({e.Message})"
        let kind =
            match json["strategy"], json["single-task"], json["zero-shot"] with
            | null, null, null -> bad "neither strategy, single-task nor zero-shot"
            | null, null, _ -> ZeroShot
            | s, null, _ when not (isNull s) -> StrategyRun(s.GetValue<string>())
            | _, j, _ -> SingleTask(j.GetValue<int>())
        let tasks = match json["tasks"] with :? JsonArray as a -> [ for t in a -> t.GetValue<string>() ] | _ -> bad "no tasks"
        let rows = match json["rows"] with :? JsonArray as a -> RunState.rowsOfJson a | _ -> bad "no rows"
        let facts = factsOfJson path json["task-facts"]
        { Sequence = (match json["sequence"] with null -> bad "no sequence" | s -> s.GetValue<string>())
          Seed = (match json["seed"] with null -> bad "no seed" | s -> s.GetValue<int>())
          Kind = kind; Rows = rows; Tasks = tasks; Facts = facts }

    /// Every finished run under the given output folders (their `runs/**/result.json`), in a stable
    /// order. A run present in several folders must have the same rows, else an error names both.
    let collect (dirs: string list) : RunResult list =
        let found = Collections.Generic.Dictionary<string, string * RunResult>()
        for dir in dirs do
            let runsDir = Path.Combine(dir, "runs")
            if Directory.Exists runsDir then
                for path in Directory.GetFiles(runsDir, ResultFile, SearchOption.AllDirectories) |> Array.sort do
                    let r = read path
                    let key = $"{r.Sequence}\u0000{r.Seed}\u0000{r.Kind}"
                    match found.TryGetValue key with
                    | true, (other, prev) ->
                        let same = prev.Rows.Length = r.Rows.Length && Array.forall2 (fun (a: float[]) (b: float[]) -> a.Length = b.Length && Array.forall2 (fun (x: float) y -> x = y || (Double.IsNaN x && Double.IsNaN y)) a b) prev.Rows r.Rows
                        if not same then raise (InvalidDataException $"{path} and {other} hold different results for the same run")
                    | _ -> found[key] <- (path, r)
        found.Values |> Seq.map snd |> Seq.sortBy (fun r -> r.Sequence, r.Seed, (match r.Kind with ZeroShot -> 0, 0, "" | SingleTask j -> 1, j, "" | StrategyRun s -> 2, 0, s)) |> List.ofSeq
