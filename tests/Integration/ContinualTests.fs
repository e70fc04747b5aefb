/// Strategies over a real task sequence: every shipped strategy runs three tasks through the default
/// loop, fills the accuracy matrix, and does what it exists for, as a wrapper around its hooks sees
/// it: KIF fuses by its λ table (previous-only units are θ̄_{k−1} bit for bit), IncLoRA and O-LoRA
/// keep earlier adapters frozen, O-LoRA and EWC add a non-zero penalty from task 2 on, replay adds
/// earlier tasks' examples, Recurrent-KIF interleaves memory steps, MTL trains once on the union.
module ContinualTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Klf.Adapters
open Klf.Models
open Klf.Training
open Klf.Pipelines

type private Weights = Map<string, float32[]>

/// What a strategy did around one task: the weights before the task (θ̄_{k−1}), after training (θ_k)
/// and after its end-of-task hook, its extra losses' values per step, its training examples.
type private Trace(task: TaskData, before: Weights, extraLosses: int) =
    member val Task = task
    member val Before = before
    /// After the strategy's BeginTask (e.g. with the task's new adapter).
    member val AtStart : Weights = Map.empty with get, set
    member val Trained : Weights = Map.empty with get, set
    member val After : Weights = Map.empty with get, set
    /// How many extra losses the strategy's hooks carry this task.
    member val ExtraLossCount = extraLosses
    /// Every extra loss value the trainer computed, in order.
    member val ExtraLossValues = ResizeArray<float>()
    member val TrainExamples : Example[] = [||] with get, set
    member val Interleaved = false with get, set

let private weights (model: ILanguageModel) : Weights =
    use _ = torch.no_grad()
    Map [ for struct (name, p) in model.Module.named_parameters() ->
            use f = p.detach().to_type(torch.ScalarType.Float32).cpu()
            name, f.data<float32>().ToArray() ]

/// `strategy` with every hook observed; the traces of its tasks go to `traces`.
let private observed (traces: ResizeArray<Trace>) (strategy: Strategy) : Strategy =
    { Name = strategy.Name
      Start = fun model ->
        let inner = strategy.Start model
        let mutable current : Trace option = None
        let trace () = current |> Option.defaultWith (fun () -> failwith "a hook ran outside a task")
        { inner with
            BeginTask = fun t ->
                let before = weights model
                let hooks = inner.BeginTask t
                let originals = List.ofSeq hooks.ExtraLosses
                let tr = Trace(t, before, originals.Length)
                tr.AtStart <- weights model
                hooks.ExtraLosses.Clear()
                for f in originals do
                    hooks.ExtraLosses.Add(Func<StepContext, torch.Tensor>(fun ctx ->
                        let v = f.Invoke ctx
                        tr.ExtraLossValues.Add(v.detach().to_type(torch.ScalarType.Float64).item<float>())
                        v))
                current <- Some tr
                hooks
            TrainExamples = fun t xs ->
                let r = inner.TrainExamples t xs
                trace().TrainExamples <- r
                r
            Interleave = fun t ->
                let r = inner.Interleave t
                trace().Interleaved <- r.IsSome
                r
            AfterFit = fun f ->
                trace().Trained <- weights model
                inner.AfterFit f
            EndTask = fun t ->
                inner.EndTask t
                let tr = trace ()
                tr.After <- weights model
                traces.Add tr
                current <- None } }

let private isLora (name: string) = Lora.IsLoraPath name
let private same (a: float32[]) (b: float32[]) = a.Length = b.Length && Array.forall2 (fun (x: float32) y -> BitConverter.SingleToInt32Bits x = BitConverter.SingleToInt32Bits y) a b

/// Names whose values differ between two snapshots (over the names of the first).
let private changed (a: Weights) (b: Weights) =
    [ for KeyValue(n, v) in a do if not (same v b[n]) then yield n ]

/// Every fused element lies between θ̄_{k−1} and θ_k (the interpolating KIF rules).
let private between (t: Trace) (names: string seq) =
    for n in names do
        let p, c, f = t.Before[n], t.Trained[n], t.After[n]
        for i in 0 .. f.Length - 1 do
            let lo, hi = min p[i] c[i], max p[i] c[i]
            if not (f[i] >= lo && f[i] <= hi) then failtestf "%s: %s[%d] = %g outside [%g, %g]" t.Task.Name n i f[i] lo hi

/// The category a whole-tensor unit was fused with under the reference static rule: exactly θ̄_{k−1}
/// (λ 0, previous-only), exactly θ_k (λ 1, current-only), or the interpolation with λ 0.3 (shared)
/// or 0.5 (neither), λ estimated by least squares over the elements that moved.
let private staticCategory (t: Trace) (n: string) =
    let p, c, f = t.Before[n], t.Trained[n], t.After[n]
    if same f p && not (same c p) then "previous-only"
    elif same f c && not (same c p) then "current-only"
    else
        let mutable num, den = 0.0, 0.0
        for i in 0 .. f.Length - 1 do
            let d = float c[i] - float p[i]
            num <- num + (float f[i] - float p[i]) * d
            den <- den + d * d
        let lambda = num / den
        if abs (lambda - 0.3) < 1e-3 then "shared"
        elif abs (lambda - 0.5) < 1e-3 then "neither"
        else failtestf "%s: %s is no unit of the λ table (λ ≈ %g)" t.Task.Name n lambda

/// Reference KIF with full fine-tuning: task 1 is not fused; from task 2 on every tensor (a unit)
/// is θ̄_{k−1}, θ_k or their λ-interpolation by category, and both top fractions and the rest are populated.
let private checkStaticKif (traces: Trace list) =
    let first = traces.Head
    Expect.isEmpty (changed first.Trained first.After) "task 1: nothing fused"
    for t in traces.Tail do
        let cats = [ for n in t.After.Keys -> staticCategory t n ] |> List.countBy id |> Map
        let count c = Map.tryFind c cats |> Option.defaultValue 0
        printfn "  %s: units by category %A" t.Task.Name cats
        Expect.isGreaterThan (count "previous-only" + count "shared") 0 $"{t.Task.Name}: some units important to earlier tasks keep θ̄_(k-1)'s share"
        Expect.isGreaterThan (count "current-only" + count "shared") 0 $"{t.Task.Name}: some units important to the task"
        Expect.isGreaterThan (count "neither") 0 $"{t.Task.Name}: the other units are averaged"
        between t t.After.Keys

let private checkBaseFrozen (traces: Trace list) =
    for t in traces do
        let baseNames = t.Before.Keys |> Seq.filter (isLora >> not)
        for n in baseNames do Expect.isTrue (same t.Before[n] t.After[n]) $"{t.Task.Name}: base weight {n} unchanged"

let private checkNoPenalty (t: Trace) = Expect.equal t.ExtraLossCount 0 $"{t.Task.Name}: no extra loss"

/// A penalty from task 2 on, non-zero once the weights moved from where it anchors them.
let private checkPenalty (traces: Trace list) (allPositive: bool) =
    checkNoPenalty traces.Head
    for t in traces.Tail do
        Expect.equal t.ExtraLossCount 1 $"{t.Task.Name}: one extra loss"
        Expect.isNonEmpty t.ExtraLossValues $"{t.Task.Name}: evaluated at the steps"
        Expect.isGreaterThan (Seq.max t.ExtraLossValues) 0.0 $"{t.Task.Name}: the penalty is non-zero"
        if allPositive then Expect.all t.ExtraLossValues (fun v -> v > 0.0) $"{t.Task.Name}: the penalty is positive at every step"

/// Earlier tasks' examples join the training set from task 2 on (the memory), never the test set.
let private checkReplay (traces: Trace list) =
    let first = traces.Head
    Expect.equal first.TrainExamples.Length first.Task.Train.Length "task 1 trains on its own examples"
    for k in 1 .. traces.Length - 1 do
        let t = traces[k]
        let own = set [ for e in t.Task.Train -> e.Id, e.Input ]
        let extra = t.TrainExamples |> Array.filter (fun e -> not (own.Contains(e.Id, e.Input)))
        Expect.isNonEmpty extra $"{t.Task.Name}: replayed examples"
        let earlier = set [ for j in 0 .. k - 1 do for e in traces[j].Task.Train -> e.Id, e.Input ]
        Expect.all extra (fun e -> earlier.Contains(e.Id, e.Input)) $"{t.Task.Name}: replayed examples come from earlier tasks' training sets"

/// What each shipped strategy must have done to the model around its tasks.
let private checkStrategy (name: string) (traces: Trace list) (m: AccuracyMatrix) =
    let lora (t: Trace) = t.After.Keys |> Seq.filter isLora |> List.ofSeq
    match name with
    | "seqft" ->
        for t in traces do
            checkNoPenalty t
            Expect.isEmpty (changed t.Trained t.After) $"{t.Task.Name}: nothing after training"
            Expect.isNonEmpty (changed t.Before t.Trained) $"{t.Task.Name}: training changed the weights"
    | "seqlora" ->
        checkBaseFrozen traces
        for t in traces do
            Expect.equal (lora t |> List.filter (fun n -> n.Contains ".default.")) (lora t) "one adapter, default"
            Expect.isNonEmpty (changed t.Before t.After) $"{t.Task.Name}: the adapter trained"
    | "kif" -> checkStaticKif traces
    | "kif-replay" ->
        checkStaticKif traces
        checkReplay traces
    | "kif-neuron" ->
        Expect.isEmpty (changed traces.Head.Trained traces.Head.After) "task 1: nothing fused"
        for t in traces.Tail do
            Expect.isNonEmpty (changed t.Trained t.After) $"{t.Task.Name}: fused (units important to earlier tasks only keep θ̄_(k-1))"
            between t t.After.Keys
    | "kif-lora" ->
        checkBaseFrozen traces
        Expect.isEmpty (changed traces.Head.Trained traces.Head.After) "task 1: nothing fused"
        for t in traces.Tail do
            Expect.isNonEmpty (changed t.Trained t.After) $"{t.Task.Name}: the adapter fused (adaptive λ strictly inside (0, 1))"
            between t (lora t)
    | "rkif" | "rkif-lora" ->
        if name = "rkif-lora" then checkBaseFrozen traces
        Expect.isFalse traces.Head.Interleaved "task 1 trains plainly"
        for t in traces.Tail do Expect.isTrue t.Interleaved $"{t.Task.Name}: memory steps and merges interleaved"
    | "inclora" | "olora" ->
        checkBaseFrozen traces
        traces |> List.iteri (fun k t ->
            let adapter i = lora t |> List.filter (fun n -> n.Contains $".task{i}.")
            for i in 0 .. k do Expect.isNonEmpty (adapter i) $"{t.Task.Name}: adapter task{i} present"
            Expect.isEmpty (lora t |> List.filter (fun n -> n.Contains $".task{k + 1}.")) $"{t.Task.Name}: no adapter beyond task{k}"
            for i in 0 .. k - 1 do
                for n in adapter i do Expect.isTrue (same t.Before[n] t.After[n]) $"{t.Task.Name}: earlier adapter {n} frozen"
            Expect.isFalse (t.Before.ContainsKey (List.head (adapter k))) $"{t.Task.Name}: adapter task{k} is added by the task"
            Expect.isNonEmpty (adapter k |> List.filter (fun n -> not (same t.AtStart[n] t.After[n]))) $"{t.Task.Name}: the new adapter trained")
        if name = "olora" then checkPenalty traces true else traces |> List.iter checkNoPenalty
    | "ewc" -> checkPenalty traces false
    | "replay" -> checkReplay traces
    | "mtl" ->
        Expect.equal traces.Length 1 "one joint training"
        Expect.equal traces.Head.TrainExamples.Length (traces.Head.Task.Train.Length * 3) "on the union of the three tasks' examples"
        for j in 0 .. 2 do
            for i in 0 .. j do Expect.equal m[j, i] m[2, i] $"a[{j},{i}] = a[2,{i}]: every row holds the joint model's scores"
    | other -> failtestf "no check for strategy %s: add what it must change" other

[<Tests>]
let tests =
    testSequenced <| testList "continual" [
        for family, instruction in [ "a LLaMA decoder", false; "a BERT sentence encoder", true ] do
          test $"every shipped strategy completes a 3-task run on real Long Sequence slices with {family}, fills the matrix and does what it exists for" {
            let encoder = instruction
            let tok =
                if encoder then SentenceEncoderKit.tokenizer SentenceEncoderKit.miniLm
                else Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            let root = IO.Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")
            let sequence =
                [ "dbpedia"; "amazon"; "agnews" ]
                |> List.map (Task.load root >> if encoder then Task.dropInstruction else id)
                |> TaskSequence.create "standard-3"
                |> TaskSequence.subsample 4 { Train = 16; Test = 4 }
            let makeModel () =
                // Four layers: kif-neuron ranks units against the top 20 % of all of them, and with two layers
                // the maxima of its per-module-type groups alone are more than a fifth of the units.
                if encoder then SentenceEncoderKit.tinyWith 4 9L :> ILanguageModel
                else
                    torch.manual_seed 9L |> ignore
                    new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize)) :> ILanguageModel
            // Few steps: enough for every hook to act (importance skips step 0), quick for 13 strategies.
            let options = TrainerOptions(BatchSize = 4, MaxSteps = 3, Seed = 1, MaxLength = (if encoder then 64 else 160), Optimizer = OptimizerOptions(LearningRate = 5e-3, WarmupSteps = 1))
            Expect.equal (List.sort [ for s in Strategy.all -> s.Name ]) (List.sort [ "seqft"; "seqlora"; "kif"; "kif-neuron"; "kif-lora"; "rkif"; "rkif-lora"; "inclora"; "olora"; "ewc"; "replay"; "kif-replay"; "mtl" ]) "every shipped strategy is checked below"
            for strategy in Strategy.all do
                let traces = ResizeArray<Trace>()
                let r = Continual.run makeModel tok options (observed traces strategy) sequence
                let m = r.Matrix
                Expect.equal r.Tasks [ "dbpedia"; "amazon"; "agnews" ] "task order kept"
                for j in 0 .. 2 do
                    for i in 0 .. j do
                        let a = m[j, i]
                        Expect.isTrue (a >= 0.0 && a <= 100.0) $"{strategy.Name}: a[{j},{i}] = {a} is a percentage"
                // The metrics are the formulas applied to the matrix.
                let ap = (m[2, 0] + m[2, 1] + m[2, 2]) / 3.0
                let bwt = ((m[2, 0] - m[0, 0]) + (m[2, 1] - m[1, 1])) / 2.0
                Expect.floatClose Accuracy.veryHigh r.Summary.AP ap $"{strategy.Name}: AP"
                Expect.floatClose Accuracy.veryHigh r.Summary.BWT bwt $"{strategy.Name}: BWT"
                printfn "continual %-10s (%s) AP %5.1f  F.Ra %5.1f  BWT %6.1f" strategy.Name family r.Summary.AP r.Summary.FRa r.Summary.BWT
                checkStrategy strategy.Name (List.ofSeq traces) m
          }

        test "a LoRA strategy's run does not depend on what drew from torch's generator before it (a resumed run starts in a fresh process)" {
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            let root = IO.Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")
            let sequence =
                [ "dbpedia"; "amazon" ] |> List.map (Task.load root) |> TaskSequence.create "two" |> TaskSequence.subsample 4 { Train = 8; Test = 2 }
            let makeModel () =
                torch.manual_seed 9L |> ignore
                new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize)) :> ILanguageModel
            let options = TrainerOptions(BatchSize = 4, MaxSteps = 2, Seed = 1, MaxLength = 160, Optimizer = OptimizerOptions(LearningRate = 5e-3, WarmupSteps = 0))
            let losses (before: unit -> unit) =
                let steps = ResizeArray<float>()
                let strategy = IncrementalLora.incLora 4
                // The model is made (and seeded) first, then something else draws from the generator.
                let make () = let m = makeModel () in before (); m
                let control = { RunControl.none with OnFit = fun _ _ fit -> for s in fit.Steps do steps.Add s.GradNorm }
                Continual.execute control make tok options strategy sequence |> ignore
                List.ofSeq steps
            let fresh = losses ignore
            let after = losses (fun () -> use t = torch.rand([| 1000L |]) in ())
            Expect.equal after fresh "the same gradient norms, step for step (LoRA dropout masks and adapter initialisation)"
        }

        test "strategies are selectable by name; unknown names list the known ones" {
            Expect.equal (Strategy.byName "KIF").Name "kif" "case-insensitive"
            let msg = try Strategy.byName "lwf" |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains msg "kif-lora" "lists the known strategies"
            for name in [ "kif-neuron"; "inclora"; "olora"; "ewc"; "replay"; "kif-replay"; "mtl" ] do
                Expect.equal (Strategy.byName name).Name name $"{name} selectable"
        }
    ]
