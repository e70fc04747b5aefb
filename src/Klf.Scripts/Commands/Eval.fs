/// `klf eval`: scores a checkpoint (optionally with a LoRA adapter) on the test split of benchmark
/// tasks, with each task's metric, and prints (and optionally writes) the scores.
module Klf.Cli.Eval

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Klf.Models
open Klf.Adapters
open Klf.Checkpoints
open Klf.Formats
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common

let private model = req<string> "--model" "Model folder (Hugging Face layout, e.g. a checkpoint of klf train or klf fuse)."
let private adapter = opt<string> "--adapter" "A LoRA adapter folder (PEFT layout) to load on top of --model." None
let private tokenizer = tokenizerOption
let private benchmark = benchmarkOption
let private orders = opt<string> "--orders" "orders.json (default: the benchmark folder's own, else the one beside it)." None
let private order = opt<string> "--order" "Evaluate the tasks of this order (benchmark/name in orders.json, e.g. standard/order1)." None
let private tasksOpt = opt<string> "--tasks" "Comma-separated tasks to evaluate, e.g. dbpedia,agnews." None
let private n = opt<int> "--n" "Test examples per task: a seeded sample, the same as klf run --test-examples draws with the same seed (0 = all)." (Some 100) |> check (atLeast 0)
let private seed = opt<int> "--seed" "Seed of the test sample." (Some 1)
let private batch = opt<int> "--batch" "Prompts decoded together." (Some 16) |> check (atLeast 1)
let private out = opt<string> "--out" "Also write the scores to this JSON file (written atomically)." None |> check fileToWrite
let private dropInstruction = opt<bool> "--drop-instruction" "Drop each task's instruction (the lines all its examples share at their start and end) first, as klf run --drop-instruction does (the MiniLM default)." (Some false)

/// One task's result: its name, metric (canonical name, e.g. exact_match), the number of test
/// examples scored and the score in percent.
type TaskScore = { Task: string; Metric: string; N: int; Score: float }

/// The task names of `--tasks a,b,c` or `--order benchmark/name` (exactly one of them), the latter
/// read from `ordersPath`.
let taskNames (tasks: string) (order: string) (ordersPath: unit -> string) : string list =
    match tasks, order with
    | (null | ""), (null | "") -> raise (ArgumentException "give --tasks a,b,c or --order benchmark/name")
    | t, (null | "") ->
        match t.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray with
        | [] -> raise (ArgumentException "--tasks names no task")
        | names -> names
    | (null | ""), o -> Orders.lookup (ordersPath ()) o
    | _ -> raise (ArgumentException "give either --tasks or --order, not both")

/// A task ready to evaluate: its sampled test examples, its metric and the cap on new tokens.
type EvalTask = { Name: string; Metric: Metric; MaxNewTokens: int; Test: Example[] }

/// Loads a task for evaluation: a seeded sample of `n` test examples (0 = all; the stream of
/// `Task.subsample`, so the same seed picks the same examples as klf run), the task's metric, and
/// `Task.maxNewTokens` over all of the task's labels (train and test) as the cap on new tokens, so
/// the budget does not depend on `n`. With `drop`, the task's instruction is dropped first (`Task.dropInstruction`).
let prepare (tok: Klf.Tokenizers.ITextTokenizer) (root: string) (seed: int) (n: int) (drop: bool) (name: string) : EvalTask =
    let task = Task.load root name |> if drop then Task.dropInstruction else id
    let test = (task |> Task.subsample seed { Train = 0; Test = (if n <= 0 then Int32.MaxValue else n) }).Test
    if test.Length = 0 then raise (InvalidDataException $"""{Benchmark.path root "test" name}: task {name} has no test examples""")
    { Name = name; Metric = Metric.ofName task.Metric; MaxNewTokens = Task.maxNewTokens (fun s -> tok.Encode s) task; Test = test }

/// Scores the model on a prepared task with `Evaluate.taskWith` (batched greedy decoding with the KV
/// cache, `batchSize` prompts at a time), in percent.
let score (m: ILanguageModel) (tok: Klf.Tokenizers.ITextTokenizer) (batchSize: int) (task: EvalTask) : TaskScore =
    let options = GenerationOptions(MaxNewTokens = task.MaxNewTokens, BatchSize = batchSize, UseCache = true)
    { Task = task.Name; Metric = Metric.name task.Metric; N = task.Test.Length; Score = Evaluate.taskWith m tok options task.Metric task.Test }

/// The JSON written by `--out`: `{model, adapter, seed, tasks: [{task, metric, n, score}], mean}`
/// (scores in percent).
let toJson (modelDir: string) (adapterDir: string) (seed: int) (scores: TaskScore list) : JsonObject =
    let o = JsonObject()
    o["model"] <- JsonValue.Create(Path.GetFullPath modelDir)
    o["adapter"] <- (match adapterDir with null | "" -> null | a -> JsonValue.Create(Path.GetFullPath a) :> JsonNode)
    o["seed"] <- JsonValue.Create seed
    o["tasks"] <-
        JsonArray([| for s in scores ->
                        JsonObject(dict [ "task", JsonValue.Create s.Task :> JsonNode; "metric", JsonValue.Create s.Metric
                                          "n", JsonValue.Create s.N; "score", JsonValue.Create s.Score ]) :> JsonNode |])
    o["mean"] <- JsonValue.Create(scores |> List.averageBy (fun s -> s.Score))
    o

let cmd =
    command "eval" "Evaluate a model on the test split of benchmark tasks (exact match or ROUGE-L, in percent) and print the scores and their mean."
        [ model; adapter; tokenizer; benchmark; orders; order; tasksOpt; n; seed; batch; dropInstruction; deviceOption; out ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let modelDir, adapterDir = pr.GetValue model, pr.GetValue adapter
        let root = benchmarkRoot (pr.GetValue benchmark)
        let ordersPath () = match pr.GetValue orders with null | "" -> Orders.fileFor root | p -> p
        let names = taskNames (pr.GetValue tasksOpt) (pr.GetValue order) ordersPath
        if pr.GetValue batch < 1 then raise (ArgumentException "--batch must be at least 1")
        // The tokenizer: --tokenizer, else the model folder, else (when only the adapter has one) the adapter folder.
        let tokDir =
            match pr.GetValue tokenizer, adapterDir with
            | (null | ""), (null | "") -> null
            | (null | ""), a when List.isEmpty (tokenizerFiles modelDir) && not (List.isEmpty (tokenizerFiles a)) -> a
            | t, _ -> t
        let tok, _ = loadTokenizer tokDir modelDir
        let s = pr.GetValue seed
        let tasks = [ for name in names -> prepare tok root s (pr.GetValue n) (pr.GetValue dropInstruction) name ] // every task file is read before the model loads
        let m = ModelFolder.Load(modelDir, device (pr.GetValue deviceOption))
        try
            match adapterDir with
            | null | "" -> ()
            | a ->
                if not (File.Exists(Path.Combine(a, "adapter_config.json"))) then
                    raise (FileNotFoundException($"{a}: not a LoRA adapter folder (no adapter_config.json)", Path.Combine(a, "adapter_config.json")))
                Lora.LoadAdapter(m.Module, a) |> ignore
            let nText = if pr.GetValue n <= 0 then "all" else string (pr.GetValue n)
            printfn "evaluating %s%s on %d task(s), %s test examples each (seed %d)" modelDir
                (match adapterDir with null | "" -> "" | a -> " + adapter " + a) names.Length nText s
            printfn "%-14s %-12s %6s %7s" "task" "metric" "n" "score"
            let scores =
                [ for t in tasks ->
                    let r = score m tok (pr.GetValue batch) t
                    printfn "%-14s %-12s %6d %7.1f" r.Task r.Metric r.N r.Score
                    r ]
            printfn "%-14s %-12s %6s %7.1f" "mean" "" "" (scores |> List.averageBy (fun r -> r.Score))
            match pr.GetValue out with
            | null | "" -> ()
            | path ->
                AtomicFile.WriteAllText(path, (toJson modelDir adapterDir s scores).ToJsonString(JsonSerializerOptions(WriteIndented = true)))
                printfn "wrote %s" (Path.GetFullPath path)
        finally
            m.Dispose()
        0)
