/// Experiments, run folders and resumption: an interrupted run continues after its last completed
/// task and ends bit-identical to an uninterrupted one; shards partition an experiment and merge
/// back; configs read from JSON and YAML.
module ExperimentTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Models
open Klf.Training
open Klf.Pipelines

exception SimulatedCrash

let private tokDir () = TokenizerTests.trained.Value.LlamaFolder
let private root () = Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")

let private sequence () =
    [ "dbpedia"; "amazon"; "agnews" ]
    |> List.map (Task.load (root ()))
    |> TaskSequence.create "standard-3"
    |> TaskSequence.subsample 3 { Train = 15; Test = 4 }
    |> TaskSequence.withValidation 3 3

let private bytesOf (path: string) = File.ReadAllBytes path

/// Every file of the final task state, by name → bytes.
let private finalState (runDir: string) =
    let _, dir = (RunState.latest runDir).Value
    Directory.GetFiles dir |> Array.sort |> Array.map (fun f -> Path.GetFileName f, bytesOf f)

let private klf (args: string list) = CliTests.klfWithin 600000 args

let private strategiesJson (dir: string) =
    let j = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))
    j["strategies"].ToJsonString()

[<Tests>]
let tests =
    testSequenced <| testList "experiment" [
        test "every stateful strategy, interrupted after task 2 and resumed in a fresh session, ends bit-identical to an uninterrupted run" {
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder(tokDir ())
            let seq = sequence ()
            let makeModel () =
                torch.manual_seed 5L |> ignore
                new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize)) :> ILanguageModel
            let options = TrainerOptions(BatchSize = 4, MaxSteps = 4, Seed = 2, MaxLength = 160, Optimizer = OptimizerOptions(LearningRate = 5e-3, WarmupSteps = 1))
            let dir = Directory.CreateTempSubdirectory("klf-resume-").FullName
            try
                let rkif = RecurrentKifStrategy.recurrentKifWith "rkif" { RecurrentKifSettings.full with InnerSteps = 2; OuterSteps = 1 }
                let rkifLora = RecurrentKifStrategy.recurrentKifWith "rkif-lora-across" { RecurrentKifSettings.lora 4 with InnerSteps = 2; OuterSteps = 1; OuterAcrossTasks = true }
                let bestKif = KifStrategy.kifWith "kif-best" KifSettings.reference
                for strategy in [ KifStrategy.kif; KifStrategy.kifLora 4; IncrementalLora.oLora 4; Regularizers.ewc; KifStrategy.kifReplay; rkif; rkifLora; bestKif ] do
                    let whole = Path.Combine(dir, strategy.Name + "-whole")
                    let cut = Path.Combine(dir, strategy.Name + "-cut")
                    // Best-validation checkpoints (every 2 steps) for the kif-best run and Recurrent-KIF.
                    let control = { RunControl.none with BestValidation = (strategy.Name = "kif-best" || strategy.Name.StartsWith "rkif"); EvalEvery = 2 }
                    let full = Continual.execute { control with StateDir = Some whole } makeModel tok options strategy seq
                    let crash = { control with StateDir = Some cut; OnTask = fun j _ _ -> if j = 2 then raise SimulatedCrash }
                    Expect.throwsT<SimulatedCrash> (fun () -> Continual.execute crash makeModel tok options strategy seq |> ignore) "the first attempt dies in task 3"
                    Expect.equal (RunState.latest cut |> Option.map fst) (Some 1) "the state after task 2 was kept"
                    let mutable resumedAt = -1
                    let resumed = Continual.execute { control with StateDir = Some cut; OnResume = fun n -> resumedAt <- n } makeModel tok options strategy seq
                    Expect.equal resumedAt 2 $"{strategy.Name}: resumed after task 2"
                    // NaN (not measured) compares unequal to itself: compare the bit patterns.
                    let bits (m: AccuracyMatrix) = m.ToRows() |> Array.map (Array.map BitConverter.DoubleToInt64Bits)
                    Expect.equal (bits resumed.Matrix) (bits full.Matrix) $"{strategy.Name}: same matrix"
                    let a, b = finalState whole, finalState cut
                    Expect.equal (Array.map fst a) (Array.map fst b) $"{strategy.Name}: same state files"
                    for (name, x), (_, y) in Array.zip a b do
                        Expect.isTrue (x = y) $"{strategy.Name}: {name} is bit-identical"
            finally
                Directory.Delete(dir, true)
        }

        test "klf run killed (SIGKILL) after task 2 and rerun with the same command gives the uninterrupted metrics.json and weights; shards merged by klf report give it too" {
            let dir = Directory.CreateTempSubdirectory("klf-kill-").FullName
            try
                let args outDir extra =
                    [ "run"; "--preset"; "llama-tiny"; "--tokenizer"; tokDir (); "--tasks"; "dbpedia,amazon,agnews"
                      "--strategies"; "kif,inclora"; "--train-examples"; "16"; "--test-examples"; "6"; "--steps"; "6"; "--batch"; "4"
                      "--lr"; "5e-3"; "--warmup"; "1"; "--max-length"; "160"; "--no-fwt"; "--out"; outDir ] @ extra
                let whole = Path.Combine(dir, "whole")
                let code, out = klf (args whole [])
                Expect.equal code 0 out
                // Kill the second attempt as soon as the state after task 2 of inclora exists.
                let cut = Path.Combine(dir, "cut")
                let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
                for a in CliTests.klfDll.Value :: args cut [] do psi.ArgumentList.Add a
                psi.Environment.Remove "LD_LIBRARY_PATH" |> ignore
                use p = Process.Start psi
                p.OutputDataReceived.Add ignore
                p.ErrorDataReceived.Add ignore
                p.BeginOutputReadLine()
                p.BeginErrorReadLine()
                let marker = Path.Combine(cut, "runs", "custom", "seed-1", "inclora", "state", "task-02")
                let sw = Stopwatch.StartNew()
                while not (Directory.Exists marker) && not p.HasExited && sw.Elapsed.TotalMinutes < 5.0 do
                    Threading.Thread.Sleep 20
                Expect.isFalse p.HasExited "still running when task 2's state appears"
                p.Kill true
                p.WaitForExit()
                Expect.isFalse (File.Exists(Path.Combine(cut, "metrics.json"))) "no metrics.json from the killed run"
                let code, out = klf (args cut [])
                Expect.equal code 0 out
                Expect.stringContains out "kif seed 1: already finished" "the finished run is skipped"
                Expect.stringContains out "inclora seed 1: resuming after task 2" "inclora continues after task 2"
                Expect.equal (strategiesJson cut) (strategiesJson whole) "same matrices and metrics"
                for s in [ "kif"; "inclora" ] do
                    let fa = finalState (Path.Combine(whole, "runs", "custom", "seed-1", s))
                    let fb = finalState (Path.Combine(cut, "runs", "custom", "seed-1", s))
                    for (name, x), (_, y) in Array.zip fa fb do Expect.isTrue (x = y) $"{s}: {name} bit-identical"
                    let curve (root: string) = File.ReadAllBytes(Path.Combine(root, "runs", "custom", "seed-1", s, TrainingCurves.FileName))
                    Expect.isTrue (curve cut = curve whole) $"{s}: loss.csv of the resumed run equals the uninterrupted one"
                let points = TrainingCurves.load (Path.Combine(cut, "runs", "custom", "seed-1", "inclora", TrainingCurves.FileName))
                Expect.equal (points |> List.map (fun p -> p.TaskIndex, p.Step)) [ for j in 0 .. 2 do for st in 1 .. 6 -> j, st ] "one row per step of every task"
                Expect.isTrue (points |> List.forall (fun p -> Double.IsFinite p.Loss && p.Loss > 0.0)) "losses are recorded"
                // The manifest records what a run needs to be reproduced.
                let m = JsonNode.Parse(File.ReadAllText(Path.Combine(cut, "runs", "custom", "seed-1", "kif", "manifest.json")))
                Expect.equal (m["seed"].GetValue<int>()) 1 "seed"
                Expect.equal [ for t in m["tasks"].AsArray() -> t.GetValue<string>() ] [ "dbpedia"; "amazon"; "agnews" ] "task order"
                Expect.isNotNull (m["packages"]["TorchSharp"]) "package versions"
                Expect.isNotNull (m["revision"]) "source revision"
                let config = m["config"]
                Expect.equal (config["steps"].GetValue<int>()) 6 "settings"
                // Resuming with other settings is refused, naming the manifest.
                let code, out = klf (args cut [] |> List.map (fun a -> if a = "6" then "7" else a))
                Expect.equal code 1 out
                Expect.stringContains out "manifest.json" "names the file"
                Expect.stringContains out "other settings" "says why"
                // Two shards in two folders, merged by klf report, give the same metrics.json.
                let s1, s2, merged = Path.Combine(dir, "s1"), Path.Combine(dir, "s2"), Path.Combine(dir, "merged")
                let code, out = klf (args s1 [ "--shard"; "1/2" ])
                Expect.equal code 0 out
                Expect.stringContains out "1 of 2 runs are not in" "a shard knows it is partial"
                Expect.isFalse (File.Exists(Path.Combine(s1, "metrics.json"))) "no metrics from a partial shard"
                let code, out = klf (args s2 [ "--shard"; "2/2" ])
                Expect.equal code 0 out
                let code, out = klf [ "report"; s1; s2; "--out"; merged ]
                Expect.equal code 0 out
                Expect.equal (strategiesJson merged) (strategiesJson whole) "shards merge into the whole experiment's metrics"
                Expect.isTrue (File.Exists(Path.Combine(merged, "report.md"))) "report written"
            finally
                Directory.Delete(dir, true)
        }

        test "a config file in JSON or YAML gives the same experiment; unknown keys and bad values name the file" {
            let dir = Directory.CreateTempSubdirectory("klf-config-").FullName
            try
                let yaml = Path.Combine(dir, "exp.yaml")
                File.WriteAllText(yaml, "preset: llama-tiny\ntokenizer: tok\ntasks: [dbpedia, amazon]\nstrategies:\n  - seqft\n  - kif\nseeds: [1, 2, 3]\ntrain-examples: 50\nlr: 0.003\ntruncation: start\nfwt: false\n")
                let json = Path.Combine(dir, "exp.json")
                File.WriteAllText(json, """{ "preset": "llama-tiny", "tokenizer": "tok", "tasks": "dbpedia,amazon", "strategies": ["seqft", "kif"], "seeds": [1, 2, 3], "train-examples": 50, "lr": 3e-3, "truncation": "start", "fwt": false }""")
                let a, b = ExperimentSpec.load yaml, ExperimentSpec.load json
                Expect.equal a b "same spec"
                Expect.equal a.Seeds [ 1; 2; 3 ] "seeds"
                Expect.equal a.Model (Preset "llama-tiny") "model"
                Expect.equal a.TestExamples ExperimentSpec.defaults.TestExamples "unset keys keep the defaults"
                Expect.equal a.Truncation Klf.Training.PromptTruncation.DropStart "truncation"
                Expect.equal ExperimentSpec.defaults.Truncation Klf.Training.PromptTruncation.DropMiddle "prompts lose their middle by default"
                Expect.equal (Experiment.trainerOptions a 1).Truncation Klf.Training.PromptTruncation.DropStart "the trainer cuts as the spec says"
                Expect.equal (ExperimentSpec.ofJson "round trip" (ExperimentSpec.toJson a)) a "toJson round-trips"
                Expect.equal a.Tokenizer (Some(Path.Combine(dir, "tok"))) "relative paths are relative to the config's folder"
                File.WriteAllText(yaml, "preset: llama-tiny\nstrategies:\n  - seqft\n  - {name: kif, top: 0.3, lambda: {shared: 0.5}}\n  - {name: kif, gamma: [0.5, 0.7, 0.9]}\nvalidation-examples: 20\ndecay-on: matrices\n")
                let c = ExperimentSpec.load yaml
                Expect.equal (ExperimentSpec.labels c) [ "seqft"; "kif(top=0.3,lambda.shared=0.5)"; "kif(gamma=0.5)"; "kif(gamma=0.7)"; "kif(gamma=0.9)" ] "settings and a sweep"
                Expect.equal (c.ValidationExamples, c.DecayOn) (20, Klf.Training.WeightDecayScope.Matrices) "validation and decay keys"
                Expect.equal (ExperimentSpec.ofJson "round trip" (ExperimentSpec.toJson c)) c "strategy settings round-trip"
                File.WriteAllText(yaml, "strategies:\n  - {name: kif, lambda: {sharred: 0.5}}\n")
                let e = Expect.throwsC (fun () -> ExperimentSpec.load yaml |> ignore) id
                for part in [ yaml; "kif"; "lambda.sharred" ] do Expect.stringContains e.Message part $"a strategy setting's error names {part}"
                File.WriteAllText(yaml, "preset: llama-tiny\ntrain-exampels: 5\n")
                let e = Expect.throwsC (fun () -> ExperimentSpec.load yaml |> ignore) id
                Expect.stringContains e.Message yaml "names the file"
                Expect.stringContains e.Message "train-exampels" "names the key"
                File.WriteAllText(yaml, "steps: many\n")
                let e = Expect.throwsC (fun () -> ExperimentSpec.load yaml |> ignore) id
                Expect.stringContains e.Message "steps" "names the bad value's key"
                File.WriteAllText(yaml, "truncation: sideways\n")
                let e = Expect.throwsC (fun () -> ExperimentSpec.load yaml |> ignore) id
                Expect.stringContains e.Message $"{yaml}: truncation: \"sideways\"" "names the file, the key and the value"
            finally
                Directory.Delete(dir, true)
        }
    
        test "klf run with strategy settings and a sweep: one run per value, labels in folders, metrics.json and report.md; manifests record settings and kept steps; changed settings are refused; bad keys fail before any work" {
            let dir = Directory.CreateTempSubdirectory("klf-sweep-").FullName
            try
                let out = Path.Combine(dir, "run")
                let args strategies =
                    [ "run"; "--preset"; "llama-tiny"; "--tokenizer"; tokDir (); "--tasks"; "dbpedia,amazon"; "--strategies"; strategies
                      "--train-examples"; "12"; "--validation-examples"; "4"; "--eval-every"; "2"; "--test-examples"; "4"; "--steps"; "4"; "--batch"; "4"
                      "--lr"; "5e-3"; "--warmup"; "1"; "--max-length"; "160"; "--no-fwt"; "--out"; out ]
                let code, text = klf (args "seqft,kif(top=[0.2,0.5]),rkif(inner-steps=2,outer-steps=1)")
                Expect.equal code 0 text
                let labels = [ "seqft"; "kif(top=0.2)"; "kif(top=0.5)"; "rkif(inner-steps=2,outer-steps=1)" ]
                let j = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "metrics.json")))
                Expect.equal [ for KeyValue(k, _) in j["strategies"].AsObject() -> k ] labels "metrics.json keys are the labels"
                let report = File.ReadAllText(Path.Combine(out, "report.md"))
                for l in labels do Expect.stringContains report l $"report.md names {l}"
                let runDir = Path.Combine(out, "runs", "custom", "seed-1", "kif-top-0.5")
                let m = JsonNode.Parse(File.ReadAllText(Path.Combine(runDir, "manifest.json")))
                Expect.equal (m["strategy-settings"].ToJsonString()) """{"name":"kif","top":0.5}""" "the run's settings"
                let training = m["training"].AsArray()
                Expect.equal training.Count 2 "one record per task"
                for t in training do
                    Expect.equal [ for p in t["validation"].AsArray() -> p.[0].GetValue<int>() ] [ 2; 4 ] "validation every 2 steps and at the end"
                    Expect.isTrue (List.contains (t["kept-step"].GetValue<int>()) [ 2; 4 ]) "the kept step is a measured one"
                let rk = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "runs", "custom", "seed-1", "rkif-inner-steps-2-outer-steps-1", "manifest.json")))
                Expect.equal (rk["training"].[1].["interleaved-steps"].GetValue<int>()) 2 "rkif: M = 1 memory step after each of the 2 rounds of task 2"
                Expect.isTrue (File.Exists(Path.Combine(out, "runs", "custom", "seed-1", "rkif-inner-steps-2-outer-steps-1", RecurrentKifStrategy.MergesFile))) "rkif writes its merges"
                // The same label with other settings on the same folder is refused.
                let code, text = klf (args "kif(label=kif-top-0.2-alias,top=0.2)")
                Expect.equal code 0 text
                let code, text = klf (args "kif(label=kif-top-0.2-alias,top=0.3)")
                Expect.equal code 1 text
                Expect.stringContains text "kif-top-0.2-alias was started with the settings" "names the strategy and its settings"
                // A bad key fails before any work.
                let fresh = Path.Combine(dir, "fresh")
                let code, text = klf ((args "kif(topp=0.3)" |> List.takeWhile ((<>) "--out")) @ [ "--out"; fresh ])
                Expect.equal code 1 text
                for part in [ "--strategies"; "topp"; "known:" ] do Expect.stringContains text part $"names {part}"
                Expect.isFalse (Directory.Exists fresh) "nothing written"
            finally
                Directory.Delete(dir, true)
        }

        test "a fusion rule and a strategy written in an .fsx script run through klf run --config next to reference KIF" {
            CliTests.feed.Value |> ignore
            let dir = Directory.CreateTempSubdirectory("klf-custom-").FullName
            try
                let script = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "src", "Klf.Scripts", "experiments", "custom-strategy.fsx"))
                let args = [ "fsi"; "--quiet"; script; "--steps"; "2"; "--train-examples"; "8"; "--validation-examples"; "4"; "--test-examples"; "4"; "--out"; dir ]
                let code, out = NativeTests.run "dotnet" args 600000
                Expect.equal code 0 out
                Expect.stringContains out "Between" "the fusion laws ran on the rule"
                let j = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))
                let names = [ for KeyValue(k, _) in j["strategies"].AsObject() -> k ] |> Set.ofList
                Expect.equal names (set [ "seqft"; "kif"; "kif-ratio"; "kif-keep-new" ]) "the registered rule and strategy ran beside KIF"
                let m = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "runs", "standard-order1", "seed-1", "kif-ratio", "manifest.json")))
                Expect.stringContains (m["strategy-settings"].ToJsonString()) "\"kif-ratio\"" "its settings name the rule"
            finally
                Directory.Delete(dir, true)
        }

        test "the fusion-ceiling script scores every fusion of two trained models on both tasks" {
            CliTests.feed.Value |> ignore
            let script = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "src", "Klf.Scripts", "experiments", "fusion-ceiling.fsx"))
            let code, out = NativeTests.run "dotnet" [ "fsi"; "--quiet"; script; "a=amazon"; "b=agnews"; "steps=2"; "test=4" ] 600000
            Expect.equal code 0 out
            let rows =
                out.Split('\n')
                |> Array.filter (fun l -> l.StartsWith "| " && not (l.StartsWith "| fusion") && not (l.StartsWith "| ---"))
                |> Array.map (fun l -> l.Split('|', StringSplitOptions.TrimEntries))
            Expect.equal rows.Length (5 + 8 + 1) $"the line, the swaps and the oracle:\n{out}"
            for r in rows do
                let a, b, sum = float r[2], float r[3], float r[4]
                Expect.isTrue (a >= 0.0 && a <= 100.0 && b >= 0.0 && b <= 100.0) $"scores in percent: {r[1]}"
                Expect.isLessThanOrEqual (abs (sum - a - b)) 0.11 "sum column (one decimal each)"
            Expect.stringContains out "| oracle λ per group (embedding" "the oracle names its choice per group"
        }

        test "the Long Sequence order-1 script (KIF vs SeqFT vs MTL) runs under dotnet fsi on its first two tasks and writes the metrics contract" {
            CliTests.feed.Value |> ignore
            let dir = Directory.CreateTempSubdirectory("klf-ls1-").FullName
            try
                let script = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "src", "Klf.Scripts", "experiments", "long-sequence-order1.fsx"))
                let tokArg = "tokenizer=" + tokDir ()
                let args = [ "fsi"; "--quiet"; script; tokArg; "preset=llama-tiny"; "tasks=2"; "train=8"; "test=4"; "steps=2"; "batch=4"; "out=" + dir ]
                let code, out = NativeTests.run "dotnet" args 600000
                Expect.equal code 0 out
                Expect.stringContains out "mnli -> cb" "the order's first two tasks"
                let j = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))
                Expect.equal [ for t in j["tasks"].AsArray() -> t.GetValue<string>() ] [ "mnli"; "cb" ] "tasks"
                let names = [ for KeyValue(k, _) in j["strategies"].AsObject() -> k ]
                Expect.equal names [ "seqft"; "kif"; "mtl" ] "the three strategies"
                let strategies = j["strategies"]
                for n in names do
                    Expect.isNotNull (strategies[n]["FWT"]) $"{n}: FWT measured from the single-task runs"
                Expect.isTrue (File.Exists(Path.Combine(dir, "report.md"))) "report"
                Expect.isTrue (File.Exists(Path.Combine(dir, "heatmap-kif.png"))) "plots render from a script"
            finally
                Directory.Delete(dir, true)
        }
    
        test "klf run with no model, preset or config runs the embedded default (pretrained klf-tiny on the Standard CL excerpt) and says where it wrote" {
            let dir = Directory.CreateTempSubdirectory("klf-default-").FullName
            try
                // The default's own settings except a few steps and examples, so the test stays short.
                let code, out = klf [ "run"; "--steps"; "2"; "--train-examples"; "8"; "--validation-examples"; "4"; "--test-examples"; "4"; "--out"; dir ]
                Expect.equal code 0 out
                Expect.stringContains out "dbpedia -> amazon -> yahoo -> agnews" "the Standard CL order"
                Expect.stringContains out ("run folder: " + dir) "says where it writes"
                let j = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))
                let strategies = j["strategies"].AsObject()
                Expect.equal [ for KeyValue(k, _) in strategies -> k ] [ "seqft"; "kif"; "mtl" ] "SeqFT, reference KIF and MTL"
                let kif = strategies["kif"]
                Expect.isNotNull (kif["FWT"]) "FWT from the single-task runs"
                let facts = [ for f in j["task-facts"].AsArray() -> f["task"].GetValue<string>(), f["metric"].GetValue<string>(), f["labels"].GetValue<int>() ]
                Expect.equal facts [ "dbpedia", "exact-match", 14; "amazon", "exact-match", 5; "yahoo", "exact-match", 10; "agnews", "exact-match", 4 ] "each task's metric and labels"
                let chance = (100.0 / 14.0 + 20.0 + 10.0 + 25.0) / 4.0
                Expect.floatClose Accuracy.high (j["chance"].GetValue<float>()) chance "the stream's average chance"
                Expect.stringContains out "dbpedia exact-match, 14 labels, chance 7.1" "the terminal states each task's metric and chance"
                Expect.stringContains out (sprintf "chance %.1f" chance |> fun t -> t.Replace("chance ", "")) "the chance row"
                Expect.stringContains out "single-task 1 (dbpedia) seed 1" "single-task runs name their task"
                let md = File.ReadAllText(Path.Combine(dir, "report.md"))
                Expect.stringContains md "| yahoo | exact-match | 10 | 10.0 |" "report.md states the chance per task"
                let curve = Path.Combine(dir, "runs", "standard-order1", "seed-1", "kif", TrainingCurves.FileName)
                let points = TrainingCurves.load curve
                Expect.equal (points |> List.map (fun p -> p.Task) |> List.distinct) [ "dbpedia"; "amazon"; "yahoo"; "agnews" ] "every task's curve"
                Expect.equal (points |> List.filter (fun p -> p.ValidationLoss.IsSome) |> List.length) 4 "validation loss at the last step of each task (every 10 steps, 2 steps run)"
                Expect.equal (points |> List.filter (fun p -> p.Kept) |> List.length) 4 "each task marks the kept step"
                Expect.stringContains md "](training-loss-kif.png)" "the report plots the curves"
                Expect.stringContains md "runs/standard-order1/seed-1/kif/loss.csv" "and links the CSV"
                Expect.isTrue (File.Exists(Path.Combine(dir, "training-loss-kif.png"))) "the plot is written"
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "experiment.json")))
                let config = exp["config"]
                let model = config["model"].GetValue<string>()
                Expect.stringContains model "klf-tiny" "the embedded model"
                Expect.isTrue (File.Exists(Path.Combine(dir, "report.md"))) "report"
            finally
                Directory.Delete(dir, true)
        }

        test "klf run --embedded minilm runs the MiniLM default (imported from its package beside klf): SeqFT, KIF, Recurrent-KIF and MTL, zero-shot and single-task scores" {
            let dir = Directory.CreateTempSubdirectory("klf-minilm-").FullName
            try
                let code, out = klf [ "run"; "--embedded"; "minilm"; "--steps"; "2"; "--train-examples"; "8"; "--validation-examples"; "4"; "--test-examples"; "8"; "--out"; dir ]
                Expect.equal code 0 out
                Expect.stringContains out "dbpedia -> amazon -> yahoo -> agnews" "the Standard CL order"
                let j = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))
                Expect.equal [ for KeyValue(k, _) in j["strategies"].AsObject() -> k ] [ "seqft"; "kif"; "rkif"; "mtl" ] "SeqFT, reference KIF, Recurrent-KIF and MTL"
                let zero = [ for x in j["zero-shot"].AsArray() -> x.GetValue<float>() ]
                Expect.equal zero.Length 4 "a zero-shot score per task"
                Expect.isGreaterThan (List.average zero) (j["chance"].GetValue<float>()) "the pretrained encoder is above chance before any training"
                Expect.equal (j["single-task"].AsArray().Count) 4 "a single-task score per task"
                Expect.stringContains out "zero-shot: dbpedia" "the terminal prints the zero-shot scores"
                let md = File.ReadAllText(Path.Combine(dir, "report.md"))
                Expect.stringContains md "| task | metric | labels | chance | zero-shot | single-task ã_i |" "the report's tasks table has both columns"
                let config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "experiment.json")))["config"]
                Expect.stringContains (config["model"].GetValue<string>()) "minilm-l6" "the imported model"
                Expect.isTrue (config["drop-instruction"].GetValue<bool>()) "inputs without their instruction"
                let manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "runs", "standard-order1", "seed-1", "kif", "manifest.json")))
                let weightsHash = manifest.["environment"].["model-files"].["model.safetensors"]
                Expect.isNotNull weightsHash "the run records the imported weights' hash"
                // A Recurrent-KIF run stopped after task 3 (its replay memory holds examples of three tasks
                // with their own label sets) resumes to the uninterrupted rows.
                let rkif = Path.Combine(dir, "runs", "standard-order1", "seed-1", "rkif")
                let rows () =
                    let result = JsonNode.Parse(File.ReadAllText(Path.Combine(rkif, "result.json")))
                    result["rows"].ToJsonString()
                let before = rows ()
                File.Delete(Path.Combine(rkif, "result.json"))
                Directory.Delete(Path.Combine(rkif, "state", "task-04"), true)
                let code, out = klf [ "run"; "--embedded"; "minilm"; "--steps"; "2"; "--train-examples"; "8"; "--validation-examples"; "4"; "--test-examples"; "8"; "--out"; dir ]
                Expect.equal code 0 out
                Expect.stringContains out "rkif seed 1: resuming after task 3" "resumed"
                Expect.equal (rows ()) before "the resumed run's rows equal the uninterrupted ones"
                let code, out = klf [ "run"; "--embedded"; "minilm"; "--model"; dir ]
                Expect.equal code 1 out
                Expect.stringContains out "--embedded" "--embedded with --model is refused, naming the flag"
                let code, out = klf [ "run"; "--embedded"; "bert" ]
                Expect.equal code 1 out
                Expect.stringContains out "tiny or minilm" "an unknown default lists the known ones"
            finally
                Directory.Delete(dir, true)
        }
    ]
