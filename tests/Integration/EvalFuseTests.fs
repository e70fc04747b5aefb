/// `klf train --importance`, `klf fuse` and `klf eval` end to end, run as a user runs them (the
/// built klf.dll in a child process), on llama-tiny with real benchmark slices: A is trained on
/// dbpedia, B from A on sst-2, both tracking importance; their fusion is checked unit by unit
/// against the checkpoints' own weights, and eval against the pipeline's Evaluate.
module EvalFuseTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.Checkpoints
open Klf.Formats
open Klf.SkillUnits
open Klf.Importance
open Klf.Fusion
open Klf.Pipelines
open Klf.Kif

type private Tensor = torch.Tensor

let private klf (args: string list) = CliTests.klfWithin 300000 args

/// Runs klf and fails the test (showing the output) unless it exits with 0.
let private klfOk (args: string list) =
    let code, out = klf args
    Expect.equal code 0 $"klf {String.Join(' ', args)}\n{out}"
    out

let private benchmarkRoot = lazy (Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence"))

/// The shared runs: A (llama-tiny trained on dbpedia), B (A trained on sst-2), each with its
/// importance profile; plus A trained the same way without --importance.
type private Runs = { Dir: string; A: string; B: string; Plain: string }

let private trainArgs (task: string) (steps: int) (lr: string) (maxLength: int) =
    [ "--task"; task; "--benchmark"; benchmarkRoot.Value; "--train-examples"; "96"; "--heldout-examples"; "8"
      "--steps"; string steps; "--lr"; lr; "--warmup"; "2"; "--max-length"; string maxLength ]

let private runs =
    lazy (
        let dir = TokenizerTests.tempDir "klf-evalfuse-" // removed when the test process exits (KLF_KEEP_TEMP=1 keeps it)
        let tok = TokenizerTests.trained.Value.LlamaFolder
        let a, b, plain = Path.Combine(dir, "A"), Path.Combine(dir, "B"), Path.Combine(dir, "A-plain")
        let first = [ "train"; "--preset"; "llama-tiny"; "--tokenizer"; tok ] @ trainArgs "dbpedia" 6 "3e-3" 128
        klfOk (first @ [ "--importance"; Path.Combine(a, "importance.json"); "--out"; a ]) |> ignore
        klfOk (first @ [ "--out"; plain ]) |> ignore
        // Enough steps for B to answer sst-2 with its labels, so that eval's scores are not all zero.
        klfOk ([ "train"; "--model"; a ] @ trainArgs "sst-2" 24 "6e-3" 96 @ [ "--importance"; Path.Combine(b, "importance.json"); "--out"; b ]) |> ignore
        { Dir = dir; A = a; B = b; Plain = plain })

let private profileOf (dir: string) = Path.Combine(dir, "importance.json")

/// The tensors of a checkpoint folder's model.safetensors, by key (the caller disposes them).
let private weights (dir: string) = SafeTensors.Load(Path.Combine(dir, "model.safetensors"))

/// Disposes the model's module at the end of a `use`.
let private owned (model: ILanguageModel) = { new IDisposable with member _.Dispose() = model.Dispose() }

let private disposeAll (d: Collections.Generic.Dictionary<string, Tensor>) = for t in d.Values do t.Dispose()

/// The raw bits of a float32 tensor (NaN-safe, -0 ≠ +0).
let private bits (t: Tensor) = t.contiguous().data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits

/// The full-fine-tuning unit map of a checkpoint's model.
let private fullMap (dir: string) =
    let m = ModelFolder.Load dir
    try FullFineTuningPartitioner().Partition m finally m.Dispose()

/// A fresh folder path under the runs' folder (not created).
let private outPath (name: string) = Path.Combine(runs.Value.Dir, name + "-" + Guid.NewGuid().ToString("N").Substring(0, 8))

/// Runs klf fuse on A and B with the given profiles and extra options.
let private fuse (previous: string) (current: string) (prevProfile: string) (curProfile: string) (out: string) (extra: string list) =
    klf ([ "fuse"; "--previous"; previous; "--current"; current; "--previous-importance"; prevProfile; "--current-importance"; curProfile; "--out"; out ] @ extra)

/// Checks every unit of a fused checkpoint against KIF's static rule on A and B: fused =
/// Interpolate(A, B, λ(category)) bit for bit (so λ = 0 is A's unit and λ = 1 B's, exactly).
/// Returns the categories.
let private checkStaticFusion (fused: string) (map: SkillUnitMap) (prevScores: double[]) (curScores: double[]) (top: float) =
    let r = runs.Value
    let cats = Categories.Classify(ImportanceMath.TopFraction(prevScores, top), ImportanceMath.TopFraction(curScores, top))
    let a, b, f = weights r.A, weights r.B, weights fused
    try
        let rule = KifStaticRule()
        for u, c in Seq.zip map.Units cats do
            for s in u.Slices do
                let pa, pb, pf = a[s.Parameter], b[s.Parameter], f[s.Parameter]
                match c with
                | UnitCategory.PreviousOnly -> Expect.equal (bits pf) (bits pa) $"{u.Id}: important only before, A's unit bit for bit"
                | UnitCategory.CurrentOnly -> Expect.equal (bits pf) (bits pb) $"{u.Id}: important only now, B's unit bit for bit"
                | _ ->
                    use expected = FusionKernels.Interpolate(pa, pb, rule.LambdaOf c)
                    Expect.equal (bits pf) (bits expected) $"{u.Id}: A + λ(B − A) with λ = {rule.LambdaOf c} ({c})"
        cats
    finally
        disposeAll a; disposeAll b; disposeAll f

let private categoryCounts (manifestDir: string) =
    let m = Checkpoint.ReadManifest manifestDir
    let c = m.Extra["fusion"].["categories"]
    [ for k in [ "shared"; "previous_only"; "current_only"; "neither" ] -> c[k].GetValue<int>() ]

let private countOf (cats: UnitCategory[]) = [ for c in [ UnitCategory.Shared; UnitCategory.PreviousOnly; UnitCategory.CurrentOnly; UnitCategory.Neither ] -> cats |> Array.filter ((=) c) |> Array.length ]

[<Tests>]
let tests =
    testSequenced <| testList "evalfuse" [
        test "--help lists eval and fuse; train --help shows --importance" {
            let out = klfOk [ "--help" ]
            for c in [ "eval"; "fuse" ] do Expect.stringContains out $"  {c} " $"lists {c}"
            let out = klfOk [ "train"; "--help" ]
            for o in [ "--importance"; "--units" ] do Expect.stringContains out o $"train has {o}"
        }

        test "train --importance writes the task's normalised unit scores; the weights are those of plain training" {
            let r = runs.Value
            let map = fullMap r.A
            let profile = ImportanceProfile.Load(profileOf r.A, map)
            Expect.equal profile.Partitioner "full" "full fine-tuning units by default"
            Expect.equal profile.Fingerprint map.Fingerprint "the map's fingerprint"
            Expect.equal [ for h in profile.History -> h.Task ] [ "dbpedia" ] "history: this one task"
            let scores = profile.AlignTo map
            Expect.equal (Array.max scores) 1.0 "normalised: max 1"
            Expect.equal (Array.min scores) 0.0 "normalised: min 0"
            Expect.equal (profile.HistoryAlignedTo(map, 0)) scores "one task: Â = Ŝ"
            let withImportance = (Checkpoint.ReadManifest r.A).Files["model.safetensors"]
            let plain = (Checkpoint.ReadManifest r.Plain).Files["model.safetensors"]
            Expect.equal withImportance plain "model.safetensors identical (SHA-256) with and without --importance"
            Expect.isFalse (File.Exists(profileOf r.Plain)) "no profile without --importance"
        }

        test "fuse (static): every unit is A + λ(B − A) of its category bit for bit; counts in the manifest; importance accumulates" {
            let r = runs.Value
            let out = outPath "F"
            let code, text = fuse r.A r.B (profileOf r.A) (profileOf r.B) out [ "--rule"; "static"; "--top"; "0.5" ]
            Expect.equal code 0 text
            printfn "klf fuse A B:\n%s" text
            for w in [ "shared"; "previous-only"; "current-only"; "neither"; "λ counts"; "ms" ] do Expect.stringContains text w $"summary shows {w}"
            let fused = ModelFolder.Load out // the fused checkpoint loads (strict keys)
            use _ = owned fused
            let manifest = Checkpoint.Load(fused, out) // and its hashes verify
            Expect.equal (manifest.Extra["fusion"].["rule"].GetValue<string>()) "kif-static" "rule recorded"
            Expect.isTrue (File.Exists(Path.Combine(out, "tokenizer.model"))) "tokenizer copied from the current folder"
            let map = fullMap r.A
            let prev = ImportanceProfile.Load(profileOf r.A, map).AlignTo map
            let cur = ImportanceProfile.Load(profileOf r.B, map).AlignTo map
            let cats = checkStaticFusion out map prev cur 0.5
            Expect.equal (categoryCounts out) (countOf cats) "units per category in the manifest"
            let acc = ImportanceProfile.Load(profileOf out, map)
            Expect.equal (acc.AlignTo map) (ImportanceMath.Accumulate(prev, cur, 0.7)) "importance.json = minmax(0.7 Â + 0.3 Ŝ)"
            Expect.equal [ for h in acc.History -> h.Task ] [ "dbpedia"; "sst-2" ] "history of both tasks"
            Expect.equal (acc.HistoryAlignedTo(map, 1)) cur "Ŝ of the current task kept"
        }

        test "fuse is KifSession's own step: with --param and --gamma the checkpoint and importance.json equal KifStep.Fuse in this process, bit for bit" {
            let r = runs.Value
            let out = outPath "F-param"
            let code, text = fuse r.A r.B (profileOf r.A) (profileOf r.B) out [ "--param"; "shared=0.5,neither=1"; "--gamma"; "0.5" ]
            Expect.equal code 0 text
            Expect.stringContains text "λ=1: " "the parameters took effect"
            let a = ModelFolder.Load r.A
            let map = FullFineTuningPartitioner().Partition a
            use snapshot = ParameterSnapshot.Take(a, [ for u in map.Units do for sl in u.Slices -> sl.Parameter ] |> List.distinct)
            a.Dispose()
            let b = ModelFolder.Load r.B
            use _b = owned b
            let prev = ImportanceProfile.Load(profileOf r.A, map).AlignTo map
            let cur = ImportanceProfile.Load(profileOf r.B, map).AlignTo map
            let options = KifOptions(TopFraction = 0.2, Gamma = 0.5, Rule = KifStaticRule(shared = 0.5, neither = 1.0))
            let step = KifStep.Fuse(b, snapshot, null, map, prev, cur, options, 0L)
            let f = weights out
            try
                for struct (n, p) in b.Module.named_parameters() do
                    if f.ContainsKey n then Expect.equal (bits f[n]) (bits p) $"{n}: the same fused values"
            finally disposeAll f
            Expect.equal (ImportanceProfile.Load(profileOf out, map).AlignTo map) step.Accumulated "importance.json = the step's Â with γ = 0.5"
            let m = Checkpoint.ReadManifest out
            Expect.equal (m.Extra["fusion"].["parameters"].["neither"].GetValue<float>()) 1.0 "the manifest records the rule's parameters"
        }

        test "fuse with profiles that disagree: units important only before are A's, only now B's, bit for bit" {
            let r = runs.Value
            let map = fullMap r.A
            let n = map.Count
            // Â ranks the units one way, Ŝ the other way: the top 20 % of each are disjoint.
            let rising = Array.init n (fun i -> float i / float (n - 1))
            let prevFile, curFile = Path.Combine(r.Dir, "rising.json"), Path.Combine(r.Dir, "falling.json")
            ImportanceProfile.FromMap(map, rising, [| TaskImportance("dbpedia", rising) |]).Save prevFile
            ImportanceProfile.FromMap(map, Array.rev rising, [| TaskImportance("sst-2", Array.rev rising) |]).Save curFile
            let out = outPath "F-disjoint"
            let code, text = fuse r.A r.B prevFile curFile out []
            Expect.equal code 0 text
            let cats = checkStaticFusion out map rising (Array.rev rising) 0.2
            let counts = countOf cats
            Expect.isGreaterThanOrEqual counts[1] 3 "several units important only before"
            Expect.isGreaterThanOrEqual counts[2] 3 "several units important only now"
            Expect.equal (categoryCounts out) counts "manifest counts"
        }

        test "fusing a model with itself returns identical weights (static and adaptive)" {
            let r = runs.Value
            for rule in [ "static"; "adaptive" ] do
                let out = outPath $"self-{rule}"
                let code, text = fuse r.A r.A (profileOf r.A) (profileOf r.A) out [ "--rule"; rule ]
                Expect.equal code 0 text
                let a, f = weights r.A, weights out
                try
                    Expect.equal (Set.ofSeq f.Keys) (Set.ofSeq a.Keys) "same tensors"
                    for KeyValue(k, t) in a do Expect.equal (bits f[k]) (bits t) $"{rule}: {k} unchanged"
                finally
                    disposeAll a; disposeAll f
        }

        test "mismatched or broken profiles: exit code 1, an error naming the file, nothing written" {
            let r = runs.Value
            // A profile of the same model with other skill units (attention heads).
            let headProfile = Path.Combine(r.Dir, "head-units.json")
            let m = ModelFolder.Load r.A
            let headMap = try AttentionHeadPartitioner().Partition m finally m.Dispose()
            ImportanceProfile.FromMap(headMap, Array.init headMap.Count float |> ImportanceMath.MinMax).Save headProfile
            // A profile of another model (grouped-query attention: other shapes, other units).
            let otherProfile = Path.Combine(r.Dir, "other-model.json")
            torch.manual_seed 1L |> ignore
            let other = LanguageModels.FromPreset("llama-tiny-gqa", Nullable 2000)
            let otherMap = try FullFineTuningPartitioner().Partition other finally other.Dispose()
            ImportanceProfile.FromMap(otherMap, Array.init otherMap.Count float |> ImportanceMath.MinMax).Save otherProfile
            let broken = Path.Combine(r.Dir, "broken.json")
            File.WriteAllText(broken, "{ \"format\": \"klf-importance/1\", ")
            let aMap = fullMap r.A
            let cases =
                [ "other partitioner", headProfile, [], [ "head"; "full" ]
                  "other model", otherProfile, [ "--units"; "full" ], [ otherMap.Fingerprint; aMap.Fingerprint ]
                  "not JSON", broken, [], [ "not valid JSON" ] ]
            for name, file, extra, mentions in cases do
                let out = outPath "refused"
                let code, text = fuse r.A r.B file (profileOf r.B) out extra
                Expect.equal code 1 $"{name}: exit code 1\n{text}"
                Expect.stringContains text "klf: error:" $"{name}: one clear error line"
                Expect.stringContains text file $"{name}: names the file"
                for s in mentions do Expect.stringContains text s $"{name}: mentions {s}"
                Expect.isFalse (Directory.Exists out) $"{name}: --out not created"
                Expect.isEmpty (Directory.GetFileSystemEntries(r.Dir) |> Array.filter (fun p -> Path.GetFileName(p).StartsWith ".refused")) $"{name}: no temporary left"
            let out = outPath "refused"
            let code, text = fuse r.A r.B (profileOf r.A) (profileOf r.B) out [ "--rule"; "static"; "--tau"; "0.5" ]
            Expect.equal code 1 text
            Expect.stringContains text "--tau" "τ belongs to the adaptive rule"
            Expect.isFalse (Directory.Exists out) "--out not created"
        }

        test "eval prints a table and writes JSON; the scores are the pipeline's Evaluate on the same test examples" {
            let r = runs.Value
            let json = Path.Combine(r.Dir, "eval-B.json")
            let text = klfOk [ "eval"; "--model"; r.B; "--tasks"; "sst-2,dbpedia"; "--n"; "16"; "--seed"; "3"; "--benchmark"; benchmarkRoot.Value; "--out"; json ]
            printfn "klf eval B:\n%s" text
            Expect.stringContains text "mean" "prints the mean"
            let o = JsonNode.Parse(File.ReadAllText json)
            Expect.equal (o["model"].GetValue<string>()) (Path.GetFullPath r.B) "model"
            let tasks = o["tasks"].AsArray() |> Seq.toList
            Expect.equal [ for t in tasks -> t["task"].GetValue<string>() ] [ "sst-2"; "dbpedia" ] "tasks in order"
            // The same examples, metric and budget in this process, through Evaluate.task.
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder r.B
            let model = ModelFolder.Load r.B
            use _ = owned model
            let scores =
                [ for t in tasks ->
                    let name = t["task"].GetValue<string>()
                    let task = Task.load benchmarkRoot.Value name
                    let test = (task |> Task.subsample 3 { Train = 0; Test = 16 }).Test
                    let metric = Metric.ofName task.Metric
                    let expected = Evaluate.task model tok metric (Task.maxNewTokens (fun s -> tok.Encode s) task) test
                    let score = t["score"].GetValue<float>()
                    Expect.equal (t["metric"].GetValue<string>()) (Metric.name metric) $"{name}: metric"
                    Expect.equal (t["n"].GetValue<int>()) test.Length $"{name}: n"
                    Expect.isTrue (score >= 0.0 && score <= 100.0) $"{name}: score in [0, 100]"
                    Expect.floatClose Accuracy.veryHigh score expected $"{name}: klf eval = Evaluate.task"
                    Expect.stringContains text (score.ToString("F1", Globalization.CultureInfo.InvariantCulture)) $"{name}: score printed"
                    score ]
            Expect.isGreaterThan scores[0] 0.0 "B answers some sst-2 examples right (a score that can disagree)"
            Expect.floatClose Accuracy.veryHigh (o["mean"].GetValue<float>()) (List.average scores) "mean"
            // An order's tasks, on the fused model of A and B.
            let fused = outPath "F-eval"
            let code, t = fuse r.A r.B (profileOf r.A) (profileOf r.B) fused []
            Expect.equal code 0 t
            let text = klfOk [ "eval"; "--model"; fused; "--order"; "standard/order1"; "--n"; "2"; "--benchmark"; benchmarkRoot.Value ]
            for name in [ "dbpedia"; "amazon"; "yahoo"; "agnews"; "mean" ] do Expect.stringContains text name $"order1 lists {name}"
            let code, text = klf [ "eval"; "--model"; fused; "--tasks"; "no-such-task"; "--benchmark"; benchmarkRoot.Value ]
            Expect.equal code 1 text
            Expect.stringContains text "no-such-task" "names the missing task"
        }

        test "LoRA: train two adapters with --importance, fuse them (adaptive rule by default); every rank-1 unit is its interpolation" {
            let r = runs.Value
            let baseDir = r.A // both adapters on A's weights; fuse finds the base in their adapter_config.json
            let adapters =
                [ for task in [ "dbpedia"; "sst-2" ] ->
                    let dir = Path.Combine(r.Dir, "lora-" + task)
                    klfOk ([ "train"; "--model"; baseDir ] @ trainArgs task 4 "3e-3" 96
                           @ [ "--lora-r"; "2"; "--importance"; profileOf dir; "--out"; dir ]) |> ignore
                    dir ]
            let la, lb = adapters[0], adapters[1]
            let out = outPath "F-lora"
            let code, text = fuse la lb (profileOf la) (profileOf lb) out []
            Expect.equal code 0 text
            printfn "klf fuse (LoRA):\n%s" text
            Expect.stringContains text "kif-adaptive" "lora-rank1 units fuse with the adaptive rule"
            let model = ModelFolder.Load baseDir
            use _ = owned model
            Lora.LoadAdapter(model.Module, out) |> ignore // the fused adapter loads into the base model
            let map = LoraRank1Partitioner().Partition model
            let prev = ImportanceProfile.Load(profileOf la, map).AlignTo map
            let cur = ImportanceProfile.Load(profileOf lb, map).AlignTo map
            Expect.equal (ImportanceProfile.Load(profileOf out, map).AlignTo map) (ImportanceMath.Accumulate(prev, cur, 0.7)) "accumulated importance"
            let fileKey (p: string) = Lora.PeftFilePrefix + p.Replace(".default.weight", ".weight")
            let load dir = SafeTensors.Load(Path.Combine(dir, "adapter_model.safetensors"))
            let a, b, f = load la, load lb, load out
            try
                let rule = KifAdaptiveRule()
                for i, u in Seq.indexed map.Units do
                    let lambda = rule.Weights(prev[i], cur[i]).Current
                    for s in u.Slices do
                        let key = fileKey s.Parameter
                        use pa = s.View a[key]
                        use pb = s.View b[key]
                        use pf = s.View f[key]
                        use expected = FusionKernels.Interpolate(pa, pb, lambda)
                        Expect.equal (bits pf) (bits expected) $"{u.Id} ({s}): prev + c_cur (cur − prev), c_cur = {lambda}"
            finally
                disposeAll a; disposeAll b; disposeAll f
        }
    ]
