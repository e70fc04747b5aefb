/// Importance tracking attached to real training of a tiny LLaMA, and importance profiles on disk.
module ImportanceTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.Training
open Klf.SkillUnits
open Klf.Importance

let private tinyLlama (seed: int64) =
    torch.manual_seed seed |> ignore
    new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset "llama-tiny") :> ILanguageModel

let private trainable (m: ILanguageModel) =
    [| for struct (n, p) in m.Module.named_parameters() do if p.requires_grad then n, p |]

/// One whole-tensor unit per trainable parameter (the partitioners are written elsewhere).
let private handMap (partitioner: string) (m: ILanguageModel) =
    let labels (name: string) =
        let r = Regex.Match(name, @"^(.*layers\.\d+)\.(.+?)(\.weight|\.bias)?$")
        if r.Success then r.Groups.[1].Value, r.Groups.[2].Value
        elif name.Contains "embed" then "embeddings", "embed_tokens"
        elif name.Contains "lm_head" then "head", "lm_head"
        else "other", name
    let units =
        [| for name, p in trainable m ->
            let layer, kind = labels name
            SkillUnit(name, [| UnitSlice(name) |], UnitAggregation.Mean, layer, kind, p.numel()) |]
    SkillUnitMap(partitioner, units)

/// Mean element score per unit (whole-tensor units only).
let private unitScores (map: SkillUnitMap) (tracker: ImportanceTracker) =
    let scores = tracker.ElementScores()
    try [| for u in map.Units -> scores.[u.Id].mean().ToDouble() |]
    finally for t in scores.Values do t.Dispose()

let private fit (m: ILanguageModel) (hooks: StepHooks) (steps: int) (onStep: StepMetrics -> unit) =
    Trainer.Fit(m, LmContract.examples 5 64, TrainerOptions(BatchSize = 8, MaxSteps = steps, Seed = 3,
                Optimizer = OptimizerOptions(LearningRate = 3e-3, WarmupSteps = 2)), hooks, Action<_>(onStep)) |> ignore

/// Sequenced: live-tensor counts are global.
[<Tests>]
let tests =
    testSequenced <| testList "importance" [
        for skip in [ true; false ] do
          test $"tracker on tiny LLaMA training (skip first/last = {skip}): steps counted, scores finite and >= 0 for every trainable parameter, Reset zeroes" {
            let m = tinyLlama 1L
            try
                let hooks = StepHooks()
                use tracker = new ImportanceTracker(ImportanceOptions(SkipFirstStep = skip, SkipLastStep = skip))
                tracker.Attach(hooks, m.Module)
                fit m hooks 12 ignore
                Expect.equal tracker.StepsSeen 12 "steps seen"
                Expect.equal tracker.StepsCounted (if skip then 10 else 12) "steps counted"
                Expect.equal (List.ofSeq tracker.Names) (trainable m |> Array.map fst |> List.ofArray) "every trainable parameter tracked"
                let scores = tracker.ElementScores()
                for KeyValue (name, s) in scores do
                    Expect.isTrue (s.isfinite().all().ToBoolean()) $"{name}: finite"
                    Expect.isGreaterThanOrEqual (s.min().ToDouble()) 0.0 $"{name}: >= 0"
                    Expect.equal s.dtype torch.ScalarType.Float32 "float32"
                let total = scores.Values |> Seq.sumBy (fun s -> s.sum().ToDouble())
                Expect.isGreaterThan total 0.0 "something scored"
                for s in scores.Values do s.Dispose()
                tracker.Reset()
                Expect.equal (tracker.StepsSeen, tracker.StepsCounted) (0, 0) "counters reset"
                for name in tracker.Names do
                    let struct (i, u) = tracker.Buffers name
                    Expect.equal (i.abs().sum().ToDouble() + u.abs().sum().ToDouble()) 0.0 $"{name}: zeroed"
            finally m.Dispose()
          }

        test "with LoRA only the adapter parameters (trainable at attach time) are tracked" {
            let m = tinyLlama 1L
            try
                Lora.Apply(m.Module, LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = [| "q_proj"; "v_proj" |])) |> ignore
                let hooks = StepHooks()
                use tracker = new ImportanceTracker()
                tracker.Attach(hooks, m.Module)
                fit m hooks 4 ignore
                Expect.isNonEmpty tracker.Names "tracks something"
                Expect.isTrue (tracker.Names |> Seq.forall Lora.IsLoraPath) "only LoRA parameters"
                Expect.equal tracker.StepsCounted 3 "4 steps minus the first (the reference gate; the last one counts)"
            finally m.Dispose()
        }

        test "no tensor leak: live tensors after N steps = after the first step" {
            let m = tinyLlama 2L
            try
                let hooks = StepHooks()
                use tracker = new ImportanceTracker(ImportanceOptions(SkipFirstStep = false))
                // Tensors an earlier test left to the garbage collector are finalised now, not while counting.
                GC.Collect()
                GC.WaitForPendingFinalizers()
                let before = torch.Tensor.TotalCount
                tracker.Attach(hooks, m.Module)
                let counts = Collections.Generic.List<int64>()
                fit m hooks 15 (fun _ -> counts.Add torch.Tensor.TotalCount)
                printfn "importance: live tensors before attach %d, after step 1 %d, after step %d %d (%d tracked parameters)"
                    before counts.[0] counts.Count counts.[counts.Count - 1] tracker.Names.Count
                Expect.equal counts.[counts.Count - 1] counts.[0] "count after the last step = after the first"
                Expect.isTrue (counts |> Seq.forall ((=) counts.[0])) "constant over all steps"
            finally m.Dispose()
        }

        test "profile save -> load round trip is bit-exact; loading against another map names both fingerprints" {
            let m = tinyLlama 3L
            let dir = Path.Combine(Path.GetTempPath(), "klf-importance-" + Guid.NewGuid().ToString("N"))
            try
                let hooks = StepHooks()
                use tracker = new ImportanceTracker()
                tracker.Attach(hooks, m.Module)
                fit m hooks 6 ignore
                let map = handMap "hand-full" m
                let raw = unitScores map tracker
                let s1 = ImportanceMath.Normalise(map, raw)
                let s2 = ImportanceMath.Normalise(map, raw, NormalisationScope.Layer)
                let acc = ImportanceMath.Accumulate(s1, s2)
                let profile = ImportanceProfile.FromMap(map, acc, [| TaskImportance("t1", s1); TaskImportance("t2", s2) |])
                let path = Path.Combine(dir, "importance.json")
                profile.Save path
                let back = ImportanceProfile.Load(path, map)
                Expect.equal (back.AlignTo map) acc "scores bit-exact"
                Expect.equal (back.HistoryAlignedTo(map, 1)) s2 "history bit-exact"
                Expect.equal (back.History |> Seq.map (fun h -> h.Task) |> List.ofSeq) [ "t1"; "t2" ] "task names"
                Expect.equal (back.Partitioner, back.Fingerprint) (map.Partitioner, map.Fingerprint) "map identity"
                Expect.equal back.[map.Units.[0].Id] acc.[0] "lookup by id"
                let other = SkillUnitMap("hand-full", map.Units |> Seq.skip 1 |> Array.ofSeq)
                let err = try ImportanceProfile.Load(path, other) |> ignore; "" with :? InvalidDataException as x -> x.Message
                Expect.stringContains err path "names the file"
                Expect.stringContains err map.Fingerprint "names the profile's fingerprint"
                Expect.stringContains err other.Fingerprint "names the map's fingerprint"
                Expect.throwsT<InvalidDataException> (fun () -> profile.AlignTo other |> ignore) "AlignTo checks too"
            finally
                m.Dispose()
                if Directory.Exists dir then Directory.Delete(dir, true)
        }
    ]
