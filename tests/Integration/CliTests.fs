/// The `klf` command line, run as a user runs it (the built klf.dll in a child process).
module CliTests

open System
open System.IO
open Expecto

/// The klf.dll built beside this test program (same configuration); the other CLI test files use it too.
let klfDll =
    lazy (
        let config = DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent.Name // bin/<config>/net10.0
        let p = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "src", "Klf.Scripts", "bin", config, "net10.0", "klf.dll"))
        if not (File.Exists p) then failtestf "klf.dll not found at %s: build the solution (./test.sh does)" p
        p)

/// The local package feed (artifacts/nuget) with every Klf package packed from this
/// checkout by scripts/pack.sh, made once per test process; the shipped .fsx scripts resolve their
/// `#r "nuget: ..."` references from it.
let feed =
    lazy (
        let repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))
        let code, out = NativeTests.run "bash" [ Path.Combine(repo, "scripts", "pack.sh") ] 900000
        if code <> 0 then failtestf "scripts/pack.sh failed (%d):\n%s" code out
        let dir = out.Split('\n', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> Array.last
        for id in [ "Klf.Tokenizers"; "Klf.Core"; "Klf.Pipelines"; "Klf.Laws"; "Klf.Reports"; "Klf.Cli" ] do
            if Directory.GetFiles(dir, id + ".*.nupkg").Length = 0 then failtestf "no %s package in %s" id dir
        dir)

/// Runs klf.dll in a child process with a timeout; returns exit code and stdout + stderr.
let klfWithin (timeoutMs: int) (args: string list) = NativeTests.run "dotnet" (klfDll.Value :: args) timeoutMs

let private klf (args: string list) = klfWithin 300000 args

[<Tests>]
let tests =
    testSequenced <| testList "cli" [
        test "--help lists the commands that exist" {
            let code, out = klf [ "--help" ]
            Expect.equal code 0 out
            for c in [ "info"; "init"; "presets"; "train"; "generate"; "run"; "list"; "report"; "bench" ] do
                Expect.stringContains out $"  {c} " $"lists {c}"
        }

        test "klf import sentence-transformers writes a model folder that klf eval scores and klf generate refuses in one line" {
            let dir = Directory.CreateTempSubdirectory("klf-st-import-").FullName
            try
                let model = Path.Combine(dir, "arctic")
                let assembly = Klf.Checkpoints.SentenceTransformersPackage.ArcticXs.Locate [ AppContext.BaseDirectory ]
                let code, out = klf [ "import"; "sentence-transformers"; "arcticxs"; "--assembly"; assembly; "--out"; model ]
                Expect.equal code 0 out
                Expect.stringContains out "Snowflake/snowflake-arctic-embed-xs" "names the model"
                Expect.stringContains out "Cls pooling" "and its pooling"
                for f in [ "config.json"; "model.safetensors"; "vocab.txt"; "modules.json"; "1_Pooling/config.json"; "manifest.json" ] do
                    Expect.isTrue (File.Exists(Path.Combine(model, f))) $"{f} written"
                let bench = Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")
                let scores = Path.Combine(dir, "scores.json")
                let code, out = klf [ "eval"; "--model"; model; "--benchmark"; bench; "--tasks"; "agnews"; "--n"; "20"; "--drop-instruction"; "true"; "--out"; scores ]
                Expect.equal code 0 out
                let json = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText scores)
                let score = json["tasks"].[0].["score"].GetValue<float>()
                Expect.isGreaterThan score 25.0 "zero-shot above agnews' chance of 25"
                let trained = Path.Combine(dir, "trained")
                let code, out = klf [ "train"; "--model"; model; "--benchmark"; bench; "--task"; "agnews"; "--train-examples"; "16"; "--heldout-examples"; "8"; "--steps"; "2"
                                      "--batch"; "4"; "--max-length"; "64"; "--drop-instruction"; "true"; "--importance"; Path.Combine(dir, "importance.json"); "--out"; trained ]
                Expect.equal code 0 out
                Expect.stringContains out "importance    101 full units" "KIF's whole-tensor units of the encoder"
                for f in [ "modules.json"; "1_Pooling/config.json"; "vocab.txt" ] do
                    Expect.isTrue (File.Exists(Path.Combine(trained, f))) $"the trained checkpoint keeps {f}"
                let code, out = klf [ "eval"; "--model"; trained; "--benchmark"; bench; "--tasks"; "agnews"; "--n"; "8"; "--drop-instruction"; "true" ]
                Expect.equal code 0 out
                let code, out = klf [ "generate"; "--model"; model; "--prompt"; "hi" ]
                Expect.equal code 1 out
                Expect.stringContains out "klf: error: a BERT sentence encoder does not generate text" "one line saying why"
                Expect.isFalse (out.Contains "   at ") "no stack trace"
                let code, out = klf [ "import"; "sentence-transformers"; "bert-large"; "--out"; Path.Combine(dir, "x") ]
                Expect.equal code 1 out
                Expect.stringContains out "minilm" "an unknown package lists the known ones"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "x"))) "nothing written"
            finally Directory.Delete(dir, true)
        }

        test "bench --quick writes bench.json with the sections asked for; an unknown section is named" {
            let dir = Directory.CreateTempSubdirectory("klf-bench-").FullName
            try
                let code, out = klfWithin 600000 [ "bench"; "--quick"; "true"; "--sections"; "matmul,fusion,generation"; "--out"; dir ]
                Expect.equal code 0 out
                for heading in [ "matmul peak"; "fusion (bytes"; "greedy decoding" ] do Expect.stringContains out heading $"prints {heading}"
                let json = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "bench.json")))
                Expect.equal (json["format"].GetValue<string>()) "klf-bench/1" "format"
                Expect.isGreaterThan ((json["matmul_gflops"]["gflops"]).GetValue<float>()) 0.0 "a matmul rate"
                let fusion = json["fusion"].AsArray() |> List.ofSeq
                Expect.equal fusion.Length 20 "seven rules, and three against a separate base, on whole-tensor and neuron units"
                let withBase = fusion |> List.filter (fun f -> f["base"].GetValue<string>() = "pre-trained") |> List.map (fun f -> f["rule"].GetValue<string>())
                Expect.equal (List.sort withBase) (List.sort [ "magmax"; "magmax"; "task-arithmetic"; "task-arithmetic"; "ties"; "ties" ]) "the task-vector rules with a base"
                for f in fusion do Expect.isGreaterThan (f["ratio"].GetValue<float>()) 0.0 (f["rule"].GetValue<string>())
                let generation = json["generation"].AsArray() |> List.ofSeq
                Expect.equal generation.Length 4 "two batch sizes, two lengths"
                // A figure, not a timed test: on a loaded machine the cached run can come out slower.
                for g in generation do Expect.isTrue (Double.IsFinite(g["speedup"].GetValue<float>()) && g["speedup"].GetValue<float>() > 0.0) "a speed-up measured"
                Expect.isEmpty (json["train"].AsArray()) "train was not asked for"
                Expect.isTrue (File.Exists(Path.Combine(dir, "bench.txt"))) "the tables too"
                let code, out = klf [ "bench"; "--sections"; "fusion,nope" ]
                Expect.equal code 1 out
                Expect.stringContains out "nope" "names the unknown section"
            finally
                Directory.Delete(dir, true)
        }

        test "init, train on real agnews examples, generate with exact match; the checkpoint verifies" {
            let tokDir = TokenizerTests.trained.Value.LlamaFolder
            let dir = Directory.CreateTempSubdirectory("klf-cli-").FullName
            try
                let code, out = klf [ "init"; "--preset"; "llama-tiny"; "--vocab-size"; "2000"; "--out"; Path.Combine(dir, "init") ]
                Expect.equal code 0 out
                let ck = Path.Combine(dir, "ck")
                let code, out =
                    klf [ "train"; "--model"; Path.Combine(dir, "init"); "--tokenizer"; tokDir; "--task"; "agnews"
                          "--train-examples"; "64"; "--heldout-examples"; "16"; "--steps"; "12"; "--lr"; "3e-3"; "--warmup"; "2"
                          "--max-length"; "192"; "--save-dtype"; "bf16"; "--out"; ck ]
                Expect.equal code 0 out
                Expect.stringContains out "held-out loss" "reports losses"
                let header, _ = Klf.Formats.SafeTensors.ReadHeader(Path.Combine(ck, "model.safetensors")).ToTuple()
                Expect.all header (fun t -> t.DType = "BF16") "--save-dtype bf16 stores every tensor as bf16"
                Expect.stringContains out "tokens/s" "reports throughput"
                let manifest = Klf.Checkpoints.Checkpoint.ReadManifest ck
                Expect.equal (manifest.Extra["task"].GetValue<string>()) "agnews" "manifest records the task"
                Expect.isTrue (File.Exists(Path.Combine(ck, "tokenizer.model"))) "tokenizer copied beside the weights"
                // A Hugging Face folder: generation and tokenizer configs other tools read, consistent with the tokenizer.
                let gen = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ck, "generation_config.json")))
                let tok = Klf.Tokenizers.TokenizerLoader.FromFolder tokDir
                Expect.equal (gen["eos_token_id"].GetValue<int>()) tok.EosId "generation_config: eos"
                let tc = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ck, "tokenizer_config.json")))
                Expect.equal (tc["tokenizer_class"].GetValue<string>()) "LlamaTokenizer" "tokenizer_config: class"
                Expect.equal (tc["eos_token"].GetValue<string>()) "</s>" "tokenizer_config: eos token text"
                let sm = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ck, "special_tokens_map.json")))
                Expect.equal (sm["unk_token"].GetValue<string>()) "<unk>" "special_tokens_map: unk"
                for f in [ "generation_config.json"; "tokenizer_config.json"; "special_tokens_map.json" ] do
                    Expect.isTrue (manifest.Files.ContainsKey f) $"{f} is in the manifest (hashed)"
                let again = Klf.Tokenizers.TokenizerLoader.FromFolder ck
                let line = "Business news: stocks rose sharply on Tuesday."
                Expect.equal (again.Encode line) (tok.Encode line) "the saved folder tokenizes as the original"
                Expect.equal (again.EosId, again.BosId, again.PadId, again.UnkId) (tok.EosId, tok.BosId, tok.PadId, tok.UnkId) "same special ids"
                let code, out = klf [ "generate"; "--model"; ck; "--task"; "agnews"; "--n"; "6"; "--max-new-tokens"; "4" ]
                Expect.equal code 0 out
                Expect.stringContains out "exact match" "reports exact match"
            finally
                Directory.Delete(dir, true)
        }

        test "train --lora-r with --lora-alpha, --lora-dropout and --lora-targets writes them to adapter_config.json; out-of-range values are refused" {
            let dir = Directory.CreateTempSubdirectory("klf-cli-lora-").FullName
            try
                let out = Path.Combine(dir, "adapter")
                let args extra =
                    [ "train"; "--preset"; "llama-tiny"; "--tokenizer"; TokenizerTests.trained.Value.LlamaFolder; "--task"; "agnews"
                      "--train-examples"; "8"; "--heldout-examples"; "4"; "--steps"; "1"; "--warmup"; "0"; "--max-length"; "128"; "--lora-r"; "2" ] @ extra
                let code, text = klf (args [ "--lora-alpha"; "6"; "--lora-dropout"; "0.1"; "--lora-targets"; "q_proj,o_proj"; "--out"; out ])
                Expect.equal code 0 text
                let c = Klf.Adapters.PeftAdapterConfig.Read(Path.Combine(out, "adapter_config.json"))
                Expect.equal (c.R, c.Alpha, c.Dropout) (2, 6.0, 0.1) "r, alpha, dropout as given"
                Expect.equal c.TargetModules [| "q_proj"; "o_proj" |] "targets as given"
                let code, text = klf (args [ "--lora-dropout"; "1.5"; "--out"; Path.Combine(dir, "bad") ])
                Expect.notEqual code 0 text
                Expect.stringContains text "--lora-dropout must lie in [0, 1), got 1.5" "names the flag and the value"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "bad"))) "nothing written"
            finally
                Directory.Delete(dir, true)
        }

        test "exit codes: 2 for a command line that does not parse, 1 for a command that fails; run --help states both defaults" {
            let code, out = klf [ "run"; "--no-such-flag" ]
            Expect.equal code 2 out
            Expect.stringContains out "klf: usage:" "a usage error says so"
            Expect.stringContains out "klf run --help" "and where to look"
            let code, out = klf [ "bogus-command" ]
            Expect.equal code 2 out
            let code, out = klf [ "eval"; "--model"; Path.Combine(Path.GetTempPath(), "klf-no-model-" + Guid.NewGuid().ToString("N")); "--tasks"; "agnews" ]
            Expect.equal code 1 out
            Expect.stringContains out "klf: error:" "a failure says so"
            let code, help = klf [ "run"; "--help" ]
            Expect.equal code 0 help
            let d, e = Klf.Pipelines.ExperimentSpec.defaults, Klf.Pipelines.ExperimentSpec.embedded "x"
            let flat = Text.RegularExpressions.Regex.Replace(help, @"\s+", " ")
            Expect.notEqual d.TrainExamples e.TrainExamples "the two defaults of --train-examples differ"
            Expect.stringContains flat $"Default: {d.TrainExamples} with --model or --preset; {e.TrainExamples} in a bare `klf run` (the embedded default)" "--train-examples: both defaults"
            let lr (x: float) = x.ToString(Globalization.CultureInfo.InvariantCulture)
            Expect.stringContains flat $"Default: {lr d.LearningRate} with --model or --preset; {lr e.LearningRate} in a bare `klf run`" "--lr: both defaults"
            // Where both agree (--steps today), one default, stated once.
            let steps =
                if d.Steps = e.Steps then $"Optimizer steps per task. Default: {d.Steps} (a --config file's value when it sets one)."
                else $"Default: {d.Steps} with --model or --preset; {e.Steps} in a bare `klf run`"
            Expect.stringContains flat steps "--steps: its default, or both"
            Expect.isFalse (flat.Contains $"[default: {d.TrainExamples}]") "no single parser default that a bare run does not use"
        }

        test "train rejects an unknown --save-dtype before any work" {
            let dir = Directory.CreateTempSubdirectory("klf-cli-").FullName
            try
                let code, out =
                    klf [ "train"; "--preset"; "llama-tiny"; "--tokenizer"; TokenizerTests.trained.Value.LlamaFolder; "--task"; "agnews"
                          "--steps"; "1"; "--save-dtype"; "fp8"; "--out"; Path.Combine(dir, "ck") ]
                Expect.notEqual code 0 out
                Expect.stringContains out "--save-dtype must be fp32 or bf16, got \"fp8\"" "names the option and the value"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "ck"))) "no checkpoint written"
            finally
                Directory.Delete(dir, true)
        }

        test "the shipped .fsx scripts run under dotnet fsi against the packages of the local feed" {
            feed.Value |> ignore // the scripts reference Klf.Pipelines from the feed
            let scripts = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "src", "Klf.Scripts"))
            let code, out = NativeTests.run "dotnet" [ "fsi"; "--quiet"; Path.Combine(scripts, "experiments", "custom-fusion-rule.fsx") ] 300000
            Expect.equal code 0 out
            Expect.stringContains out "fails (as expected" "the script shows a law catching a rule that breaks it"
            let code, out = NativeTests.run "dotnet" [ "fsi"; "--quiet"; Path.Combine(scripts, "scripts", "quickstart.fsx"); TokenizerTests.trained.Value.LlamaFolder ] 300000
            Expect.equal code 0 out
            Expect.stringContains out "held-out exact match" "quickstart trains and generates"
        }

        test "a script outside the repository tree, with #i the feed and #r \"nuget: Klf.Pipelines\", runs a two-task KIF run" {
            let repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))
            let dir = Directory.CreateTempSubdirectory("klf-user-script-").FullName
            try
                let lit (p: string) = "@\"" + p.Replace("\"", "\"\"") + "\""
                let script = Path.Combine(dir, "two-tasks.fsx")
                File.WriteAllLines(script,
                    [ $"#i \"nuget: {feed.Value}\""
                      "#r \"nuget: Klf.Pipelines\""
                      "open Klf.Training"
                      "open Klf.Pipelines"
                      "let model = " + lit (Path.Combine(repo, "models", "klf-tiny"))
                      "let root = " + lit (Path.Combine(repo, "benchmarks", "long_sequence"))
                      "let tok = Klf.Tokenizers.TokenizerLoader.FromFolder model"
                      "let sequence ="
                      "    TaskSequence.ofOrder root (Orders.load (Orders.fileFor root)) \"standard\" \"order1\""
                      "    |> TaskSequence.take 2 |> TaskSequence.subsample 1 { Train = 12; Test = 6 }"
                      "let make () = Klf.Checkpoints.ModelFolder.Load(model, TorchSharp.torch.CPU)"
                      "let options = TrainerOptions(BatchSize = 4, MaxSteps = 3, Seed = 1, MaxLength = 192)"
                      "let r = Continual.execute RunControl.none make tok options KifStrategy.kif sequence"
                      "printfn \"%s: %d x %d matrix, AP %.1f, from %s\" (String.concat \" -> \" (TaskSequence.names sequence)) r.Matrix.Size r.Matrix.Size r.Summary.AP (typeof<TaskData>.Assembly.Location)" ])
                let code, out = NativeTests.run "dotnet" [ "fsi"; "--quiet"; script ] 600000
                Expect.equal code 0 out
                Expect.stringContains out "dbpedia -> amazon: 2 x 2 matrix, AP" "two tasks of KIF"
                Expect.stringContains (out.ToLowerInvariant()) (Path.Combine("klf.pipelines", "0.1.0", "lib")) "Klf.Pipelines came from the package, not the build output"
                // TorchNative patched (if this system needs it) a copy elsewhere: the package cache stays as shipped.
                let cache = match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages") | p -> p
                for nupkg in Directory.GetFiles(Path.Combine(cache, "torchsharp"), "torchsharp.*.nupkg", SearchOption.AllDirectories) do
                    use zip = IO.Compression.ZipFile.OpenRead nupkg
                    let entry = zip.GetEntry "runtimes/linux-x64/native/libLibTorchSharp.so"
                    let cached = Path.Combine(Path.GetDirectoryName nupkg, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")
                    if not (isNull entry) && File.Exists cached then
                        use s = entry.Open()
                        use m = new MemoryStream()
                        s.CopyTo m
                        Expect.isTrue (m.ToArray() = File.ReadAllBytes cached) $"{cached} is byte for byte the package's"
            finally
                Directory.Delete(dir, true)
        }

        test "run writes metrics.json in the contract's shape (matrix per strategy, AP, FRa, FWT, BWT)" {
            let dir = Directory.CreateTempSubdirectory("klf-run-").FullName
            try
                let code, out =
                    klf [ "run"; "--preset"; "llama-tiny"; "--tokenizer"; TokenizerTests.trained.Value.LlamaFolder; "--tasks"; "dbpedia,agnews"
                          "--strategies"; "seqft,kif"; "--train-examples"; "32"; "--test-examples"; "8"; "--steps"; "8"; "--lr"; "3e-3"; "--out"; dir ]
                Expect.equal code 0 out
                let json = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))
                Expect.equal [ for t in json["tasks"].AsArray() -> t.GetValue<string>() ] [ "dbpedia"; "agnews" ] "tasks in order"
                Expect.equal (json["seed"].GetValue<int>()) 1 "seed"
                for s in [ "seqft"; "kif" ] do
                    let o = json["strategies"].[s]
                    let m = o["matrix"].AsArray()
                    Expect.equal m.Count 2 $"{s}: 2x2 matrix"
                    Expect.isNull (m[0].AsArray()[1]) $"{s}: above the diagonal is null"
                    let last = [ for x in m[1].AsArray() -> x.GetValue<float>() ]
                    Expect.floatClose Accuracy.veryHigh (o["AP"].GetValue<float>()) (List.average last) $"{s}: AP is the mean of the last row"
                    for k in [ "FRa"; "FWT"; "BWT" ] do Expect.isNotNull o[k] $"{s}: {k} present"
                let md = File.ReadAllText(Path.Combine(dir, "report.md"))
                Expect.stringContains md "| strategy | AP | F.Ra | FWT | BWT |" "report.md has the metric table"
                Expect.stringContains md "| after \\ task | dbpedia | agnews |" "report.md has the accuracy matrices"
                for f in [ "heatmap-seqft.png"; "tasks-over-time-seqft.png"; "heatmap-kif.png"; "tasks-over-time-kif.png"; "metrics.png" ] do
                    Expect.stringContains md $"]({f})" $"report.md links {f}"
                    Expect.isGreaterThan (FileInfo(Path.Combine(dir, f)).Length) 1000L $"{f} written beside it"
                Expect.stringContains out "report.md" "says where the report is"
            finally Directory.Delete(dir, true)
        }

        test "list names the benchmark's tasks, orders, strategies and presets" {
            let code, out = klf [ "list" ]
            Expect.equal code 0 out
            Expect.stringContains out "standard/order1: dbpedia -> amazon -> yahoo -> agnews" "the standard order 1"
            for name in [ "kif-lora"; "llama-5m"; "lora-rank1"; "ties"; "agnews" ] do Expect.stringContains out name $"lists {name}"
        }

        test "the C# example, a project referencing the Klf.Core package, drives training and KIF fusion" {
            let project = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "examples", "Klf.Example.CSharp"))
            feed.Value |> ignore
            let out = Directory.CreateTempSubdirectory("klf-example-cs-").FullName
            try
                let code, log = NativeTests.run "dotnet" [ "build"; project; "-c"; "Release"; "--nologo"; "-v"; "q"; "-o"; out ] 900000
                Expect.equal code 0 log
                Expect.isTrue (File.Exists(Path.Combine(out, "Klf.Core.dll"))) "Klf.Core came with the package"
                let code, output = NativeTests.run "dotnet" [ Path.Combine(out, "Klf.Example.CSharp.dll") ] 300000
                Expect.equal code 0 output
                Expect.stringContains output "fusion (kif-static)" "the second task is fused"
                Expect.stringContains output "after both tasks" "evaluates both tasks"
            finally
                Directory.Delete(out, true)
        }

        test "bad input: a clear error naming the folder, exit code 1" {
            let missing = Path.Combine(Path.GetTempPath(), "klf-no-such-model-" + Guid.NewGuid().ToString("N"))
            let code, out = klf [ "generate"; "--model"; missing; "--prompt"; "hi" ]
            Expect.equal code 1 out
            Expect.stringContains out missing "names the folder"
            Expect.stringContains out "klf: error:" "one clear error line"
        }
    ]
