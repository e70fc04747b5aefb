namespace Klf.Pipelines

open System
open System.IO
open System.Text
open System.Text.Json

/// One task of a continual-learning sequence, with its splits.
/// Validation is a held-out slice of train (see `Task.withValidation`), never the benchmark's dev
/// split, which overlaps test in the Long Sequence benchmark. Metric names the scoring:
/// "exact-match" (the default) or "rouge-l", as the benchmark's `benchmark.json` declares it.
type TaskData =
    { Name: string
      Train: Example[]
      Validation: Example[]
      Test: Example[]
      Metric: string }

/// How many examples `Task.subsample` keeps per split (all of them when a split has fewer).
type SubsampleSizes = { Train: int; Test: int }

/// Loading tasks and transforming them (curried, data-last).
[<RequireQualifiedAccess>]
module Task =

    /// The metric of exact match after trimming and lower-casing.
    [<Literal>]
    let ExactMatch = "exact-match"

    /// The metric of ROUGE-L F over lower-cased word tokens.
    [<Literal>]
    let RougeL = "rouge-l"

    /// A task from its parts, with an empty validation set and the default metric (exact match;
    /// `Task.load` takes the metric its benchmark declares in `benchmark.json`).
    let create (name: string) (train: Example[]) (test: Example[]) : TaskData =
        { TaskData.Name = name; Train = train; Validation = [||]; Test = test; Metric = Benchmark.DefaultMetric }

    /// Loads a task from `<root>/train/<name>.json(l)(.gz)` and `<root>/test/<name>.json(l)(.gz)`; both
    /// must exist. Its metric is the one `<root>/benchmark.json` declares (`Benchmark.metricOf`),
    /// exact match when it declares none. The dev split is not read (it overlaps test); Validation
    /// starts empty.
    let load (root: string) (name: string) : TaskData =
        { create name (Benchmark.load root "train" name) (Benchmark.load root "test" name) with
            Metric = Benchmark.metricOf root name }

    /// A stable 64-bit FNV-1a hash of a string's UTF-8 bytes (unlike string.GetHashCode, the same
    /// in every process and on every machine).
    let stableHash (s: string) : uint64 =
        let mutable h = 14695981039346656037UL
        for b in Encoding.UTF8.GetBytes s do
            h <- (h ^^^ uint64 b) * 1099511628211UL
        h

    /// The seed of the random stream of one purpose ("train", "test", "validation") of one task,
    /// derived from the user's seed, the task name and the purpose with `stableHash`.
    let streamSeed (seed: int) (name: string) (purpose: string) : int =
        let h = stableHash $"{seed}\u0000{name}\u0000{purpose}"
        int ((h ^^^ (h >>> 32)) &&& 0x7FFFFFFFUL)

    /// The (sorted) indices of a seeded choice of min(n, count) of `count` items.
    let private choose (streamSeed: int) (n: int) (count: int) : int[] =
        if n < 0 then invalidArg "n" $"a sample size must be >= 0, got {n}"
        let idx = Array.init count id
        Random(streamSeed).Shuffle idx
        idx[.. min n count - 1] |> Array.sort

    /// A seeded subset of at most n examples of a split, kept in file order.
    let private pick seed name purpose n (xs: Example[]) =
        choose (streamSeed seed name purpose) n xs.Length |> Array.map (fun i -> xs[i])

    /// Keeps a seeded subset of sizes.Train train and sizes.Test test examples (all of a split when
    /// it has fewer), in file order. Each split of each task has its own stream, derived from the
    /// seed and the task name: the same seed always picks the same examples. Validation is untouched.
    let subsample (seed: int) (sizes: SubsampleSizes) (task: TaskData) : TaskData =
        { task with
            Train = pick seed task.Name "train" sizes.Train task.Train
            Test = pick seed task.Name "test" sizes.Test task.Test }

    /// Moves a seeded choice of n train examples (all of train when it has fewer) to the end of
    /// Validation; the rest of train keeps its order. Test is never touched.
    let withValidation (seed: int) (n: int) (task: TaskData) : TaskData =
        let chosen = choose (streamSeed seed task.Name "validation") n task.Train.Length
        let isChosen = Array.zeroCreate task.Train.Length
        for i in chosen do isChosen[i] <- true
        { task with
            Train = task.Train |> Array.indexed |> Array.filter (fun (i, _) -> not isChosen[i]) |> Array.map snd
            Validation = Array.append task.Validation (chosen |> Array.map (fun i -> task.Train[i])) }

    /// Applies f to every example of every split.
    let map (f: Example -> Example) (task: TaskData) : TaskData =
        { task with
            Train = Array.map f task.Train
            Validation = Array.map f task.Validation
            Test = Array.map f task.Test }

    /// Sets the metric name.
    let withMetric (metric: string) (task: TaskData) : TaskData = { task with Metric = metric }

    /// The generation budget of a task: the token count of its longest label (over all splits),
    /// plus one for the end-of-sequence token. `encode` is the tokenizer without special tokens,
    /// e.g. `fun s -> tok.Encode s`. 1 for a task without examples.
    let maxNewTokens (encode: string -> int[]) (task: TaskData) : int =
        let labels = Seq.concat [ task.Train; task.Validation; task.Test ] |> Seq.map (fun e -> e.Output) |> Seq.distinct
        1 + (labels |> Seq.fold (fun m l -> max m (encode l).Length) 0)

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
    let MaxLabels = 50

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

/// Task orders, read from an `orders.json` of the form
/// `{ "<benchmark>": { "<order name>": ["task", ...], ... }, ... }`.
[<RequireQualifiedAccess>]
module Orders =

    /// Reads an orders file: benchmark → order name → task names in order.
    let load (path: string) : Map<string, Map<string, string list>> =
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: orders file not found", path))
        use doc =
            try JsonDocument.Parse(File.ReadAllBytes path)
            with :? JsonException as e -> raise (InvalidDataException($"{path}: not valid JSON ({e.Message})"))
        let objectOf where (e: JsonElement) =
            if e.ValueKind <> JsonValueKind.Object then
                raise (InvalidDataException($"{path}: {where} must be an object, found {e.ValueKind}"))
            e.EnumerateObject() |> Seq.map (fun p -> p.Name, p.Value) |> List.ofSeq
        [ for benchmark, orders in objectOf "the top level" doc.RootElement ->
            benchmark,
            Map [ for name, tasks in objectOf $"benchmark \"{benchmark}\"" orders ->
                    if tasks.ValueKind <> JsonValueKind.Array then
                        raise (InvalidDataException($"{path}: order \"{benchmark}.{name}\" must be an array of task names, found {tasks.ValueKind}"))
                    name,
                    [ for i, t in Seq.indexed (tasks.EnumerateArray()) ->
                        if t.ValueKind <> JsonValueKind.String then
                            raise (InvalidDataException($"{path}: order \"{benchmark}.{name}\" element {i} must be a task name string, found {t.ValueKind}"))
                        t.GetString() ] ] ]
        |> Map

    /// The benchmarks an orders map knows.
    let benchmarks (orders: Map<string, Map<string, string list>>) : string list = orders |> Map.keys |> List.ofSeq

    /// The task names of one order, e.g. `orders |> Orders.get "long_sequence" "order1"`.
    /// Unknown benchmarks or orders fail with a message listing the known ones.
    let get (benchmark: string) (orderName: string) (orders: Map<string, Map<string, string list>>) : string list =
        match Map.tryFind benchmark orders with
        | None ->
            let known = String.Join(", ", benchmarks orders)
            raise (ArgumentException($"unknown benchmark \"{benchmark}\"; known benchmarks: {known}"))
        | Some byName ->
            match Map.tryFind orderName byName with
            | Some tasks -> tasks
            | None ->
                let known = String.Join(", ", Map.keys byName)
                raise (ArgumentException($"unknown order \"{orderName}\" of benchmark \"{benchmark}\"; known orders: {known}"))

    /// Every order of an orders map as `benchmark/name`, e.g. ["standard/order1"; ...].
    let all (orders: Map<string, Map<string, string list>>) : string list =
        [ for KeyValue(b, byName) in orders do
            for KeyValue(n, _) in byName -> $"{b}/{n}" ]

    /// Where the orders of a benchmark root are looked for, in this order: the folder's own
    /// `orders.json`, then `orders.json` beside the folder (the layout of a folder of benchmarks).
    let candidates (root: string) : string list =
        let full = Path.TrimEndingDirectorySeparator(Path.GetFullPath root)
        [ Path.Combine(full, "orders.json")
          match Path.GetDirectoryName full with
          | null -> ()
          | parent -> Path.Combine(parent, "orders.json") ]

    /// The orders file of a benchmark root: the first of `candidates` that exists. When none does, a
    /// FileNotFoundException that says where they were looked for.
    let fileFor (root: string) : string =
        let cs = candidates root
        match cs |> List.tryFind File.Exists with
        | Some f -> f
        | None ->
            let where = String.Join(" or ", cs)
            raise (FileNotFoundException($"no orders.json for the benchmark {root}: looked for {where} (give --orders FILE)", List.head cs))

    /// The tasks of an order written `benchmark/name` (e.g. "standard/order1"), read from an orders
    /// file. An unknown order fails naming the file and listing every order it holds.
    let lookup (file: string) (reference: string) : string list =
        match reference.Split('/') with
        | [| b; n |] ->
            let orders = load file
            match Map.tryFind b orders |> Option.bind (Map.tryFind n) with
            | Some tasks -> tasks
            | None ->
                let known = match all orders with [] -> "none" | xs -> String.Join(", ", xs)
                raise (ArgumentException($"unknown order \"{reference}\" in {file}; the orders there: {known}"))
        | _ -> raise (ArgumentException($"order \"{reference}\" must read benchmark/name, e.g. standard/order1"))

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
