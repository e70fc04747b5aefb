namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Checkpoints
open Klf.Formats

/// One strategy's outcome on one sequence and seed.
type StrategyOutcome = { Name: string; Matrix: AccuracyMatrix; Summary: MetricSummary }

/// Every outcome of one sequence and seed: the strategies' matrices and metrics (FWT from the
/// single-task scores when every task has one).
type SeedOutcome =
    { Sequence: string
      Seed: int
      Tasks: string list
      /// ã_i, when every single-task run of the sequence and seed is finished.
      Single: float[] option
      /// Each task's score before any training, when the zero-shot run is finished.
      ZeroShot: float[] option
      /// Each task's metric and labels, when the runs recorded them ([] otherwise).
      Facts: TaskFacts list
      Strategies: StrategyOutcome list }

/// Mean and sample standard deviation over seeds (std 0 for one seed).
type MeanStd = { Mean: float; Std: float }

/// One strategy over the seeds of a sequence.
type StrategyAggregate =
    { Name: string
      Seeds: int list
      /// Element-wise mean of the seeds' matrices.
      MeanMatrix: AccuracyMatrix
      AP: MeanStd
      FRa: MeanStd
      /// None when some seed has no FWT.
      FWT: MeanStd option
      BWT: MeanStd }

/// Grouping finished runs into per-seed outcomes and per-sequence aggregates, and the
/// `metrics.json` contract of `klf run`.
[<RequireQualifiedAccess>]
module Results =
    // Registered strategies in registry order (a label `kif(top=0.3)` ranks with `kif`), then the rest.
    let private strategyRank (label: string) =
        let name = match label.IndexOf '(' with -1 -> label | i -> label.Substring(0, i)
        match List.tryFindIndex ((=) name) (Strategy.names ()) with Some i -> i | None -> Int32.MaxValue

    /// Per sequence and seed, the strategies (in `Strategy.names ()` order, then by label) with their
    /// metrics. Seeds with no finished strategy run are left out.
    let bySeed (results: RunResult list) : SeedOutcome list =
        results
        |> List.groupBy (fun r -> r.Sequence, r.Seed)
        |> List.sortBy fst
        |> List.choose (fun ((sequence, seed), rs) ->
            let strategies = rs |> List.choose (fun r -> match r.Kind with StrategyRun s -> Some(s, r) | _ -> None)
            match strategies with
            | [] -> None
            | (_, first) :: _ ->
                let tasks = first.Tasks
                let singles = rs |> List.choose (fun r -> match r.Kind with SingleTask j -> Some(j, r.Rows[0][0]) | _ -> None) |> Map.ofList
                let single = if List.forall (fun j -> singles.ContainsKey j) [ 0 .. tasks.Length - 1 ] then Some(Array.init tasks.Length (fun j -> singles[j])) else None
                let zeroShot = rs |> List.tryPick (fun r -> match r.Kind with ZeroShot when r.Tasks = tasks -> Some r.Rows[0] | _ -> None)
                let outcomes =
                    strategies
                    |> List.sortBy (fun (s, _) -> strategyRank s, s)
                    |> List.map (fun (s, r) ->
                        if r.Tasks <> tasks then raise (InvalidDataException $"sequence {sequence} seed {seed}: runs disagree on the task order")
                        let m = Metrics.ofRows r.Rows
                        { Name = s; Matrix = m; Summary = Metrics.summary single m } : StrategyOutcome)
                let facts = rs |> List.tryPick (fun r -> if r.Facts.Length = tasks.Length && r.Tasks = tasks then Some r.Facts else None) |> Option.defaultValue []
                Some { Sequence = sequence; Seed = seed; Tasks = tasks; Single = single; ZeroShot = zeroShot; Facts = facts; Strategies = outcomes })

    /// Mean and sample standard deviation (n − 1; 0 for a single value).
    let meanStd (xs: float list) : MeanStd =
        let n = float xs.Length
        let mean = List.average xs
        let std = if xs.Length < 2 then 0.0 else sqrt ((xs |> List.sumBy (fun x -> (x - mean) ** 2.0)) / (n - 1.0))
        { Mean = mean; Std = std }

    /// Per sequence, each strategy over its seeds (the seeds where it finished).
    let aggregate (seeds: SeedOutcome list) : (string * string list * StrategyAggregate list) list =
        seeds
        |> List.groupBy (fun s -> s.Sequence)
        |> List.map (fun (sequence, outcomes) ->
            let tasks = outcomes.Head.Tasks
            let names = outcomes |> List.collect (fun o -> o.Strategies |> List.map (fun s -> s.Name)) |> List.distinct |> List.sortBy (fun s -> strategyRank s, s)
            let aggregates =
                [ for name in names ->
                    let per = outcomes |> List.choose (fun o -> o.Strategies |> List.tryFind (fun s -> s.Name = name) |> Option.map (fun s -> o.Seed, s))
                    let t = tasks.Length
                    let mean = Array2D.init t t (fun j i -> if i > j then nan else per |> List.averageBy (fun (_, s) -> s.Matrix[j, i]))
                    let fwts = per |> List.map (fun (_, s) -> s.Summary.FWT)
                    { Name = name
                      Seeds = per |> List.map fst
                      MeanMatrix = AccuracyMatrix.OfArray2D mean
                      AP = meanStd [ for _, s in per -> s.Summary.AP ]
                      FRa = meanStd [ for _, s in per -> s.Summary.FRa ]
                      FWT = (if List.forall Option.isSome fwts then Some(meanStd (List.map Option.get fwts)) else None)
                      BWT = meanStd [ for _, s in per -> s.Summary.BWT ] } ]
            sequence, tasks, aggregates)

    let private num (x: float) : JsonNode = if Double.IsNaN x then null else JsonValue.Create x
    let private matrixJson (m: AccuracyMatrix) = RunState.rowsToJson (m.ToRows())

    let private strategyJson (matrix: AccuracyMatrix) (s: MetricSummary) =
        let o = JsonObject()
        o["matrix"] <- matrixJson matrix
        o["AP"] <- num s.AP
        o["FRa"] <- num s.FRa
        o["FWT"] <- (match s.FWT with Some f -> num f | None -> null)
        o["BWT"] <- num s.BWT
        o

    let private addFacts (j: JsonObject) (facts: TaskFacts list) =
        if not facts.IsEmpty then
            j["task-facts"] <- JsonArray([| for f in facts -> RunRecords.factsJson f :> JsonNode |])
            j["chance"] <- (match TaskFacts.streamChance facts with Some c -> num c | None -> null)

    /// Per-task scores (one per task, in order) under `key`, when there are some.
    let private addScores (j: JsonObject) (key: string) (scores: float[] option) =
        match scores with
        | Some xs -> j[key] <- JsonArray([| for x in xs -> num x |])
        | None -> ()

    /// Element-wise means of the seeds' per-task scores (`o.Single`, `o.ZeroShot`), when every seed has them.
    let meanScores (pick: SeedOutcome -> float[] option) (seeds: SeedOutcome list) : float[] option =
        let all = seeds |> List.map pick
        if seeds.IsEmpty || List.exists Option.isNone all then None
        else
            let xs = all |> List.map Option.get
            Some(Array.init xs.Head.Length (fun i -> xs |> List.averageBy (fun a -> a[i])))

    /// The `metrics.json` of one sequence: with one seed the contract
    /// `{ "tasks", "seed", "strategies": { name: { "matrix", "AP", "FRa", "FWT", "BWT" } } }` (percent;
    /// FWT null without single-task runs), plus, when the runs recorded them, `task-facts` (per task:
    /// task, metric, labels, chance) and `chance` (the stream's average chance level, null when a
    /// task has none), and per task in order `single-task` (ã_i, with the single-task runs) and `zero-shot`
    /// (the starting model's scores, with the zero-shot run). With several seeds the same fields hold the means over seeds
    /// (`seed` is the first seed), plus `seeds`, per strategy `std` (sample standard deviations) and
    /// `seeds`, and `per-seed` with each seed's contract object.
    let metricsJson (seeds: SeedOutcome list) : JsonObject =
        match seeds with
        | [] -> invalidArg "seeds" "no finished strategy runs"
        | first :: _ ->
            if seeds |> List.exists (fun s -> s.Sequence <> first.Sequence) then invalidArg "seeds" "metricsJson takes one sequence"
            let single (o: SeedOutcome) =
                let j = JsonObject()
                j["tasks"] <- JsonArray([| for t in o.Tasks -> JsonValue.Create t :> JsonNode |])
                j["seed"] <- JsonValue.Create o.Seed
                addFacts j o.Facts
                addScores j "single-task" o.Single
                addScores j "zero-shot" o.ZeroShot
                let st = JsonObject()
                for s in o.Strategies do st[s.Name] <- strategyJson s.Matrix s.Summary
                j["strategies"] <- st
                j
            match seeds with
            | [ one ] -> single one
            | _ ->
                let j = JsonObject()
                j["tasks"] <- JsonArray([| for t in first.Tasks -> JsonValue.Create t :> JsonNode |])
                j["seed"] <- JsonValue.Create first.Seed
                addFacts j first.Facts
                addScores j "single-task" (meanScores (fun o -> o.Single) seeds)
                addScores j "zero-shot" (meanScores (fun o -> o.ZeroShot) seeds)
                j["seeds"] <- JsonArray([| for s in seeds -> JsonValue.Create s.Seed :> JsonNode |])
                let st = JsonObject()
                for _, _, aggs in aggregate seeds do
                    for a in aggs do
                        let o = strategyJson a.MeanMatrix { AP = a.AP.Mean; FRa = a.FRa.Mean; FWT = a.FWT |> Option.map (fun f -> f.Mean); BWT = a.BWT.Mean }
                        let std = JsonObject()
                        std["AP"] <- num a.AP.Std
                        std["FRa"] <- num a.FRa.Std
                        std["FWT"] <- (match a.FWT with Some f -> num f.Std | None -> null)
                        std["BWT"] <- num a.BWT.Std
                        o["std"] <- std
                        o["seeds"] <- JsonArray([| for s in a.Seeds -> JsonValue.Create s :> JsonNode |])
                        st[a.Name] <- o
                j["strategies"] <- st
                let per = JsonObject()
                for s in seeds do per[string s.Seed] <- single s
                j["per-seed"] <- per
                j

    /// Writes `metricsJson` to a file atomically.
    let writeMetrics (path: string) (seeds: SeedOutcome list) =
        AtomicFile.WriteAllText(path, (metricsJson seeds).ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
