/// The outputs of an experiment's finished runs: per sequence `metrics.json` (the contract),
/// `report.md` and the PNG plots, written by `klf run` and `klf report` and by scripts through the
/// same functions; reading a `metrics.json` back; merging run folders (shards, seeds).
module Klf.Reports.RunReport

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Pipelines

/// The folder of a sequence's outputs: `outDir` itself when the results hold one sequence, else
/// `outDir/<sequence>` (e.g. `standard-order1`).
let sequenceDir (outDir: string) (sequences: string list) (sequence: string) =
    if sequences.Length = 1 then outDir else Path.Combine(outDir, Experiment.slug sequence)

let private inv (x: float) = x.ToString("F1", Globalization.CultureInfo.InvariantCulture)

/// "mean ± std" with one decimal (just the mean for one seed).
let meanStd (seeds: int) (m: MeanStd) = if seeds > 1 then $"{inv m.Mean} ± {inv m.Std}" else inv m.Mean

/// The settings table of a report: what an experiment ran with.
let settings (spec: ExperimentSpec) : (string * string) list =
    let inv (x: float) = x.ToString(Globalization.CultureInfo.InvariantCulture)
    [ "strategies", String.Join(", ", ExperimentSpec.labels spec)
      "model", (match spec.Model with Folder m -> m | Preset p -> "preset " + p + " (random init)")
      "train / validation / test examples per task", $"{spec.TrainExamples} / {spec.ValidationExamples} / {spec.TestExamples}"
      "best-validation", (if spec.ValidationExamples > 0 then $"on unless a strategy sets it off; validation loss every {spec.EvalEvery} steps" else "off (no validation examples)")
      "steps per task, batch", $"{spec.Steps}, {spec.BatchSize}"
      "learning rate, warm-up", $"{inv spec.LearningRate}, {spec.WarmupSteps}"
      "weight decay", $"{inv spec.WeightDecay} on {ExperimentSpec.decayName spec.DecayOn} parameters"
      "max length, prompt truncation", $"{spec.MaxLength}, drop {Klf.Training.PromptCut.Name spec.Truncation}"
      "single-task runs (FWT)", (if spec.SingleTask then "yes" else "no") ]

/// A file a strategy's run of one seed wrote, from the first of `runDirs` that holds it.
let private runFile (runDirs: string list) (sequence: string) (seed: int) (strategy: string) (file: string) : string option =
    runDirs
    |> List.map (fun d -> Path.Combine(d, "runs", Experiment.slug sequence, $"seed-{seed}", StrategySpec.folderName strategy, file))
    |> List.tryFind File.Exists

/// The importance per layer of a strategy on a sequence: the `importance-layers.json` its runs
/// wrote (KIF strategies), averaged over the seeds that have one; None when no run has one.
let layerImportance (runDirs: string list) (sequence: string) (seeds: int list) (strategy: string) : LayerImportance option =
    let found =
        seeds |> List.choose (fun s -> runFile runDirs sequence s strategy Kif.LayerImportanceFile) |> List.map Kif.loadLayerImportance
    match found with
    | [] -> None
    | first :: _ ->
        let same = found |> List.filter (fun li -> li.Layers = first.Layers && li.Tasks = first.Tasks)
        let n = float same.Length
        let mean (pick: LayerImportance -> float[]) = Array.init (pick first).Length (fun i -> same |> List.sumBy (fun li -> (pick li)[i]) |> fun x -> x / n)
        Some { first with
                Scores = Array.init first.Scores.Length (fun t -> mean (fun li -> li.Scores[t]))
                Accumulated = mean (fun li -> li.Accumulated) }

/// Writes, per sequence of `outcomes`, metrics.json, report.md and the plots (each file atomically);
/// `settings` go into every report; importance per layer and training curves are read from the runs
/// under `runDirs`. Returns the metrics.json paths.
let write (outDir: string) (runDirs: string list) (settings: (string * string) list) (outcomes: SeedOutcome list) : string list =
    SkiaNative.ensure ()
    let sequences = outcomes |> List.map (fun o -> o.Sequence) |> List.distinct
    [ for sequence, tasks, aggregates in Results.aggregate outcomes ->
        let dir = sequenceDir outDir sequences sequence
        Directory.CreateDirectory dir |> ignore
        let mine = outcomes |> List.filter (fun o -> o.Sequence = sequence)
        let metrics = Path.Combine(dir, "metrics.json")
        Results.writeMetrics metrics mine
        let seeds = mine |> List.map (fun o -> o.Seed)
        let seedText = String.Join(", ", seeds)
        let extra =
            [ "sequence", sequence + ": " + String.Join(" -> ", tasks)
              "seeds", (if seeds.Length > 1 then $"{seedText} (matrices and metrics are means over seeds; metrics.json has the standard deviations)" else seedText) ]
        let results =
            [ for a in aggregates ->
                ({ Name = a.Name
                   Matrix = a.MeanMatrix
                   Summary = { AP = a.AP.Mean; FRa = a.FRa.Mean; FWT = a.FWT |> Option.map (fun f -> f.Mean); BWT = a.BWT.Mean } } : Markdown.StrategyResult) ]
        let importance = [ for a in aggregates do match layerImportance runDirs sequence a.Seeds a.Name with Some li -> yield a.Name, li | None -> () ]
        let facts = mine |> List.tryPick (fun o -> if o.Facts.IsEmpty then None else Some o.Facts) |> Option.defaultValue []
        // The first seed's curves of each strategy, linked by their path relative to the report.
        let curves =
            [ for a in aggregates do
                match a.Seeds |> List.tryPick (fun s -> runFile runDirs sequence s a.Name TrainingCurves.FileName) with
                | Some p -> yield a.Name, Path.GetRelativePath(dir, p).Replace('\\', '/'), TrainingCurves.load p
                | None -> () ]
        let taskScores =
            [ match Results.meanScores (fun o -> o.ZeroShot) mine with Some z -> yield Markdown.ZeroShotColumn, z | None -> ()
              match Results.meanScores (fun o -> o.Single) mine with Some st -> yield Markdown.SingleTaskColumn, st | None -> () ]
        Markdown.writeWith taskScores dir (extra @ settings) tasks facts results importance curves |> ignore
        metrics ]

/// What a metrics.json holds: the tasks, the seed (None when several were merged), each task's facts
/// ([] when the file has none) and each strategy's results.
type MetricsFile =
    { Tasks: string list
      Seed: int option
      Facts: TaskFacts list
      /// Per-task score columns the file holds (zero-shot, single-task), in `Markdown.renderWith`'s form.
      TaskScores: (string * float[]) list
      Results: Markdown.StrategyResult list }

/// Reads a metrics.json written by `write`. A missing file, invalid JSON or another shape is an error
/// naming the file.
let readMetrics (path: string) : MetricsFile =
    if not (File.Exists path) then raise (FileNotFoundException($"no metrics.json at {path}: run `klf run --out DIR` first", path))
    let json =
        try JsonNode.Parse(File.ReadAllText path)
        with :? Text.Json.JsonException as e -> raise (InvalidDataException($"{path} is not valid JSON: {e.Message}"))
    let bad what = raise (InvalidDataException($"{path}: {what} (expected the shape `klf run` writes)"))
    let num (n: JsonNode) = if isNull n then nan else n.GetValue<float>()
    let tasks = match json["tasks"] with :? JsonArray as a -> [ for t in a -> t.GetValue<string>() ] | _ -> bad "no \"tasks\" array"
    let seed = match json["seed"] with null -> None | n -> Some(n.GetValue<int>())
    let strategies = match json["strategies"] with :? JsonObject as o -> o | _ -> bad "no \"strategies\" object"
    let results : Markdown.StrategyResult list =
        [ for KeyValue(name, node) in strategies ->
            let rows = match node["matrix"] with :? JsonArray as a -> [| for r in a -> [| for x in r.AsArray() -> num x |] |] | _ -> bad $"strategy {name} has no matrix"
            if rows.Length <> tasks.Length then bad $"strategy {name}: {rows.Length} matrix rows for {tasks.Length} tasks"
            let fwt = match node["FWT"] with null -> None | n -> Some(n.GetValue<float>())
            { Name = name
              Matrix = Metrics.ofRows rows
              Summary = { AP = num node["AP"]; FRa = num node["FRa"]; FWT = fwt; BWT = num node["BWT"] } } ]
    let scores (key: string) (column: string) =
        match json[key] with
        | :? JsonArray as a when a.Count = tasks.Length -> [ column, [| for x in a -> num x |] ]
        | null -> []
        | _ -> bad $"\"{key}\" must be an array of one score per task"
    { Tasks = tasks; Seed = seed; Facts = RunRecords.factsOfJson path json["task-facts"]
      TaskScores = scores "zero-shot" Markdown.ZeroShotColumn @ scores "single-task" Markdown.SingleTaskColumn
      Results = results }

/// Rewrites report.md and the plots of a folder that holds only a metrics.json (the other run
/// settings are not recorded there). Returns the files written, report.md first.
let regenerate (dir: string) : string list =
    let m = readMetrics (Path.Combine(dir, "metrics.json"))
    let settings =
        [ "sequence", String.Join(" -> ", m.Tasks)
          "seed", (match m.Seed with Some s -> string s | None -> "-")
          "source", "metrics.json (regenerated by klf report; the other run settings are not recorded there)" ]
    SkiaNative.ensure ()
    Markdown.writeWith m.TaskScores dir settings m.Tasks m.Facts m.Results [] []

/// The experiment settings recorded in a run folder's experiment.json, if it has one.
let recordedSpec (dir: string) : ExperimentSpec option =
    let p = Path.Combine(dir, Experiment.ExperimentFile)
    if File.Exists p then
        let json =
            try JsonNode.Parse(File.ReadAllText p)
            with :? Text.Json.JsonException as e -> raise (InvalidDataException($"{p} is not valid JSON: {e.Message}"))
        Some(ExperimentSpec.ofJson p json["config"])
    else None

/// Merges the finished runs of run folders (shards of one experiment, other seeds) into `outDir`:
/// metrics.json with means and standard deviations over seeds, report.md and plots, with the first
/// folder's recorded settings. Returns the metrics.json paths; no finished strategy run is an error
/// naming the folders.
let merge (runDirs: string list) (outDir: string) : string list =
    let finished = RunRecords.collect runDirs
    let outcomes = Results.bySeed finished
    let folders = String.Join(", ", runDirs)
    if outcomes.IsEmpty then raise (InvalidDataException $"no finished strategy runs in {folders}")
    let settings =
        (match recordedSpec runDirs.Head with Some s -> settings s | None -> [])
        @ [ "merged from", folders + $" ({finished.Length} finished runs)" ]
    write outDir runDirs settings outcomes
