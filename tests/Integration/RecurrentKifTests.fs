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


let private trainable = TinyLm.trainable
let private copy = TinyLm.copyTrainable
let private options = TinyLm.plainOptions

/// numpy's linear quantile on doubles.
let private naiveQuantile (xs: float[]) (q: float) =
    let v = Array.sort xs
    let h = float (v.Length - 1) * q
    let lo = int (floor h)
    if lo >= v.Length - 1 then v[v.Length - 1] else v[lo] + (h - float lo) * (v[lo + 1] - v[lo])

[<Tests>]
let tests =
    testSequenced <| testList "recurrent kif" [
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
