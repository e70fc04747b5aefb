// The Long Sequence benchmark, order 1 (15 tasks: mnli → cb → … → yahoo): KIF against sequential
// fine-tuning (SeqFT, the lower bound) and multi-task learning (MTL, the upper bound), with the
// single-task runs that FWT needs. Writes a resumable run folder with metrics.json, report.md and
// plots; rerun the same command after an interruption and it continues where it stopped.
//
// Make the package feed first (scripts/pack.sh), then:
//   dotnet fsi src/Klf.Scripts/experiments/long-sequence-order1.fsx tokenizer=DIR (model=DIR | preset=NAME) [out=DIR]
//       [tasks=N] [train=N] [test=N] [steps=N] [batch=N] [lr=X] [seeds=1,2,3]
// tasks=N keeps the first N tasks of the order (for a quick look); the defaults are the full order,
// 200 training and 100 test examples per task, 100 steps of 8, lr 3e-4, seed 1.
// From the local feed scripts/pack.sh writes, found through the repository's NuGet.config; a script
// elsewhere adds it with #i "nuget: /absolute/path/to/artifacts/nuget".
#r "nuget: Klf.Reports"
#load "ScriptArgs.fsx"

open System
open System.IO
open Klf.Pipelines

let args = ScriptArgs.parse fsi.CommandLineArgs
let arg = ScriptArgs.tryGet args
let num = ScriptArgs.int args

let root =
    match Benchmark.locate __SOURCE_DIRECTORY__ with
    | Some b -> Path.Combine(b, "long_sequence")
    | None -> failwith "benchmarks/long_sequence not found above the script (set KLF_BENCHMARKS)"
let order = Orders.lookup (Orders.fileFor root) "long_sequence/order1"
let tasks = match arg "tasks" with Some n -> List.truncate (int n) order | None -> order

let spec =
    { ExperimentSpec.defaults with
        Name = "long-sequence-order1"
        Model = (match arg "model", arg "preset" with
                 | Some m, _ -> Folder m
                 | None, Some p -> Preset p
                 | None, None -> failwith "give model=DIR or preset=NAME")
        Tokenizer = arg "tokenizer"
        Benchmark = Some root
        // An explicit list keeps tasks=N simple; the full list is exactly long_sequence/order1.
        Tasks = tasks
        Strategies = [ for s in [ "seqft"; "kif"; "mtl" ] -> StrategySpec.named s ]
        Seeds = (match arg "seeds" with Some s -> s.Split(',') |> Array.map int |> List.ofArray | None -> [ 1 ])
        TrainExamples = num "train" 200
        TestExamples = num "test" 100
        Steps = num "steps" 100
        BatchSize = num "batch" 8
        LearningRate = ScriptArgs.float args "lr" 3e-4
        SingleTask = true }

let out = arg "out" |> Option.defaultValue "runs/long-sequence-order1"
printfn "Long Sequence order 1, %d tasks: %s" tasks.Length (String.Join(" -> ", tasks))
let control =
    { ExperimentControl.none with
        OnRunStart = fun r _ planned -> printfn "%s seed %d (%d steps)" (r.Id.Replace('\\', '/')) r.Seed planned
        OnResume = fun _ n -> printfn "  resuming after task %d" n
        OnTask = fun _ _ name row -> printfn "  after %-8s %s" name (String.Join(" ", row |> Array.map (fun x -> x.ToString("F1")))) }
let results = Experiment.execute control spec out None
let outcomes = Results.bySeed results
for _, _, aggregates in Results.aggregate outcomes do
    printfn "\n%-8s %8s %8s %8s %8s" "strategy" "AP" "F.Ra" "FWT" "BWT"
    for a in aggregates do
        let fwt = match a.FWT with Some f -> f.Mean.ToString("F1") | None -> "-"
        printfn "%-8s %8.1f %8.1f %8s %8.1f" a.Name a.AP.Mean a.FRa.Mean fwt a.BWT.Mean
for m in Klf.Reports.RunReport.write out [ out ] (("script", "experiments/long-sequence-order1.fsx") :: Klf.Reports.RunReport.settings spec) outcomes do
    printfn "wrote %s" (Path.GetFullPath m)
