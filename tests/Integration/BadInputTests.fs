/// Bad input and faults: a user's mistake or a broken file costs one clear line and nothing else;
/// a failed write or a non-finite step loses nothing that was complete.
module BadInputTests

open System
open System.Diagnostics
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Formats
open Klf.Checkpoints
open Klf.Models
open Klf.Training
open Klf.Pipelines

let private repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))
let private embedded = Path.Combine(repo, "models", "klf-tiny")

let private klf (args: string list) = CliTests.klfWithin 300000 args

/// klf with extra environment variables.
let private klfWith (env: (string * string) list) (args: string list) =
    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in CliTests.klfDll.Value :: args do psi.ArgumentList.Add a
    psi.Environment.Remove "LD_LIBRARY_PATH" |> ignore
    for k, v in env do psi.Environment[k] <- v
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 300000) then p.Kill true; failtest "klf timed out"
    p.WaitForExit()
    p.ExitCode, out.Result + err.Result

/// No .NET stack frame in a user-facing message.
let private noTrace (text: string) (what: string) =
    Expect.isFalse (text.Contains "   at ") $"{what}: no stack trace\n{text}"

let private withDir (prefix: string) (f: string -> unit) =
    let dir = Directory.CreateTempSubdirectory(prefix).FullName
    try f dir finally Directory.Delete(dir, true)

/// A safetensors file from a raw header and data section.
let private rawSafetensors (path: string) (header: string) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes header
    use fs = File.Create path
    fs.Write(BitConverter.GetBytes(uint64 h.Length), 0, 8)
    fs.Write(h, 0, h.Length)
    fs.Write(data, 0, data.Length)

/// A small benchmark folder: tasks t1 and t2 (yes/no parity questions), t2's test split as given.
let private tinyBenchmark (dir: string) (t2Test: int) =
    let example (i: int) =
        let o = JsonObject()
        o["id"] <- JsonValue.Create(string i)
        o["input"] <- JsonValue.Create($"Is {i} even? Options: yes, no")
        o["output"] <- JsonValue.Create(if i % 2 = 0 then "yes" else "no")
        o :> JsonNode
    let examples n = JsonArray([| for i in 0 .. n - 1 -> example i |])
    for split in [ "train"; "test" ] do Directory.CreateDirectory(Path.Combine(dir, split)) |> ignore
    let write (split: string) (task: string) (n: int) = File.WriteAllText(Path.Combine(dir, split, task + ".json"), (examples n).ToJsonString())
    write "train" "t1" 12
    write "train" "t2" 12
    write "test" "t1" 4
    write "test" "t2" t2Test

let private runArgs (bench: string) (out: string) (steps: int) =
    [ "run"; "--model"; embedded; "--benchmark"; bench; "--tasks"; "t1,t2"; "--strategies"; "seqft"; "--steps"; string steps
      "--train-examples"; "6"; "--test-examples"; "2"; "--validation-examples"; "0"; "--no-fwt"; "true"; "--out"; out ]

[<Tests>]
let tests =
    testSequenced <| testList "bad input" [
        test "out-of-range flags are usage errors naming the flag, before anything is written" {
            withDir "klf-flags-" (fun dir ->
                let out = Path.Combine(dir, "out")
                let train extra = [ "train"; "--model"; embedded; "--task"; "agnews"; "--out"; out ] @ extra
                let cases =
                    [ train [ "--lr"; "Infinity" ], "--lr must be a finite number above 0"
                      train [ "--lr"; "NaN" ], "--lr must be a finite number above 0, got NaN"
                      train [ "--steps"; "-5" ], "--steps must be at least 0, got -5"
                      train [ "--batch"; "0" ], "--batch must be at least 1, got 0"
                      train [ "--warmup"; "-1" ], "--warmup must be at least 0"
                      train [ "--lora-r"; "-2" ], "--lora-r must be at least 0"
                      train [ "--lora-alpha"; "0" ], "--lora-alpha must be a finite number above 0"
                      [ "eval"; "--model"; embedded; "--tasks"; "agnews"; "--n"; "-1" ], "--n must be at least 0, got -1"
                      [ "generate"; "--model"; embedded; "--task"; "agnews"; "--max-new-tokens"; "0" ], "--max-new-tokens must be at least 1"
                      [ "run"; "--steps"; "0"; "--out"; out ], "--steps must be at least 1, got 0"
                      [ "run"; "--lr"; "-1"; "--out"; out ], "--lr must be a finite number above 0, got -1"
                      [ "run"; "--test-examples"; "0"; "--out"; out ], "--test-examples must be at least 1"
                      [ "fuse"; "--previous"; embedded; "--current"; embedded; "--previous-importance"; "a"; "--current-importance"; "b"; "--top"; "1.5"; "--out"; out ], "--top must lie in [0, 1], got 1.5"
                      [ "fuse"; "--previous"; embedded; "--current"; embedded; "--previous-importance"; "a"; "--current-importance"; "b"; "--gamma"; "-0.1"; "--out"; out ], "--gamma must lie in [0, 1]"
                      [ "pretrain"; "--corpus"; "c"; "--tokenizer"; embedded; "--steps"; "10"; "--heldout-fraction"; "1"; "--out"; out ], "--heldout-fraction must lie strictly between 0 and 1" ]
                for args, message in cases do
                    let code, text = klf args
                    Expect.equal code 2 $"{message}: usage error\n{text}"
                    Expect.stringContains text message "names the flag and the problem"
                    noTrace text message
                    Expect.isFalse (Directory.Exists out) $"{message}: nothing written")
        }

        test "eval --n 0 scores every test example of each task (the range check admits what the help promises)" {
            withDir "klf-eval-all-" (fun dir ->
                tinyBenchmark dir 7
                let code, out = klf [ "eval"; "--model"; embedded; "--benchmark"; dir; "--tasks"; "t2"; "--n"; "0" ]
                Expect.equal code 0 out
                Expect.stringContains out "all test examples each" "says it takes them all"
                Expect.isMatch out @"(?m)^t2\s+exact_match\s+7\s" "all 7 of t2's test examples scored")
        }

        test "an --out that is a file where a folder is expected, or the reverse, is refused up front" {
            withDir "klf-out-" (fun dir ->
                let file = Path.Combine(dir, "a-file")
                File.WriteAllText(file, "keep")
                let code, text = klf [ "train"; "--model"; embedded; "--task"; "agnews"; "--steps"; "1"; "--out"; file ]
                Expect.equal code 2 text
                Expect.stringContains text "is a file; give a folder" "says what is wrong"
                let code, text = klf [ "eval"; "--model"; embedded; "--tasks"; "agnews"; "--out"; dir ]
                Expect.equal code 2 text
                Expect.stringContains text "is a folder; give a file path" "and the reverse"
                let code, text = klf [ "run"; "--out"; Path.Combine(file, "below") ]
                Expect.equal code 2 text
                Expect.stringContains text "cannot be created" "a file in the way"
                Expect.equal (File.ReadAllText file) "keep" "the file is untouched")
        }

        test "a bad config.json value is one line naming the file and field; KLF_DEBUG=1 adds the trace" {
            withDir "klf-config-" (fun dir ->
                let cases =
                    [ "rms_norm_eps", JsonValue.Create(-1e-6) :> JsonNode, "'rms_norm_eps' must be a finite number above 0"
                      "rope_theta", JsonValue.Create 0, "'rope_theta' must be a finite number above 0"
                      "num_hidden_layers", JsonValue.Create -2, "'num_hidden_layers' must be a positive integer"
                      "hidden_size", JsonValue.Create "192", "'hidden_size' must be an integer"
                      "max_position_embeddings", JsonValue.Create 0, "'max_position_embeddings' must be a positive integer" ]
                for field, value, message in cases do
                    let m = Path.Combine(dir, field)
                    NativeTests.mirror embedded m
                    File.Delete(Path.Combine(m, "manifest.json"))
                    let config = JsonNode.Parse(File.ReadAllText(Path.Combine(embedded, "config.json"))).AsObject()
                    config[field] <- value
                    File.Delete(Path.Combine(m, "config.json"))
                    File.WriteAllText(Path.Combine(m, "config.json"), config.ToJsonString())
                    let code, text = klf [ "generate"; "--model"; m; "--task"; "agnews"; "--n"; "1" ]
                    Expect.equal code 1 text
                    Expect.stringContains text "klf: error:" field
                    Expect.stringContains text (Path.Combine(m, "config.json")) $"{field}: names the file"
                    Expect.stringContains text message field
                    noTrace text field
                let code, text = klfWith [ "KLF_DEBUG", "1" ] [ "generate"; "--model"; Path.Combine(dir, "rope_theta"); "--task"; "agnews"; "--n"; "1" ]
                Expect.equal code 1 text
                Expect.stringContains text "   at " "the trace follows under KLF_DEBUG=1")
        }

        test "a checkpoint whose bytes differ from its manifest is refused by every loader" {
            withDir "klf-flipped-" (fun dir ->
                let m = Path.Combine(dir, "m")
                NativeTests.mirror embedded m
                let weights = Path.Combine(m, "model.safetensors")
                let bytes = File.ReadAllBytes weights
                bytes[bytes.Length - 3] <- bytes[bytes.Length - 3] ^^^ 1uy
                File.Delete weights
                File.WriteAllBytes(weights, bytes)
                Expect.throwsT<InvalidDataException> (fun () -> ModelFolder.Load(m).Dispose()) "ModelFolder.Load verifies the manifest"
                for args in [ [ "generate"; "--model"; m; "--task"; "agnews"; "--n"; "1" ]
                              [ "train"; "--model"; m; "--task"; "agnews"; "--steps"; "1"; "--out"; Path.Combine(dir, "o") ] ] do
                    let code, text = klf args
                    Expect.equal code 1 text
                    Expect.stringContains text "does not match the SHA-256" $"{args.Head}: says why"
                    noTrace text args.Head)
        }

        test "safetensors: overlapping, gapped, trailing and duplicate entries are refused naming the file" {
            withDir "klf-st-" (fun dir ->
                let data = Array.zeroCreate<byte> 16
                let cases =
                    [ "overlap", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", data[.. 11], "overlaps"
                      "gap", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", data[.. 11], "belong to no tensor"
                      "trailing", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", data, "after the last tensor"
                      "duplicate", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", data, "not valid JSON"
                      "negative", """{"a":{"dtype":"F32","shape":[-2,-1],"data_offsets":[0,8]}}""", data[.. 7], "negative dimension"
                      "shape", """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", data[.. 7], "do not fit its shape"
                      "dtype", """{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}""", data[.. 7], "F31"
                      "metadata", """{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", data[.. 7], "__metadata__" ]
                for name, header, bytes, message in cases do
                    let path = Path.Combine(dir, name + ".safetensors")
                    rawSafetensors path header bytes
                    Expect.throwsT<InvalidDataException> (fun () -> SafeTensors.Load path |> Seq.iter (fun kv -> kv.Value.Dispose())) name
                    try SafeTensors.Load path |> ignore with :? InvalidDataException as e ->
                        Expect.stringContains e.Message path $"{name}: names the file"
                        Expect.stringContains e.Message message $"{name}: says what is wrong"
                // A well-formed file of two tensors still loads.
                let ok = Path.Combine(dir, "ok.safetensors")
                rawSafetensors ok """{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""" data
                let loaded = SafeTensors.Load ok
                Expect.equal loaded.Count 2 "two tensors"
                for t in loaded.Values do t.Dispose())
        }

        test "a task file with invalid UTF-8 names the file, line and byte; a byte-order mark is fine" {
            withDir "klf-utf8-" (fun dir ->
                let line = "{\"id\":\"0\",\"input\":\"a\",\"output\":\"b\"}\n"
                let jsonl = Path.Combine(dir, "t.jsonl")
                let prefix = "{\"id\":\"1\",\"input\":\"a"
                File.WriteAllBytes(jsonl, Array.concat [ Encoding.UTF8.GetBytes line; Encoding.UTF8.GetBytes prefix; [| 0xFFuy |]; Encoding.UTF8.GetBytes "\",\"output\":\"b\"}\n" ])
                Expect.throwsT<InvalidDataException> (fun () -> TaskFile.load jsonl |> ignore) "refused"
                try TaskFile.load jsonl |> ignore with :? InvalidDataException as e ->
                    Expect.stringContains e.Message $"{jsonl}: line 2: byte {line.Length + prefix.Length} is not valid UTF-8" "file, line, byte"
                let json = Path.Combine(dir, "t.json")
                File.WriteAllBytes(json, Array.concat [ [| 0xEFuy; 0xBBuy; 0xBFuy |]; Encoding.UTF8.GetBytes "[{\"id\":\"0\",\"input\":\"é\",\"output\":\"b\"}]" ])
                Expect.equal (TaskFile.load json).[0].Input "é" "a BOM is dropped, UTF-8 decoded"
                File.WriteAllBytes(json, Array.concat [ Encoding.UTF8.GetBytes "[{\"id\":\"0\",\"input\":\""; [| 0xC3uy |]; Encoding.UTF8.GetBytes "(\",\"output\":\"b\"}]" ])
                Expect.throwsT<InvalidDataException> (fun () -> TaskFile.load json |> ignore) "a .json file too")
        }

        test "a non-finite step stops before the optimizer moves anything, or is skipped when asked" {
            let m = TinyLm.create 5L
            use _m = m
            let lm = m :> ILanguageModel
            use batch = Batching.Build(TrainingTests.examples 1 4, BatchLayout.For(lm, 64))
            let snapshot () = [ for p in m.parameters() -> p.detach().clone() ]
            let same (a: torch.Tensor list) (b: torch.Tensor list) = List.forall2 (fun (x: torch.Tensor) (y: torch.Tensor) -> x.eq(y).all().item<bool>()) a b
            let nanLoss = StepHooks()
            let p0 = Seq.head (m.parameters())
            nanLoss.ExtraLosses.Add(fun _ -> p0.sum().mul(torch.tensor(Double.NaN)))
            let imported = ref 0
            nanLoss.AfterClip.Add(fun _ -> imported.Value <- imported.Value + 1)
            nanLoss.AfterOptimizerStep.Add(fun _ -> imported.Value <- imported.Value + 1)
            let before = snapshot ()
            use stop = new StepRunner(lm, OptimizerOptions(LearningRate = 0.1))
            Expect.throwsT<NonFiniteStepException> (fun () -> stop.Step([| batch |], nanLoss) |> ignore) "stops"
            try stop.Step([| batch |], nanLoss) |> ignore with :? NonFiniteStepException as e -> Expect.stringContains e.Message "the extra loss is NaN" "says what"
            Expect.isTrue (same before (snapshot ())) "parameters unchanged"
            Expect.equal imported.Value 0 "no after-clip or after-step hook saw the step"
            use skip = new StepRunner(lm, OptimizerOptions(LearningRate = 0.1, NonFinite = NonFiniteStep.Skip))
            let metrics = skip.Step([| batch |], nanLoss)
            Expect.isTrue metrics.Skipped "reported as skipped"
            Expect.isTrue (same before (snapshot ())) "parameters unchanged"
            Expect.equal skip.StepsTaken 1 "the schedule advances"
            let good = skip.Step([| batch |])
            Expect.isFalse good.Skipped "a finite step is not skipped"
            Expect.isFalse (same before (snapshot ())) "and moves the parameters"
        }

        test "AtomicFile.RemoveStale clears a dead writer's temporaries and restores a folder it moved aside" {
            withDir "klf-stale-" (fun dir ->
                // A process id that is not running: a short-lived child that has exited.
                use p = Process.Start(ProcessStartInfo("true", UseShellExecute = false))
                p.WaitForExit()
                let dead = p.Id
                let guid () = Guid.NewGuid().ToString("N")
                let deadFile = Path.Combine(dir, $".metrics.json.{dead}.{guid ()}.tmp")
                File.WriteAllText(deadFile, "{ half")
                let liveFile = Path.Combine(dir, $".result.json.{Environment.ProcessId}.{guid ()}.tmp")
                File.WriteAllText(liveFile, "{ being written")
                let deadFolder = Path.Combine(dir, $".task-02.{dead}.{guid ()}.tmp")
                Directory.CreateDirectory deadFolder |> ignore
                let movedAside = Path.Combine(dir, $".task-01.{dead}.{guid ()}.tmp.old")
                Directory.CreateDirectory movedAside |> ignore
                File.WriteAllText(Path.Combine(movedAside, "rows.json"), "[]")
                File.WriteAllText(Path.Combine(dir, "keep.json"), "{}")
                Expect.equal (AtomicFile.RemoveStale dir) 3 "three entries cleared"
                Expect.isFalse (File.Exists deadFile) "a dead writer's file is gone"
                Expect.isFalse (Directory.Exists deadFolder) "and its folder"
                Expect.isTrue (File.Exists liveFile) "a live writer's temporary stays"
                Expect.equal (File.ReadAllText(Path.Combine(dir, "task-01", "rows.json"))) "[]" "the folder moved aside is back"
                Expect.isTrue (File.Exists(Path.Combine(dir, "keep.json"))) "other files stay")
        }

        test "klf run: a task without test examples fails before anything is written; a refused resume leaves the folder's record as it was" {
            withDir "klf-run-bad-" (fun dir ->
                let bench = Path.Combine(dir, "bench")
                tinyBenchmark bench 0
                let out = Path.Combine(dir, "out")
                let code, text = klf (runArgs bench out 1)
                Expect.equal code 1 text
                Expect.stringContains text "task t2 (sequence custom, seed 1) has no test examples" "names the task"
                noTrace text "no test examples"
                Expect.isFalse (Directory.Exists out) "no run folder"
                tinyBenchmark bench 4
                let code, text = klf (runArgs bench out 1)
                Expect.equal code 0 text
                let record = File.ReadAllText(Path.Combine(out, "experiment.json"))
                let code, text = klf (runArgs bench out 2)
                Expect.equal code 1 text
                Expect.stringContains text "other settings (steps: 1 vs 2)" "says which setting"
                Expect.equal (File.ReadAllText(Path.Combine(out, "experiment.json"))) record "experiment.json unchanged")
        }
    ]
