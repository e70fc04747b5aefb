/// What a training run adds to plain steps: best-validation checkpoints (kept weights, importance
/// untouched), interleaved steps on a second stream, and the scope of weight decay.
module TrainingExtrasTests

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.Training
open Klf.Importance


let private trainable = TinyLm.trainable
let private copy = TinyLm.copyTrainable
let private options = TinyLm.plainOptions

[<Tests>]
let tests =
    testSequenced <| testList "training extras" [
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
    ]
