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

    /// Applies f to every example of every split.
    let map (f: Example -> Example) (task: TaskData) : TaskData =
        { task with
            Train = Array.map f task.Train
            Validation = Array.map f task.Validation
            Test = Array.map f task.Test }

    /// At most this many distinct answers make an exact-match task a classification task.
    [<Literal>]
    let MaxLabels = 50

    /// The label set of a task: for an exact-match task whose answers (trimmed; compared lower-cased, as
    /// exact match compares them) take between 1 and MaxLabels distinct values over every split, those
    /// values (each spelt as it first occurs, in train, validation, test order), sorted by their lower-cased
    /// form; else empty (a generation task).
    let labels (task: TaskData) : string[] =
        if task.Metric <> Benchmark.DefaultMetric then [||]
        else
            let all =
                Seq.concat [ task.Train; task.Validation; task.Test ]
                |> Seq.map (fun e -> (if isNull e.Output then "" else e.Output).Trim())
                |> Seq.distinctBy (fun o -> o.ToLowerInvariant())
                |> Array.ofSeq
            if all.Length >= 1 && all.Length <= MaxLabels then all |> Array.sortWith (fun a b -> String.CompareOrdinal(a.ToLowerInvariant(), b.ToLowerInvariant()))
            else [||]

    /// Gives every example of every split the task's label set (`labels`) as its choices, so that an
    /// example carries the candidates it is scored against wherever it goes (replay, joint training).
    let withChoices (task: TaskData) : TaskData =
        let choices = labels task
        let set (xs: Example[]) = xs |> Array.map (fun e -> { e with Choices = choices })
        { task with Train = set task.Train; Validation = set task.Validation; Test = set task.Test }

    /// A task from its parts, with an empty validation set and the default metric (exact match;
    /// `Task.load` takes the metric its benchmark declares in `benchmark.json`); its examples carry its
    /// label set (`withChoices`).
    let create (name: string) (train: Example[]) (test: Example[]) : TaskData =
        withChoices { TaskData.Name = name; Train = train; Validation = [||]; Test = test; Metric = Benchmark.DefaultMetric }

    /// Loads a task from `<root>/train/<name>.json(l)(.gz)` and `<root>/test/<name>.json(l)(.gz)`; both
    /// must exist. Its metric is the one `<root>/benchmark.json` declares (`Benchmark.metricOf`),
    /// exact match when it declares none; its examples carry its label set (`withChoices`). The dev split
    /// is not read (it overlaps test); Validation starts empty.
    let load (root: string) (name: string) : TaskData =
        withChoices
            { TaskData.Name = name; Train = Benchmark.load root "train" name; Validation = [||]; Test = Benchmark.load root "test" name
              Metric = Benchmark.metricOf root name }

    /// Drops the task's instruction: the lines that every example of the task (all splits) shares at
    /// its start and at its end, e.g. the Long Sequence benchmark's "What is the topic of the following
    /// paragraph? Choose one from the option. Option: …" and the closing "Answer:". An example always
    /// keeps at least one line, and a task of fewer than two examples is left as it is. For models that
    /// read the text alone: a sentence encoder embeds the input, and a shared instruction only moves
    /// every embedding the same way.
    let dropInstruction (task: TaskData) : TaskData =
        let all = Array.concat [ task.Train; task.Validation; task.Test ]
        if all.Length < 2 then task
        else
            let lines = all |> Array.map (fun e -> e.Input.Split('\n'))
            let shortest = lines |> Array.map Array.length |> Array.min
            let shared (pick: string[] -> int -> string) =
                let mutable n = 0
                while n < shortest - 1 && (let first = pick lines[0] n in lines |> Array.forall (fun l -> pick l n = first)) do n <- n + 1
                n
            let head = shared (fun l i -> l[i])
            let tail = min (shortest - 1 - head) (shared (fun l i -> l[l.Length - 1 - i]))
            if head = 0 && tail = 0 then task
            else
                let strip (e: Example) =
                    let l = e.Input.Split('\n')
                    { e with Input = String.Join("\n", l[head .. l.Length - 1 - tail]) }
                map strip task

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

    /// Sets the metric name.
    let withMetric (metric: string) (task: TaskData) : TaskData = { task with Metric = metric }

    /// The generation budget of a task: the token count of its longest label (over all splits),
    /// plus one for the end-of-sequence token. `encode` is the tokenizer without special tokens,
    /// e.g. `fun s -> tok.Encode s`. 1 for a task without examples.
    let maxNewTokens (encode: string -> int[]) (task: TaskData) : int =
        let labels = Seq.concat [ task.Train; task.Validation; task.Test ] |> Seq.map (fun e -> e.Output) |> Seq.distinct
        1 + (labels |> Seq.fold (fun m l -> max m (encode l).Length) 0)
