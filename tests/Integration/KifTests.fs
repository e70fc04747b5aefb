/// KIF end to end on a tiny model: two real benchmark tasks, importance collected during real
/// training, fusion applied, and the fusion laws checked on the real models.
module KifTests

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.Training
open Klf.SkillUnits
open Klf.Fusion
open Klf.Kif
open Klf.Pipelines
open Klf.Training.Regularizers

type Tensor = torch.Tensor

/// Copies of every parameter, by name (the caller disposes).
let private copyAll (m: ILanguageModel) =
    m.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.detach().clone()) |> dict

let private sliceOf (tensors: Collections.Generic.IDictionary<string, Tensor>) (s: UnitSlice) = s.View(tensors[s.Parameter])

let private bytesOf (t: Tensor) = t.contiguous().bytes.ToArray()

let private examples (tok: Klf.Tokenizers.ITextTokenizer) family task n =
    BenchmarkData.records "train" task
    |> List.truncate n
    |> List.map (fun r -> (Example.create (r.Id) (r.Input) (r.Output)))
    |> Prompt.examples family tok

let private trainOptions steps lr = TrainerOptions(BatchSize = 8, MaxSteps = steps, Seed = 2, MaxLength = 192, Optimizer = OptimizerOptions(LearningRate = lr, WarmupSteps = 2))

/// Runs two tasks through a KIF session; returns the session, θ̄_1 and θ_2 copies (before fusion).
let private twoTasks (model: ILanguageModel) (tok: Klf.Tokenizers.ITextTokenizer) (options: KifOptions) (extraHooks: StepHooks -> unit) lr =
    let session = new KifSession(model, options)
    let h1 = session.BeginTask "agnews"
    extraHooks h1
    Trainer.Fit(model, examples tok model.Family "agnews" 64, trainOptions 16 lr, h1) |> ignore
    let r1 = session.EndTask()
    let previous = copyAll model
    let h2 = session.BeginTask "dbpedia"
    extraHooks h2
    Trainer.Fit(model, examples tok model.Family "dbpedia" 64, trainOptions 16 lr, h2) |> ignore
    let current = copyAll model
    let r2 = session.EndTask()
    session, r1, r2, previous, current

let private disposeAll (d: Collections.Generic.IDictionary<string, Tensor>) = for t in d.Values do t.Dispose()

[<Tests>]
let tests =
    testSequenced <| testList "kif" [
        test "full fine-tuning, static rule: two tasks on a tiny LLaMA; the fusion laws hold on the real models" {
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            torch.manual_seed 5L |> ignore
            use model = new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize))
            let session, r1, r2, previous, current = twoTasks model tok (KifOptions.FullFineTuning()) ignore 3e-3
            use _ = session
            let map = session.Map
            Expect.isNull (box r1.Fusion) "no fusion after the first task"
            Expect.equal r1.StepsCounted 15 "16 steps minus the first (the last one counts, as in the reference)"
            Expect.equal r1.Accumulated r1.Normalised "Â_1 = Ŝ_1"
            let report = r2.Fusion
            Expect.equal report.Units.Count map.Count "every unit reported"
            for c in [ UnitCategory.Shared; UnitCategory.PreviousOnly; UnitCategory.CurrentOnly; UnitCategory.Neither ] do
                printfn "kif full: %A units: %d" c (report.CountOf c)
            Expect.isGreaterThan (report.CountOf UnitCategory.PreviousOnly + report.CountOf UnitCategory.CurrentOnly) 0 "some units are task-specific"
            Expect.all r2.Accumulated (fun a -> a >= 0.0 && a <= 1.0) "accumulated importance in [0,1]"
            let live = model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p :> Tensor) |> dict
            use _scope = torch.NewDisposeScope()
            for u, ur in Seq.zip map.Units report.Units do
                for s in u.Slices do
                    let fused, prev, cur = sliceOf live s, sliceOf previous s, sliceOf current s
                    match ur.Category with
                    | UnitCategory.PreviousOnly -> Expect.equal (bytesOf fused) (bytesOf prev) $"{u.Id}: previous-only unit bit-identical to θ̄_1"
                    | UnitCategory.CurrentOnly -> Expect.equal (bytesOf fused) (bytesOf cur) $"{u.Id}: current-only unit bit-identical to θ_2"
                    | _ ->
                        let lo, hi = torch.minimum(prev, cur), torch.maximum(prev, cur)
                        Expect.isTrue (fused.ge(lo).all().item<bool>() && fused.le(hi).all().item<bool>()) $"{u.Id}: every element between its inputs"
                    let lambda = match ur.Category with UnitCategory.Shared -> 0.3 | UnitCategory.PreviousOnly -> 0.0 | UnitCategory.CurrentOnly -> 1.0 | _ -> 0.5
                    Expect.equal ur.Lambda lambda $"{u.Id}: λ from the static table"
            // Fusing the model with itself changes nothing.
            use self = ParameterSnapshot.TakeTrainable model
            let before = copyAll model
            let n = map.Count
            ModelFusion.Apply(model, self, FusionPlan(map, Array.create n 0.5, Array.create n 0.5, Array.create n UnitCategory.Shared), KifStaticRule(), 0L) |> ignore
            for KeyValue(k, t) in before do Expect.equal (bytesOf live[k]) (bytesOf t) $"{k}: self-fusion is the identity"
            disposeAll before; disposeAll previous; disposeAll current
        }

        test "neuron blocks (kif-neuron): neuron-16 and head units, per-module-type normalisation; neither and current-only units take θ_2 exactly" {
            let options = KifOptions.NeuronBlocks()
            Expect.equal options.Partitioner.Name "neuron-16" "16 neurons per unit"
            Expect.equal options.Normalisation Klf.Importance.NormalisationScope.ModuleType "group-wise identification by module type"
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            torch.manual_seed 5L |> ignore
            use model = new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize))
            let session, _, r2, previous, current = twoTasks model tok options ignore 3e-3
            use _ = session
            let map = session.Map
            Expect.isTrue (map.Units |> Seq.exists (fun u -> u.ModuleType = "mlp.neuron")) "feed-forward neuron units"
            let report = r2.Fusion
            Expect.isGreaterThan (report.CountOf UnitCategory.Neither) 0 "some units are important to neither task"
            let live = model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p :> Tensor) |> dict
            use _scope = torch.NewDisposeScope()
            for u, ur in Seq.zip map.Units report.Units do
                let lambda = match ur.Category with UnitCategory.Shared -> 0.3 | UnitCategory.PreviousOnly -> 0.0 | _ -> 1.0
                Expect.equal ur.Lambda lambda $"{u.Id}: λ from the table with neither = 1"
                for s in u.Slices do
                    let fused = sliceOf live s
                    match ur.Category with
                    | UnitCategory.PreviousOnly -> Expect.equal (bytesOf fused) (bytesOf (sliceOf previous s)) $"{u.Id}: kept from θ̄_1"
                    | UnitCategory.CurrentOnly | UnitCategory.Neither -> Expect.equal (bytesOf fused) (bytesOf (sliceOf current s)) $"{u.Id}: taken from θ_2"
                    | _ -> ()
            disposeAll previous; disposeAll current
        }

        test "LoRA, rank-1 units, adaptive rule, orthogonality term: two tasks on a tiny T5; weights sum to 1 on the real models" {
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.T5Folder
            torch.manual_seed 6L |> ignore
            use model = Klf.Models.T5.T5ForConditionalGeneration.Create(Klf.Models.T5.T5Config.Preset("t5-tiny", tok.VocabSize))
            let lora = Lora.Apply(model.Module, LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.05, TargetModules = [| "q"; "v" |]))
            let session, _, r2, previous, current = twoTasks model tok (KifOptions.Lora()) (fun h -> Orthogonality.AddTo(h, lora, "default") |> ignore) 1e-2
            use _ = session
            let map = session.Map
            Expect.equal map.Partitioner "lora-rank1" "rank-1 units"
            Expect.all map.Units (fun u -> u.Slices.Count = 2) "each unit is a row of A with a column of B"
            let rule = KifAdaptiveRule()
            let live = model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p :> Tensor) |> dict
            use _scope = torch.NewDisposeScope()
            for u, ur in Seq.zip map.Units r2.Fusion.Units do
                let w = rule.Weights(ur.PreviousScore, ur.CurrentScore)
                Expect.floatClose Accuracy.veryHigh (w.Previous + w.Current) 1.0 $"{u.Id}: adaptive weights sum to 1"
                Expect.floatClose Accuracy.veryHigh ur.Lambda w.Current $"{u.Id}: λ = c_cur"
                for s in u.Slices do
                    let fused, prev, cur = sliceOf live s, sliceOf previous s, sliceOf current s
                    let expected = prev + (cur - prev) * ur.Lambda
                    Expect.isTrue (torch.allclose(fused, expected, 1e-5, 1e-6)) $"{u.Id} {s}: fused = prev + λ (cur − prev) on the same λ for A's row and B's column"
            // The frozen base is untouched by fusion.
            for KeyValue(k, t) in previous do
                if not (Lora.IsLoraPath k) then Expect.equal (bytesOf live[k]) (bytesOf t) $"{k}: frozen base weight unchanged"
            disposeAll previous; disposeAll current
        }
    
        test "session: misuse is a clear error, AbortTask recovers, the profile round-trips by unit id" {
            torch.manual_seed 7L |> ignore
            use model = new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset "llama-tiny")
            use session = new KifSession(model, KifOptions.FullFineTuning())
            Expect.throwsT<InvalidOperationException> (fun () -> session.EndTask() |> ignore) "EndTask before BeginTask"
            let train = LmContract.examples 3 32
            let h = session.BeginTask "a"
            Expect.throwsT<InvalidOperationException> (fun () -> session.BeginTask "b" |> ignore) "BeginTask twice"
            session.AbortTask()
            for name in [ "a"; "b" ] do
                let h = session.BeginTask name
                Trainer.Fit(model, train, TrainerOptions(BatchSize = 8, MaxSteps = 6, Seed = 1), h) |> ignore
                session.EndTask() |> ignore
            Expect.equal session.History.Count 2 "two completed tasks"
            let path = IO.Path.Combine(IO.Path.GetTempPath(), $"klf-profile-{Guid.NewGuid():N}.json")
            try
                session.Profile().Save path
                let loaded = Klf.Importance.ImportanceProfile.Load(path, session.Map)
                Expect.equal (loaded.AlignTo session.Map) session.Accumulated "accumulated importance round-trips by unit id"
                Expect.equal loaded.History.Count 2 "per-task history kept"
            finally IO.File.Delete path
        }
    ]
