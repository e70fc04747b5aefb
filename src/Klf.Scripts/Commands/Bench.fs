/// `klf bench`: the performance figures of this machine in one run (matmul peak, training
/// throughput and MFU, importance overhead, fusion against copy bandwidth, decoding with and without
/// the KV cache, memory across tasks, PyTorch on the same step, fusion rules and decoding), printed
/// as tables and written as bench.json. Measures and prints; never asserts. The measurements are Klf.Pipelines' `Bench*` modules.
module Klf.Cli.Bench

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.SkillUnits
open Klf.Fusion
open Klf.Training
open Klf.Pipelines
open Klf.Cli.Cli

let private allSections = [ "matmul"; "train"; "importance"; "fusion"; "generation"; "memory"; "pytorch" ]
let private sections =
    opt<string> "--sections" $"""Comma-separated sections to run: {String.Join(", ", allSections)} (matmul runs whenever train or pytorch does; fusion and generation are measured in PyTorch too when a Python with torch is found)."""
        (Some(String.Join(",", allSections)))
let private out = opt<string> "--out" "Folder for bench.json and bench.txt (the tables)." None |> check folderToWrite
let private threads = opt<int> "--threads" "Torch intra-op threads (0: torch's default)." (Some 0) |> check (atLeast 0)
let private quick = opt<bool> "--quick" "A rough look, not for reporting: fewer repetitions, llama-5m only for training and fusion, 32 and 64 new tokens." (Some false)

let private machine () : BenchMachine =
    let cpu =
        try
            File.ReadLines "/proc/cpuinfo" |> Seq.tryFind (fun l -> l.StartsWith "model name")
            |> Option.map (fun l -> l.Substring(l.IndexOf(':') + 1).Trim()) |> Option.defaultValue "unknown"
        with _ -> "unknown"
    { Cpu = cpu
      Cores = Environment.ProcessorCount
      Threads = torch.get_num_threads ()
      Os = Runtime.InteropServices.RuntimeInformation.OSDescription
      Runtime = Runtime.InteropServices.RuntimeInformation.FrameworkDescription
      TorchSharp = typeof<torch>.Assembly.GetName().Version.ToString() }

let private preset (name: string) =
    Trainer.Seed 1L
    LanguageModels.FromPreset(name)

/// The embedded model's shape with random weights (its config, not its checkpoint).
let private embeddedShape () =
    let config = Path.Combine(Run.embeddedRoot (), "klf-tiny", "config.json")
    Trainer.Seed 1L
    LanguageModels.FromConfig(JsonNode.Parse(File.ReadAllText config).AsObject(), config)

/// The memory section in a child klf process, so the other sections' heap does not count.
let private memoryInChild (quickRun: bool) (threadCount: int) : MemoryBench list * LowPrecisionBench list =
    let dir = Directory.CreateTempSubdirectory("klf-bench-memory-").FullName
    try
        let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        for a in [ Path.Combine(AppContext.BaseDirectory, "klf.dll"); "bench"; "--sections"; "memory"; "--out"; dir; "--threads"; string threadCount ] @ (if quickRun then [ "--quick"; "true" ] else []) do
            psi.ArgumentList.Add a
        use p = Process.Start psi
        let stdout, stderr = p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync()
        p.WaitForExit()
        if p.ExitCode <> 0 then failwithf "the memory section's child process failed (%d): %s%s" p.ExitCode stdout.Result stderr.Result
        let json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "bench.json")))
        [ for m in json["memory"].AsArray() ->
            { Strategy = m["strategy"].GetValue<string>()
              Model = m["model"].GetValue<string>()
              Tasks = [ for t in m["tasks"].AsArray() -> t.GetValue<string>() ]
              PeakBytes = [ for b in m["peak_bytes"].AsArray() -> b.GetValue<int64>() ]
              ResidentBytes = [ for b in m["resident_bytes"].AsArray() -> b.GetValue<int64>() ] } ],
        [ for l in json["low_precision_base"].AsArray() ->
            { Model = l["model"].GetValue<string>()
              Base = l["base"].GetValue<string>()
              FrozenBytes = l["frozen_bytes"].GetValue<int64>()
              TrainableBytes = l["trainable_bytes"].GetValue<int64>()
              PeakBytes = l["peak_bytes"].GetValue<int64>()
              StepMs = l["step_ms"].GetValue<float>()
              Loss = l["loss"].GetValue<float>() } ]
    finally
        try Directory.Delete(dir, true) with _ -> ()

/// KIF and IncLoRA over six Long Sequence tasks on the embedded model, peak memory per task; LoRA
/// over a float32 and a bfloat16 base on llama-25m.
let private memoryHere (quickRun: bool) : MemoryBench list * LowPrecisionBench list =
    let embedded = Path.Combine(Run.embeddedRoot (), "klf-tiny")
    let tok = Klf.Tokenizers.TokenizerLoader.FromFolder embedded
    let root =
        match Benchmark.locate Environment.CurrentDirectory |> Option.orElse (Benchmark.locate AppContext.BaseDirectory) with
        | Some b -> Path.Combine(b, "long_sequence")
        | None -> raise (DirectoryNotFoundException "the memory section needs benchmarks/long_sequence (run from the repository, or set KLF_BENCHMARKS)")
    let sequence =
        [ "dbpedia"; "amazon"; "yahoo"; "agnews"; "yelp"; "sst-2" ]
        |> List.map (Task.load root)
        |> TaskSequence.create "six"
        |> TaskSequence.subsample 1 { Train = (if quickRun then 16 else 64); Test = (if quickRun then 4 else 16) }
    let options = TrainerOptions(BatchSize = 8, MaxSteps = (if quickRun then 4 else 20), Seed = 1, MaxLength = 256, Optimizer = OptimizerOptions(LearningRate = 1e-3, WarmupSteps = 2))
    let make () = Klf.Checkpoints.ModelFolder.Load(embedded)
    let runs = [ for strategy in [ KifStrategy.kif; IncrementalLora.incLora 8 ] -> BenchMemory.run "klf-tiny" make tok options strategy sequence ]
    let model = if quickRun then "llama-5m" else "llama-25m"
    runs, BenchMemory.lowPrecisionBase model (fun () -> preset model) 8 128 (if quickRun then 3 else 6)

let cmd =
    command "bench" "Measure this machine: matmul peak, training throughput and MFU, importance overhead, fusion ÷ copy bandwidth, decoding with and without the KV cache, memory across tasks, PyTorch on the same step, fusion rules and decoding; prints tables, --out writes bench.json."
        [ sections; out; threads; quick ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        if pr.GetValue threads > 0 then torch.set_num_threads (pr.GetValue threads)
        let wanted = (pr.GetValue sections).Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray
        for s in wanted do
            if not (List.contains s allSections) then raise (ArgumentException $"""--sections: unknown section "{s}" (known: {String.Join(", ", allSections)})""")
        let has s = List.contains s wanted
        let q = pr.GetValue quick
        let clock = Stopwatch.StartNew()
        let progress (what: string) = eprintfn "bench: %s (%.0f s)" what clock.Elapsed.TotalSeconds
        let peak =
            if has "matmul" || has "train" || has "pytorch" then (progress "matmul peak"; Some(BenchTraining.matmulPeak ())) else None
        let steps = if q then 3 else 10
        let train =
            if has "train" || has "pytorch" then
                [ for name, make, batch, seqLen in [ "klf-tiny shape", embeddedShape, 8, 256; "llama-5m", (fun () -> preset "llama-5m"), 16, 128; "llama-25m", (fun () -> preset "llama-25m"), 16, 128 ] do
                    if (has "train" && not q) || name = "llama-5m" then
                        progress $"training step, {name}"
                        use m = make ()
                        yield BenchTraining.trainStep name m batch seqLen 3 steps peak.Value ]
            else []
        let importance =
            if has "importance" then
                [ for lora in [ false; true ] ->
                    progress (if lora then "importance overhead, LoRA" else "importance overhead, full")
                    use m = preset "llama-5m"
                    if lora then Lora.Apply(m.Module, LoraConfig.ForRank 8) |> ignore
                    BenchTraining.importanceOverhead (if lora then "llama-5m, LoRA r 8 (q, v)" else "llama-5m, full") m 16 128 (if q then 4 else 8) (if q then 1 else 5) ]
            else []
        let benchScript (name: string) = Path.Combine(AppContext.BaseDirectory, "bench", name)
        let fusion, torchFusion =
            if has "fusion" then
                let rules : IFusionRule list = [ KifStaticRule(); KifAdaptiveRule(); AverageRule(); TaskArithmeticRule(); MagMaxRule(); TiesRule(); DareRule() ]
                // The task-vector rules again against a separate base (keep-baseline): without one,
                // task arithmetic and MagMax reduce to θ_k; DARE never reads the base.
                let withBase : IFusionRule list = [ TaskArithmeticRule(); MagMaxRule(); TiesRule() ]
                let model = if q then "llama-5m" else "llama-25m"
                let repeats = if q then 3 else 7
                let klf =
                    [ for partitioner in [ FullFineTuningPartitioner() :> ISkillUnitPartitioner; NeuronPartitioner(16) ] do
                        progress $"fusion, {model}, {partitioner.Name} units"
                        use m = preset model
                        yield! BenchFusion.run m partitioner rules false repeats
                        yield! BenchFusion.run m partitioner withBase true repeats ]
                progress $"fusion in PyTorch, {model}"
                let rows, note = BenchPyTorchFusion.compare (benchScript "pytorch_fusion.py") model (Klf.Models.Llama.LlamaConfig.Preset model) repeats (torch.get_num_threads ()) klf
                rows, Some note
            else [], None
        let generation, torchGeneration =
            if has "generation" then
                progress "generation, llama-5m"
                let repeats = if q then 1 else 2
                let klf =
                    use m = preset "llama-5m"
                    [ for batch in [ 1; 8 ] do yield! BenchGeneration.run "llama-5m" m batch 32 (if q then [ 32; 64 ] else [ 64; 256 ]) repeats ]
                progress "generation in PyTorch, llama-5m"
                let rows, note = BenchPyTorchGeneration.compare (benchScript "pytorch_generate.py") "llama-5m" (Klf.Models.Llama.LlamaConfig.Preset "llama-5m") repeats (torch.get_num_threads ()) klf
                rows, Some note
            else [], None
        let memory, lowPrecision =
            if has "memory" then
                progress "memory across tasks (KIF, IncLoRA; six tasks) and LoRA over a bfloat16 base"
                if wanted = [ "memory" ] then memoryHere q else memoryInChild q (torch.get_num_threads ())
            else [], []
        let pytorch =
            if has "pytorch" then
                progress "PyTorch, llama-5m"
                let klf = train |> List.find (fun t -> t.Model = "llama-5m")
                Some(BenchPyTorch.compare (benchScript "pytorch_step.py") "llama-5m" (Klf.Models.Llama.LlamaConfig.Preset "llama-5m") 16 128 steps (torch.get_num_threads ()) klf.StepMs)
            else None
        let results =
            { Machine = machine ()
              Matmul = peak
              Train = (if has "train" then train else [])
              Importance = importance
              Fusion = fusion
              Generation = generation
              Memory = memory
              LowPrecision = lowPrecision
              PyTorch = pytorch
              TorchFusion = torchFusion
              TorchGeneration = torchGeneration
              Seconds = clock.Elapsed.TotalSeconds }
        let table = BenchReport.table results
        printf "%s" table
        match pr.GetValue out with
        | null | "" -> ()
        | dir ->
            Directory.CreateDirectory dir |> ignore
            Klf.Formats.AtomicFile.WriteAllText(Path.Combine(dir, "bench.json"), BenchReport.json results)
            Klf.Formats.AtomicFile.WriteAllText(Path.Combine(dir, "bench.txt"), table)
            printfn "wrote %s and bench.txt" (Path.GetFullPath(Path.Combine(dir, "bench.json")))
        0)
