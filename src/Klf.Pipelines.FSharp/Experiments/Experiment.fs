namespace Klf.Pipelines

open System
open System.IO
open System.Reflection
open System.Text.Json.Nodes
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Checkpoints
open Klf.Formats
open TorchSharp

/// Callbacks of `Experiment.execute` and where it computes. Build with `{ ExperimentControl.none with ... }`.
type ExperimentControl =
    { /// A run starts: its spec, its task names and its planned optimizer steps.
      OnRunStart: RunSpec -> string list -> int -> unit
      /// A run resumes after this many completed tasks.
      OnResume: RunSpec -> int -> unit
      /// An optimizer step of a run (1 unit of the planned steps).
      OnStep: RunSpec -> unit
      /// A row of a run's matrix: task index, task name, scores.
      OnTask: RunSpec -> int -> string -> float[] -> unit
      /// A run finished (or was already finished: the bool is true when it was skipped).
      OnRunDone: RunSpec -> RunResult -> bool -> unit
      /// Keep every task's state folder, or only the latest.
      KeepAllStates: bool
      /// Where models are placed: "cpu", "cuda" or "cuda:N".
      Device: string }

    /// No callbacks, CPU, every state kept.
    static member none : ExperimentControl =
        { OnRunStart = (fun _ _ _ -> ())
          OnResume = (fun _ _ -> ())
          OnStep = ignore
          OnTask = (fun _ _ _ _ -> ())
          OnRunDone = (fun _ _ _ -> ())
          KeepAllStates = true
          Device = "cpu" }

/// Experiments as values: enumerate their runs, split them into shards, execute them into run
/// folders (resuming interrupted runs; the results they store: `RunRecords`, their provenance: `RunProvenance`).
[<RequireQualifiedAccess>]
module Experiment =
    /// File of a run's configuration and provenance.
    [<Literal>]
    let ManifestFile = "manifest.json"

    /// File of the experiment's specification and provenance at the output root.
    [<Literal>]
    let ExperimentFile = "experiment.json"

    /// A folder-name-safe form of a name ('/' and other symbols become '-').
    let slug (name: string) =
        String(name |> Seq.map (fun c -> if Char.IsAsciiLetterOrDigit c || c = '-' || c = '_' || c = '.' then c else '-') |> Array.ofSeq)

    let private kindName (kind: RunKind) (tasks: string list) =
        match kind with
        | StrategyRun s -> StrategySpec.folderName s
        | SingleTask j -> sprintf "single-%02d-%s" (j + 1) (slug tasks[j])
        | ZeroShot -> "zero-shot"

    /// The orders file of a spec: its `OrdersFile`, else the benchmark root's own `orders.json`, else
    /// the one beside it (`Orders.fileFor`, which says where it looked when neither exists).
    let ordersFile (spec: ExperimentSpec) (root: string) : string =
        match spec.OrdersFile with
        | Some f -> f
        | None -> Orders.fileFor root

    /// The task names of each sequence of the spec: its `Tasks` as one sequence "custom", else each
    /// of its orders, read from `ordersFile` (only then looked for).
    let sequenceTasks (root: string) (spec: ExperimentSpec) : (string * string list) list =
        if not spec.Tasks.IsEmpty then [ "custom", spec.Tasks ]
        else
            let file = ordersFile spec root
            [ for o in spec.Orders -> o, Orders.lookup file o ]

    /// Every run of the experiment in a fixed order: per sequence, per seed, the zero-shot run (when
    /// `ZeroShot`), the single-task runs (when `SingleTask`), then the strategies in the given order.
    let runs (sequences: (string * string list) list) (spec: ExperimentSpec) : RunSpec list =
        [ for name, tasks in sequences do
            for seed in spec.Seeds do
                let kinds =
                    [ if spec.ZeroShot then yield ZeroShot
                      if spec.SingleTask then for j in 0 .. tasks.Length - 1 -> SingleTask j
                      for s in spec.Strategies -> StrategyRun s.Label ]
                for k in kinds ->
                    { Sequence = name; Seed = seed; Kind = k
                      Id = Path.Combine("runs", slug name, $"seed-{seed}", kindName k tasks) } ]

    /// Parses a shard "i/n" (1 ≤ i ≤ n): the i-th of n slices.
    let parseShard (text: string) : int * int =
        let fail () = raise (ArgumentException $"shard \"{text}\" must read i/n with 1 <= i <= n, e.g. 2/8")
        match text.Split('/') with
        | [| a; b |] ->
            match Int32.TryParse a, Int32.TryParse b with
            | (true, i), (true, n) when n >= 1 && i >= 1 && i <= n -> i, n
            | _ -> fail ()
        | _ -> fail ()

    /// The i-th of n slices (1-based) of a run list: every run whose position k (0-based) has
    /// k mod n = i − 1. Round-robin keeps the slices balanced; the n slices partition the list.
    let shard (i: int, n: int) (runs: RunSpec list) : RunSpec list =
        runs |> List.indexed |> List.filter (fun (k, _) -> k % n = i - 1) |> List.map snd

    /// The benchmark root of a spec: its `Benchmark`, else the repository's Long Sequence benchmark
    /// found above the current folder or the program's folder (or via KLF_BENCHMARKS).
    let benchmarkRoot (spec: ExperimentSpec) : string =
        match spec.Benchmark with
        | Some b -> b
        | None -> Benchmark.defaultRoot ()

    /// The tokenizer folder of a spec: its `Tokenizer`, else the model folder.
    let tokenizerDir (spec: ExperimentSpec) : string =
        match spec.Tokenizer, spec.Model with
        | Some t, _ -> t
        | None, Folder m -> m
        | None, Preset p -> raise (ArgumentException $"preset {p} has no tokenizer: give a tokenizer folder")

    /// Whether the spec's model is an encoder-only one (a BERT sentence encoder), from its folder's
    /// `config.json` or its preset's name, without building it.
    let encoderOnly (spec: ExperimentSpec) : bool =
        match spec.Model with
        | Preset p -> Seq.contains p Klf.Models.Bert.BertConfig.PresetNames
        | Folder d ->
            let config = Path.Combine(d, "config.json")
            File.Exists config
            && (match Klf.Formats.StrictJson.ReadFile config with
                | :? JsonObject as o -> (match o["model_type"] with :? JsonValue as v -> v.ToJsonString() = "\"bert\"" | _ -> false)
                | _ -> false)

    /// A fresh model of the spec on a device: the folder's weights, or the preset initialised with `seed`.
    let makeModel (spec: ExperimentSpec) (tok: ITextTokenizer) (device: torch.Device) (seed: int) : ILanguageModel =
        match spec.Model with
        | Folder d -> ModelFolder.Load(d, device)
        | Preset p ->
            torch.manual_seed (int64 seed) |> ignore
            LanguageModels.FromPreset(p, Nullable tok.VocabSize, device)

    /// The trainer options of a run of the spec.
    let trainerOptions (spec: ExperimentSpec) (seed: int) : TrainerOptions =
        TrainerOptions(BatchSize = spec.BatchSize, MaxSteps = spec.Steps, Seed = seed, MaxLength = spec.MaxLength, Truncation = spec.Truncation,
                       Optimizer = OptimizerOptions(LearningRate = spec.LearningRate, WarmupSteps = spec.WarmupSteps,
                                                    WeightDecay = spec.WeightDecay, DecayOn = spec.DecayOn))

    /// The strategy spec of a label in the experiment.
    let strategySpec (spec: ExperimentSpec) (label: string) : StrategySpec =
        match spec.Strategies |> List.tryFind (fun s -> s.Label = label) with
        | Some s -> s
        | None -> raise (ArgumentException $"no strategy labelled \"{label}\" in the experiment")

    /// Checks the experiment's strategies before any work: each builds from its settings, labels are
    /// distinct, and best-validation set on explicitly needs validation examples.
    let checkStrategies (spec: ExperimentSpec) : unit =
        Strategy.checkLabels "experiment" spec.Strategies
        for s in spec.Strategies do
            Strategy.ofSpecIn "experiment" s |> ignore
            match s.Settings |> List.tryFind (fst >> (=) "best-validation") with
            | Some(_, Setting.Bool true) when spec.ValidationExamples = 0 ->
                raise (InvalidDataException $"strategy {s.Label}: best-validation needs validation examples, and validation-examples is 0")
            | _ -> ()

    let private json (o: JsonNode) = o.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true))

    /// Adds what the trainer did on task j to a run's manifest (atomically): `training[j]` = the
    /// task, its optimizer steps (and interleaved steps), every validation loss and the step whose
    /// weights were kept. Rewriting an entry is idempotent, so a resumed task overwrites its own.
    let private recordFit (path: string) (j: int) (task: string) (fit: FitResult) =
        let m = JsonNode.Parse(File.ReadAllText path).AsObject()
        let training = match m["training"] with :? JsonArray as a -> a | _ -> JsonArray()
        let entry = JsonObject()
        entry["task"] <- JsonValue.Create task
        entry["steps"] <- JsonValue.Create fit.Steps.Count
        if fit.InterleavedSteps > 0 then entry["interleaved-steps"] <- JsonValue.Create fit.InterleavedSteps
        let num (x: float) : JsonNode = if Double.IsFinite x then JsonValue.Create x else null
        if fit.Validation.Count > 0 then
            entry["validation"] <- JsonArray([| for p in fit.Validation -> JsonArray([| JsonValue.Create p.Step :> JsonNode; num p.Loss |]) :> JsonNode |])
        match fit.Kept with
        | null -> ()
        | k ->
            entry["kept-step"] <- JsonValue.Create k.Step
            entry["kept-validation-loss"] <- num k.Loss
        while training.Count <= j do training.Add(null)
        training[j] <- entry
        m["training"] <- training.DeepClone()
        AtomicFile.WriteAllText(path, json m)

    /// Refuses `spec` when `stored` (read from `path`) differs in a setting that defines results.
    let private refuseOther (path: string) (stored: ExperimentSpec) (spec: ExperimentSpec) =
        if (RunProvenance.runIdentity stored).ToJsonString() <> (RunProvenance.runIdentity spec).ToJsonString() then
            let diff = String.Join("; ", ExperimentSpec.differences stored spec |> List.filter (fun d -> not (d.StartsWith "strategies" || d.StartsWith "seeds" || d.StartsWith "orders" || d.StartsWith "fwt")))
            raise (InvalidOperationException $"{path}: this run folder was started with other settings ({diff}); use the same settings to resume, or another output folder")

    /// Refuses `spec` when the folder's experiment.json was written with other result-defining
    /// settings (strategies, seeds, orders and FWT may grow: they add runs).
    let private checkExperiment (path: string) (spec: ExperimentSpec) =
        let stored =
            try JsonNode.Parse(File.ReadAllText path)
            with :? Text.Json.JsonException as e -> raise (InvalidDataException($"{path} is not valid JSON: {e.Message}"))
        match stored with
        | :? JsonObject as o when not (isNull o["config"]) ->
            let storedSpec = ExperimentSpec.ofJson path o["config"]
            refuseOther path storedSpec spec
        | _ -> raise (InvalidDataException($"{path}: not a klf experiment record (no \"config\")"))

    let private checkManifest (path: string) (spec: ExperimentSpec) (run: RunSpec) =
        let stored =
            try JsonNode.Parse(File.ReadAllText path)
            with :? Text.Json.JsonException as e -> raise (InvalidDataException($"{path} is not valid JSON: {e.Message}"))
        let storedSpec = ExperimentSpec.ofJson path stored["config"]
        refuseOther path storedSpec spec
        match run.Kind, stored["strategy-settings"] with
        | StrategyRun label, storedStrategy ->
            let now = StrategySpec.toJson (strategySpec spec label)
            let before = if isNull storedStrategy then JsonValue.Create label :> JsonNode else storedStrategy
            if not (JsonNode.DeepEquals(now, before)) then
                raise (InvalidOperationException $"{path}: strategy {label} was started with the settings {before.ToJsonString()}, not {now.ToJsonString()}; use the same settings to resume, or another output folder")
        | _ -> ()

    /// Executes the runs of `spec` in `only` (all of them when None; e.g. a shard) into `outDir`:
    /// writes `outDir/experiment.json`, then per run `manifest.json` (settings, seed, task order,
    /// package versions, source revision), per-task state folders and, when done, `result.json`.
    /// Finished runs are skipped; an interrupted run continues after its last completed task. Returns
    /// the results of the runs it was given, in order.
    let execute (control: ExperimentControl) (spec: ExperimentSpec) (outDir: string) (only: RunSpec list option) : RunResult list =
        Klf.Native.TorchNative.EnsureLoaded()
        let root = benchmarkRoot spec
        let sequences = sequenceTasks root spec
        let all = runs sequences spec
        let chosen = defaultArg only all
        checkStrategies spec
        let expFile = Path.Combine(outDir, ExperimentFile)
        // A resume with other settings is refused before anything in the folder changes, so the
        // folder's record of itself (experiment.json, the manifests) stays that of its runs.
        for r in all do
            let manifestPath = Path.Combine(outDir, r.Id, ManifestFile)
            if File.Exists manifestPath then checkManifest manifestPath spec r
        if File.Exists expFile then checkExperiment expFile spec

        let exp = JsonObject()
        exp["format"] <- JsonValue.Create "klf-experiment/1"
        exp["config"] <- ExperimentSpec.toJson spec
        exp["runs"] <- JsonArray([| for r in all -> JsonValue.Create(r.Id.Replace('\\', '/')) :> JsonNode |])
        exp["packages"] <- RunProvenance.packages ()
        exp["revision"] <- JsonValue.Create(RunProvenance.revision ())
        let tok = TokenizerLoader.FromFolder(tokenizerDir spec)
        let device = torch.device control.Device
        let loaded = Collections.Generic.Dictionary<string, TaskData list>()
        // Facts from the whole tasks, before subsampling: the label set does not depend on the seed.
        let factsOf (name: string) = loaded[name] |> List.map TaskFacts.ofTask
        let sequenceOf (name: string) (seed: int) =
            if not (loaded.ContainsKey name) then
                loaded[name] <- sequences |> List.find (fun (n, _) -> n = name) |> snd
                                |> List.map (Task.load root >> if spec.DropInstruction then Task.dropInstruction else id)
            TaskSequence.create name loaded[name]
            |> TaskSequence.subsample seed { Train = spec.TrainExamples + spec.ValidationExamples; Test = spec.TestExamples }
            |> TaskSequence.withValidation seed spec.ValidationExamples
        // Every task of every run has examples to train on and to test on, before the first run
        // trains: a task that cannot be evaluated must not cost the runs before it.
        let encoder = encoderOnly spec
        for r in chosen do
            for t in (sequenceOf r.Sequence r.Seed).Tasks do
                if encoder && Array.append t.Train t.Test |> Array.exists (fun e -> e.Choices.Length = 0) then
                    raise (InvalidDataException $"task {t.Name} in {root} is not a classification task (exact match, at most {Task.MaxLabels} distinct answers), and a sentence encoder can only choose among a task's labels")
                if t.Train.Length = 0 then
                    let held = if spec.ValidationExamples > 0 then $" once {t.Validation.Length} are held out for validation (validation-examples {spec.ValidationExamples})" else ""
                    raise (InvalidDataException $"task {t.Name} (sequence {r.Sequence}, seed {r.Seed}) has no training examples in {root}{held}")
                if t.Test.Length = 0 then raise (InvalidDataException $"task {t.Name} (sequence {r.Sequence}, seed {r.Seed}) has no test examples in {root}")
        Directory.CreateDirectory outDir |> ignore
        AtomicFile.RemoveStale outDir |> ignore
        AtomicFile.WriteAllText(expFile, json exp)
        [ for r in chosen ->
            let runDir = Path.Combine(outDir, r.Id)
            let resultPath = Path.Combine(runDir, RunRecords.ResultFile)
            let manifestPath = Path.Combine(runDir, ManifestFile)
            if File.Exists resultPath then
                let result = RunRecords.read resultPath
                control.OnRunDone r result true
                result
            else
                Directory.CreateDirectory runDir |> ignore
                // One process per run folder: a second `klf run` on the same folder stops instead of
                // interleaving states. The OS drops the lock when the process dies, even by kill -9.
                use _lock =
                    try new FileStream(Path.Combine(runDir, ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
                    with :? IOException -> raise (InvalidOperationException $"{runDir} is in use by another process (a second klf run on the same folder?)")
                // What a killed writer left (its temporaries, a state folder moved aside) is cleared
                // under the lock, before anything reads the folder.
                for d in [ runDir; RunState.root runDir ] do AtomicFile.RemoveStale d |> ignore
                let sequence = sequenceOf r.Sequence r.Seed
                let names = TaskSequence.names sequence
                if not (File.Exists manifestPath) then
                    let m = RunRecords.kindJson r.Kind
                    m["format"] <- JsonValue.Create "klf-run/1"
                    m["sequence"] <- JsonValue.Create r.Sequence
                    m["seed"] <- JsonValue.Create r.Seed
                    m["tasks"] <- JsonArray([| for t in names -> JsonValue.Create t :> JsonNode |])
                    m["config"] <- ExperimentSpec.toJson spec
                    match r.Kind with
                    | StrategyRun label -> m["strategy-settings"] <- StrategySpec.toJson (strategySpec spec label)
                    | SingleTask _ | ZeroShot -> ()
                    m["packages"] <- RunProvenance.packages ()
                    m["revision"] <- JsonValue.Create(RunProvenance.revision ())
                    m["environment"] <- RunProvenance.environment spec
                    m["data"] <- RunProvenance.dataHashes sequence
                    m["started"] <- JsonValue.Create(DateTime.UtcNow.ToString "O")
                    AtomicFile.WriteAllText(manifestPath, json m)
                let options = trainerOptions spec r.Seed
                let make () = makeModel spec tok device r.Seed
                let runControl =
                    { RunControl.none with
                        OnTask = control.OnTask r
                        OnStep = (fun _ _ _ -> control.OnStep r)
                        OnResume = control.OnResume r
                        StateDir = Some runDir
                        KeepAllStates = control.KeepAllStates
                        BestValidation = spec.ValidationExamples > 0
                        EvalEvery = spec.EvalEvery
                        OnFit = fun j task fit ->
                            recordFit manifestPath j task fit
                            TrainingCurves.record runDir j task fit }
                let result =
                    match r.Kind with
                    | StrategyRun s ->
                        let strategy = Strategy.ofSpecIn "experiment" (strategySpec spec s)
                        // Every strategy spends the per-task steps once per task (MTL all at once, on the union).
                        let planned = spec.Steps * names.Length
                        control.OnRunStart r names planned
                        let res = Continual.execute runControl make tok options strategy sequence
                        { Sequence = r.Sequence; Seed = r.Seed; Kind = r.Kind; Rows = res.Matrix.ToRows(); Tasks = names; Facts = factsOf r.Sequence }
                    | SingleTask j ->
                        control.OnRunStart r [ names[j] ] spec.Steps
                        let score = Continual.singleTaskScore runControl make tok options sequence j
                        { Sequence = r.Sequence; Seed = r.Seed; Kind = r.Kind; Rows = [| [| score |] |]; Tasks = [ names[j] ]; Facts = [ (factsOf r.Sequence)[j] ] }
                    | ZeroShot ->
                        control.OnRunStart r names 0
                        let scores = Continual.zeroShotScores make tok options sequence
                        { Sequence = r.Sequence; Seed = r.Seed; Kind = r.Kind; Rows = [| scores |]; Tasks = names; Facts = factsOf r.Sequence }
                RunRecords.write resultPath result
                control.OnRunDone r result false
                result ]
