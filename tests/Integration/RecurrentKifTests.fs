/// The trainer's best-validation checkpoints and interleaved steps, the weight-decay scope, and
/// Recurrent-KIF's session on a real (tiny) model: the merge against a naive element-by-element
/// reference, the inner importance reset after each merge, the outer one accumulating.
module RecurrentKifTests

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.Training
open Klf.Importance
open Klf.Kif

type private Tensor = torch.Tensor

let private trainable (m: ILanguageModel) =
    m.Module.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, p) -> n, p :> Tensor) |> Array.ofSeq

/// Float copies of every trainable parameter, by name.
let private copy (m: ILanguageModel) =
    trainable m |> Array.map (fun (n, p) -> n, p.detach().cpu().flatten().data<float32>().ToArray()) |> Map.ofArray

let private options steps lr =
    TrainerOptions(BatchSize = 4, MaxSteps = steps, Seed = 7, Optimizer = OptimizerOptions(LearningRate = lr, WarmupSteps = 0, WeightDecay = 0.0))

/// numpy's linear quantile on doubles.
let private naiveQuantile (xs: float[]) (q: float) =
    let v = Array.sort xs
    let h = float (v.Length - 1) * q
    let lo = int (floor h)
    if lo >= v.Length - 1 then v[v.Length - 1] else v[lo] + (h - float lo) * (v[lo + 1] - v[lo])

[<Tests>]
let tests =
    testSequenced <| testList "recurrent kif and training extras" [
        test "best-validation: the model ends with the weights of the lowest validation loss, measured every k steps and at the end; deterministic" {
            let train, heldOut = LmContract.examples 1 8, LmContract.examples 99 12
            let run keepBest =
                use m = TinyLm.create 3L
                let model = m :> ILanguageModel
                let after = Collections.Generic.List<Map<string, float32[]>>()
                let extras = FitExtras(null, Action<StepMetrics>(fun _ -> after.Add(copy model)), ValidationSet(heldOut, 3, keepBest))
                let r = Trainer.Run(model, train, options 20 0.05, extras)
                r, after.ToArray(), copy model
            let r, after, final = run true
            Expect.equal [ for p in r.Validation -> p.Step ] [ 3; 6; 9; 12; 15; 18; 20 ] "every 3 steps and after the last"
            let best = r.Validation |> Seq.minBy (fun p -> p.Loss)
            Expect.equal r.Kept best "the lowest loss is kept (the earliest of equals)"
            Expect.isLessThan r.Kept.Step 20 "this over-fitting run keeps an earlier step (the test needs one)"
            Expect.equal final after[r.Kept.Step - 1] "the weights are those after the kept step, bit for bit"
            let r2, _, final2 = run true
            Expect.equal (r2.Validation |> Seq.map (fun p -> p.Loss) |> Array.ofSeq) (r.Validation |> Seq.map (fun p -> p.Loss) |> Array.ofSeq) "same losses"
            Expect.equal final2 final "same weights"
            let r3, after3, final3 = run false
            Expect.equal r3.Kept.Step 20 "KeepBest off: the last step"
            Expect.equal final3 after3[19] "and its weights"
        }

        test "best-validation leaves the importance as collected during training (every step counted)" {
            use m = TinyLm.create 4L
            let model = m :> ILanguageModel
            let hooks = StepHooks()
            use tracker = new ImportanceTracker(ImportanceOptions(ImportanceOrder.First))
            tracker.Attach(hooks, model.Module)
            let r = Trainer.Run(model, LmContract.examples 1 8, options 12 0.05, FitExtras(hooks, null, ValidationSet(LmContract.examples 99 8, 4)))
            Expect.equal tracker.StepsCounted 11 "12 steps minus the first, whatever step was kept"
            Expect.isNotNull (box r.Kept) "a step was kept"
        }

        test "interleaved steps: M after every Q main steps, none after the last partial round; the schedule counts main steps only" {
            let train, memory = LmContract.examples 1 16, LmContract.examples 5 4
            let run (interleave: bool) =
                use m = TinyLm.create 5L
                let model = m :> ILanguageModel
                let calls = Collections.Generic.List<string>()
                let outerSteps = Collections.Generic.List<int>()
                let outerHooks = StepHooks()
                outerHooks.AfterOptimizerStep.Add(fun ctx -> outerSteps.Add ctx.Step)
                let stream =
                    if interleave then InterleavedSteps(memory, 3, 2, outerHooks, (fun () -> calls.Add "before"), (fun () -> calls.Add "after"), 2, 11)
                    else null
                let opts = TrainerOptions(BatchSize = 4, MaxSteps = 10, Seed = 7, Optimizer = OptimizerOptions(LearningRate = 0.01, WarmupSteps = 2))
                let r = Trainer.Run(model, train, opts, FitExtras(Interleave = stream))
                r, List.ofSeq calls, List.ofSeq outerSteps
            let r, calls, outer = run true
            let plain, _, _ = run false
            Expect.equal r.Steps.Count 10 "ten main steps"
            Expect.equal r.InterleavedSteps 6 "2 × ⌊10 / 3⌋"
            Expect.equal calls [ "before"; "after"; "before"; "after"; "before"; "after" ] "callbacks around each round"
            Expect.equal outer [ 3; 3; 6; 6; 9; 9 ] "the stream's steps see the main step count (the schedule does not move)"
            Expect.equal [ for s in r.Steps -> s.LearningRate ] [ for s in plain.Steps -> s.LearningRate ] "the main steps' learning rates are those of plain training"
        }

        test "weight decay on matrices only: norm-free 1-D parameters (biases) are not decayed, 2-D ones are as with decay on all" {
            let step (scope: WeightDecayScope) =
                use m = TinyLm.create 6L
                let model = m :> ILanguageModel
                let before = copy model
                use runner = new StepRunner(model, OptimizerOptions(LearningRate = 0.1, WeightDecay = 0.5, DecayOn = scope))
                let layout = BatchLayout.For(model, 64)
                use batch = Batching.Build(LmContract.examples 2 4, layout)
                runner.Step([| batch |]) |> ignore
                before, copy model, (trainable model |> Array.map (fun (n, p) -> n, p.dim()) |> Map.ofArray)
            let before, all, dims = step WeightDecayScope.All
            let _, matrices, _ = step WeightDecayScope.Matrices
            for KeyValue(name, dim) in dims do
                if dim >= 2L then Expect.equal matrices[name] all[name] $"{name}: decayed alike"
                else
                    // AdamW decouples the decay: θ ← θ − lr·wd·θ_old − lr·adam, so the difference is lr·wd·θ_old.
                    let diff = Array.map3 (fun (m: float32) (a: float32) (b: float32) -> abs (m - a - 0.05f * b)) matrices[name] all[name] before[name]
                    Expect.isLessThan (Array.max diff) 1e-6f $"{name}: differs by exactly the decay"
        }

        test "Recurrent-KIF merge on a trained model equals anchor + c_in·δ_in + c_out·δ_out element by element; the anchor moves; inner resets, outer accumulates" {
            use m = TinyLm.create 7L
            let model = m :> ILanguageModel
            use session = new RecurrentKifSession(model, RecurrentKifOptions(InnerSteps = 2, OuterSteps = 1))
            let opts = options 6 0.02
            // Task 1: trained plainly (no memory, no merge).
            let hooks = session.BeginTask()
            Trainer.Run(model, LmContract.examples 1 8, opts, FitExtras(hooks)) |> ignore
            session.EndTask()
            Expect.isEmpty session.Merges "task 1: no merges"
            // Task 2 by hand: inner steps, outer steps, then the merge, against the naive reference.
            let hooks = session.BeginTask()
            Expect.equal (session.InnerStepsCounted, session.OuterStepsCounted) (0, 0) "both importances start afresh with the task (the reference)"
            let stream = session.Interleave(LmContract.examples 5 4)
            let anchor = copy model
            let inner = ref Map.empty
            let stream2 =
                InterleavedSteps(stream.Examples, stream.Every, stream.Steps, stream.Hooks,
                                 (fun () -> stream.Before.Invoke(); inner.Value <- copy model),
                                 (fun () ->
                                    if session.Merges.Count = 0 then
                                        let current = copy model
                                        let scores (isInner: bool) =
                                            let d = session.ElementScores isInner
                                            let r = d |> Seq.map (fun kv -> kv.Key, kv.Value.flatten().data<float32>().ToArray()) |> Map.ofSeq
                                            for t in d.Values do t.Dispose()
                                            r
                                        let sIn, sOut = scores true, scores false
                                        Expect.equal session.InnerStepsCounted 1 "Q = 2 inner steps seen before the first merge, step 0 skipped (the reference gate)"
                                        let q (s: Map<string, float32[]>) = naiveQuantile (s |> Seq.collect (fun kv -> kv.Value) |> Seq.map float |> Array.ofSeq) 0.8
                                        let tIn, tOut = q sIn, q sOut
                                        stream.After.Invoke()
                                        let merged = copy model
                                        let table = RecurrentMergeTable.Reference
                                        for KeyValue(n, a) in anchor do
                                            for i in 0 .. a.Length - 1 do
                                                let c = table.For(sIn[n][i] > float32 tIn, sOut[n][i] > float32 tOut)
                                                let got = merged[n][i]
                                                let want = float a[i] + c.Inner * float (inner.Value[n][i] - a[i]) + c.Outer * float (current[n][i] - inner.Value[n][i])
                                                if abs (float got - want) > 1e-5 * (abs want + 1.0) then
                                                    failtestf "%s[%d]: merged %g, reference %g" n i got want
                                        Expect.equal session.InnerStepsCounted 0 "the inner importance resets after the merge"
                                        Expect.equal session.OuterStepsCounted 1 "M outer steps counted"
                                    else stream.After.Invoke()),
                                 stream.BatchSize, stream.Seed)
            Trainer.Run(model, LmContract.examples 2 8, opts, FitExtras(hooks, Interleave = stream2)) |> ignore
            Expect.equal session.Merges.Count 3 "⌊6 / 2⌋ merges"
            Expect.equal session.OuterStepsCounted 3 "the outer importance accumulates over the task's merges"
            for r in session.Merges do
                Expect.equal (r.Both + r.InnerOnly + r.OuterOnly + r.Neither) (trainable model |> Array.sumBy (fun (_, p) -> p.numel())) "every element in one cell"
            session.EndTask()
            session.BeginTask() |> ignore
            Expect.equal session.OuterStepsCounted 0 "a new task resets the outer importance (reference)"
            session.AbortTask()
        }

        test "Recurrent-KIF with OuterAcrossTasks keeps the outer importance from task to task, also through a saved and restored state" {
            let dir = IO.Directory.CreateTempSubdirectory("klf-rkif-state-").FullName
            try
                use m = TinyLm.create 8L
                let model = m :> ILanguageModel
                let o = RecurrentKifOptions(InnerSteps = 2, OuterSteps = 1, OuterAcrossTasks = true)
                use session = new RecurrentKifSession(model, o)
                for task in 1 .. 2 do
                    let hooks = session.BeginTask()
                    Trainer.Run(model, LmContract.examples task 8, options 4 0.02, FitExtras(hooks, Interleave = session.Interleave(LmContract.examples 5 4))) |> ignore
                    session.EndTask()
                Expect.equal session.OuterStepsCounted 4 "two tasks × 2 merges × 1 outer step"
                session.SaveState dir
                use restored = new RecurrentKifSession(model, o)
                restored.RestoreState dir
                restored.BeginTask() |> ignore
                Expect.equal restored.OuterStepsCounted 4 "restored and kept into the next task"
                let a, b = session.ElementScores false, restored.ElementScores false
                for KeyValue(n, t) in a do Expect.isTrue (t.equal(b[n]).all().item<bool>()) $"{n}: outer scores restored bit for bit"
                for t in Seq.append a.Values b.Values do t.Dispose()
                restored.AbortTask()
            finally IO.Directory.Delete(dir, true)
        }
    ]
