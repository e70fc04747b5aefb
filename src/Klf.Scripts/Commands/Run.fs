/// `klf run`: strategies over a task sequence; writes DIR/metrics.json (the stable contract),
/// then DIR/report.md with PNG plots beside it.
module Klf.Cli.Run

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Models
open Klf.Training
open Klf.Checkpoints
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common

let private model = opt<string> "--model" "Hugging Face model folder to start every run from." None
let private preset = opt<string> "--preset" "Or a randomly initialised preset (vocabulary = tokenizer's)." None
let private tokenizer = tokenizerOption
let private benchmark = benchmarkOption
let private orders = opt<string> "--orders" "orders.json (default: beside the benchmark root)." None
let private order = opt<string> "--order" "Task order as benchmark/name in orders.json." (Some "standard/order1")
let private tasksOpt = opt<string> "--tasks" "Comma-separated tasks instead of --order." None
let private strategyList = String.Join(", ", Strategy.names)
let private strategies = opt<string> "--strategies" $"Comma-separated strategies ({strategyList})." (Some "seqft,kif")
let private nTrain = opt<int> "--train-examples" "Training examples per task (seeded sample)." (Some 200)
let private nTest = opt<int> "--test-examples" "Test examples per task (seeded sample)." (Some 100)
let private steps = opt<int> "--steps" "Optimizer steps per task." (Some 100)
let private batch = opt<int> "--batch" "Examples per batch." (Some 8)
let private lr = opt<float> "--lr" "Peak learning rate." (Some 3e-4)
let private warmup = opt<int> "--warmup" "Warm-up steps per task." (Some 10)
let private maxLen = opt<int> "--max-length" "Maximum sequence / source length." (Some 256)
let private seed = opt<int> "--seed" "Seed of sampling, initialisation and training." (Some 1)
let private noFwt = opt<bool> "--no-fwt" "Skip the single-task runs that FWT needs (FWT is then null)." (Some false)
let private out = req<string> "--out" "Run directory: metrics.json, report.md and the PNG plots are written there."

let private matrixJson (m: AccuracyMatrix) =
    JsonArray([| for row in m.ToRows() -> JsonArray([| for a in row -> (if Double.IsNaN a then null else JsonValue.Create a :> JsonNode) |]) :> JsonNode |])

let cmd =
    command "run" "Run strategies over a task sequence and write DIR/metrics.json (accuracy matrices, AP, F.Ra, FWT, BWT in percent), DIR/report.md and plots."
        [ model; preset; tokenizer; benchmark; orders; order; tasksOpt; strategies; nTrain; nTest; steps; batch; lr; warmup; maxLen; seed; noFwt; deviceOption; out ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let tok, _ = loadTokenizer (pr.GetValue tokenizer) (pr.GetValue model)
        let root = benchmarkRoot (pr.GetValue benchmark)
        let s = pr.GetValue seed
        let sequence =
            match pr.GetValue tasksOpt with
            | null | "" ->
                let ordersPath = match pr.GetValue orders with null | "" -> Path.Combine(Path.GetDirectoryName(Path.GetFullPath root), "orders.json") | p -> p
                let parts = (pr.GetValue order).Split('/')
                if parts.Length <> 2 then raise (ArgumentException "--order must read benchmark/name, e.g. standard/order1")
                TaskSequence.ofOrder root (Orders.load ordersPath) parts[0] parts[1]
            | t -> t.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray |> List.map (Task.load root) |> TaskSequence.create "custom"
            |> TaskSequence.subsample s { Train = pr.GetValue nTrain; Test = pr.GetValue nTest }
        let dev = device (pr.GetValue deviceOption)
        let makeModel () = loadModel (pr.GetValue model) (pr.GetValue preset) tok (int64 s) dev
        let options = TrainerOptions(BatchSize = pr.GetValue batch, MaxSteps = pr.GetValue steps, Seed = s, MaxLength = pr.GetValue maxLen,
                                     Optimizer = OptimizerOptions(LearningRate = pr.GetValue lr, WarmupSteps = pr.GetValue warmup))
        let chosen = (pr.GetValue strategies).Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> Array.map Strategy.byName
        let names = TaskSequence.names sequence
        printfn "sequence %s: %s; %d train / %d test examples per task, %d steps per task, seed %d" sequence.Name (String.Join(" -> ", names)) (pr.GetValue nTrain) (pr.GetValue nTest) (pr.GetValue steps) s
        let single =
            if pr.GetValue noFwt then None
            else
                printfn "single-task runs (for FWT)..."
                let a = Continual.singleTaskScores makeModel tok options sequence
                printfn "single-task scores: %s" (String.Join(", ", Array.map2 (fun (n: string) (x: float) -> n + " " + x.ToString("F1")) (Array.ofList names) a))
                Some a
        let results =
            [ for st in chosen ->
                printfn "strategy %s" st.Name
                let r = Continual.runWith (fun j name row -> printfn "  after %-10s %s" name (String.Join("  ", row |> Array.map (fun x -> x.ToString("F1"))))) makeModel tok options st sequence
                let summary = Metrics.summary single r.Matrix
                printfn "  AP %.1f  F.Ra %.1f  FWT %s  BWT %.1f" summary.AP summary.FRa (match summary.FWT with Some f -> f.ToString("F1") | None -> "-") summary.BWT
                st.Name, r, summary ]
        let json = JsonObject()
        json["tasks"] <- JsonArray([| for n in names -> JsonValue.Create n :> JsonNode |])
        json["seed"] <- JsonValue.Create s
        let strategiesJson = JsonObject()
        for name, r, summary in results do
            let o = JsonObject()
            o["matrix"] <- matrixJson r.Matrix
            o["AP"] <- JsonValue.Create summary.AP
            o["FRa"] <- JsonValue.Create summary.FRa
            o["FWT"] <- (match summary.FWT with Some f -> JsonValue.Create f :> JsonNode | None -> null)
            o["BWT"] <- JsonValue.Create summary.BWT
            strategiesJson[name] <- o
        json["strategies"] <- strategiesJson
        let dir = pr.GetValue out
        Directory.CreateDirectory dir |> ignore
        let path = Path.Combine(dir, "metrics.json")
        AtomicFile.WriteAllText(path, json.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
        printfn "wrote %s" (Path.GetFullPath path)
        let inv (x: float) = x.ToString(Globalization.CultureInfo.InvariantCulture)
        let settings =
            [ "sequence", sequence.Name + ": " + String.Join(" -> ", names)
              "strategies", String.Join(", ", [ for name, _, _ in results -> name ])
              "model", (match pr.GetValue model with null | "" -> "preset " + pr.GetValue preset + " (random init)" | m -> m)
              "train / test examples per task", $"{pr.GetValue nTrain} / {pr.GetValue nTest}"
              "steps per task, batch", $"{pr.GetValue steps}, {pr.GetValue batch}"
              "learning rate, warm-up", $"{inv (pr.GetValue lr)}, {pr.GetValue warmup}"
              "max length", string (pr.GetValue maxLen)
              "seed", string s
              "single-task runs (FWT)", (if single.IsSome then "yes" else "no (--no-fwt)") ]
        let written =
            Klf.Cli.Report.Markdown.write dir settings names
                [ for name, r, summary in results -> { Name = name; Matrix = r.Matrix; Summary = summary } : Klf.Cli.Report.Markdown.StrategyResult ] []
        printfn "wrote %s and %d plots beside it" (Path.GetFullPath written.Head) written.Tail.Length
        0)
