/// Focused tests of the continual-learning baselines: IncLoRA, O-LoRA, EWC, Replay and MTL.
module BaselineTests

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.Training
open Klf.Adapters
open Klf.Pipelines
open Klf.Training.Regularizers

let private tok = lazy (Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder)

let private sequence =
    lazy (
        let root = IO.Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")
        [ "dbpedia"; "amazon"; "agnews" ]
        |> List.map (Task.load root)
        |> TaskSequence.create "baselines-3"
        |> TaskSequence.subsample 5 { Train = 16; Test = 4 })

let private newModel () =
    torch.manual_seed 11L |> ignore
    new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.Value.VocabSize)) :> ILanguageModel

let private options = TrainerOptions(BatchSize = 4, MaxSteps = 3, Seed = 1, MaxLength = 160, Optimizer = OptimizerOptions(LearningRate = 5e-3))

let private values (t: torch.Tensor) : float[] =
    use d = t.detach().cpu().to_type(torch.float64)
    d.data<float>().ToArray()

let private example i output = Example.create (string i) $"input {i}" output

[<Tests>]
let tests =
    testSequenced <| testList "baselines" [
        test "IncLoRA adds one adapter per task (task0, task1, …); earlier ones stay active, frozen and bit-identical" {
            let mutable model : ILanguageModel = Unchecked.defaultof<_>
            let makeModel () = model <- newModel (); model
            let snapshots = Collections.Generic.Dictionary<string, float[][]>()
            let onTask j _ _ =
                let lora = Lora.Find(model.Module)
                Expect.isNotNull lora "LoRA applied"
                Expect.sequenceEqual lora.AdapterNames [ for k in 0 .. j -> IncrementalLora.adapterName k ] "one adapter per task so far"
                let current = IncrementalLora.adapterName j
                for name in lora.AdapterNames do
                    let ps = lora.NamedParameters name
                    for m in lora.ModulesOf name do
                        Expect.isTrue (m.IsActive name) $"{name} active after task {j}"
                    for struct (_, p) in ps do
                        Expect.equal p.requires_grad (name = current) $"{name} trainable only while current (after task {j})"
                    let now = ps |> Seq.map (fun struct (_, p) -> values p) |> Array.ofSeq
                    if name = current then snapshots[name] <- now
                    else Expect.isTrue (Array.forall2 (fun (a: float[]) b -> a = b) snapshots[name] now) $"{name} unchanged after task {j}"
                // The current adapter did train: its B left zero.
                let first = (lora.ModulesOf current)[0]
                let b = first.LoraB current
                Expect.isGreaterThan (b.abs().sum().ToDouble()) 0.0 $"{current} trained"
            let r = Continual.runWith onTask makeModel tok.Value options (IncrementalLora.incLora 4) sequence.Value
            Expect.equal r.Strategy "inclora" "name"
            Expect.equal snapshots.Count 3 "three adapters"
        }

        test "O-LoRA penalty equals a naive computation of λ1·Σ_prev Σ|A_prev A_curᵀ| and reaches A_cur" {
            use model = (newModel ()).Module
            let cfg name = LoraConfig(R = 3, Alpha = 6.0, Dropout = 0.0, TargetModules = [| "q_proj"; "v_proj" |], AdapterName = name)
            let mutable lora = Lora.Apply(model, cfg "task0")
            lora <- Lora.Apply(model, cfg "task1")
            lora <- Lora.Apply(model, cfg "task2")
            lora.SetTrainableAdapters "task2"
            use pen = OLoraPenalty.Loss(lora, "task2", [ "task0"; "task1" ], 0.5)
            let mutable naive = 0.0
            for m in lora.ModulesOf "task2" do
                let rows (a: torch.Tensor) =
                    let v = values a
                    let r, c = int a.shape[0], int a.shape[1]
                    Array.init r (fun i -> v[i * c .. i * c + c - 1])
                let cur = rows (m.LoraA "task2")
                for prev in [ "task0"; "task1" ] do
                    for p in rows (m.LoraA prev) do
                        for q in cur do
                            naive <- naive + abs (Array.fold2 (fun s x y -> s + x * y) 0.0 p q)
            naive <- 0.5 * naive
            Expect.floatClose { absolute = 1e-4; relative = 1e-5 } (pen.ToDouble()) naive "penalty = naive sum"
            Expect.isGreaterThan naive 0.0 "random A are not orthogonal"
            pen.backward()
            let m0 = lora.ModulesOf("task2")[0]
            Expect.isNotNull (m0.LoraA "task2").grad "gradient reaches the current A"
            Expect.isTrue (isNull (m0.LoraA "task0").grad) "no gradient into an earlier (frozen) A"
            use none = OLoraPenalty.Loss(lora, "task0", [], 0.5)
            Expect.equal (none.ToDouble()) 0.0 "no earlier adapters: zero"
        }

        test "EWC: the Fisher is non-negative, the penalty is zero at θ* and positive away from it" {
            let model = newModel ()
            use _m = model.Module
            let train = Prompt.examples model.Family tok.Value (sequence.Value.Tasks.Head.Train)
            use ewc = new ElasticWeightConsolidation(model, 10.0, 6, 3)
            use p0 = ewc.Penalty()
            Expect.equal (p0.ToDouble()) 0.0 "nothing consolidated: zero"
            ewc.Consolidate(train, options)
            Expect.isGreaterThan ewc.Fisher.Count 0 "a Fisher per trainable parameter"
            let mutable positive = false
            for f in ewc.Fisher.Values do
                Expect.isTrue (f.min().ToDouble() >= 0.0) "Fisher entries are non-negative"
                if f.max().ToDouble() > 0.0 then positive <- true
            Expect.isTrue positive "some Fisher entries are positive"
            use atStar = ewc.Penalty()
            Expect.equal (atStar.ToDouble()) 0.0 "zero at θ*"
            // Accumulation: a second consolidation adds to the Fisher.
            let name = ewc.Fisher.Keys |> Seq.head
            let before = ewc.Fisher[name].sum().ToDouble()
            ewc.Consolidate(train, options)
            Expect.isGreaterThan (ewc.Fisher[name].sum().ToDouble()) before "accumulated over tasks"
            let struct (_, p) = model.Module.named_parameters() |> Seq.find (fun struct (n, _) -> n = name)
            let shift () =
                use _ng = torch.no_grad()
                p.add_(Scalar.op_Implicit 0.01) |> ignore
            shift ()
            use away = ewc.Penalty()
            let f = ewc.Fisher[name]
            let naive = 5.0 * (f.sum().ToDouble()) * 0.01 * 0.01
            Expect.floatClose { absolute = 1e-7; relative = 1e-3 } (away.ToDouble()) naive "(λ/2)·Σ F·(θ−θ*)²"
        }

        test "replay memory: 2 % of a task (at least 1), label-balanced, seeded" {
            let labels = Array.concat [ Array.replicate 150 "a"; Array.replicate 80 "b"; Array.replicate 20 "c" ]
            let task = Task.create "t250" (labels |> Array.mapi example) [||]
            let m = Replay.memory 7 Replay.DefaultFraction task
            Expect.equal m.Length 5 "2 % of 250"
            let counts = m |> Array.countBy (fun e -> e.Output) |> Array.map snd
            Expect.equal counts.Length 3 "every label present"
            Expect.isLessThanOrEqual (Array.max counts - Array.min counts) 1 "balanced across labels"
            Expect.equal (Replay.memory 7 Replay.DefaultFraction task) m "same seed, same memory"
            Expect.equal (m |> Array.distinct).Length m.Length "no duplicates"
            let seeds = [ for s in 0 .. 9 -> Replay.memory s Replay.DefaultFraction task |> Array.map (fun e -> e.Id) ] |> List.distinct
            Expect.isGreaterThan seeds.Length 1 "other seeds pick other examples"
            let small = Task.create "t10" (Array.init 10 (fun i -> example i "x")) [||]
            Expect.equal (Replay.memory 1 Replay.DefaultFraction small).Length 1 "at least one example"
            // The strategy: each task trains on its own examples plus every earlier memory.
            let run = Replay.replay.Start Unchecked.defaultof<_>
            Expect.equal (run.TrainExamples task task.Train) task.Train "first task: its own examples"
            run.EndTask task
            run.EndTask small
            let mixed = run.TrainExamples small small.Train
            Expect.equal mixed.Length (10 + 5 + 1) "own + memories"
            Expect.equal mixed[10 .. 14] (Replay.memory Replay.DefaultSeed Replay.DefaultFraction task) "the first task's memory"
        }

        test "MTL trains once on the union of every task's training data and fills every row with the joint scores" {
            let seen = Collections.Generic.List<int * int>()
            let probe =
                { Name = "mtl"
                  Start = fun model ->
                    let r = Plain.mtl.Start model
                    { r with
                        TrainExamples = fun t xs -> let ys = r.TrainExamples t xs in seen.Add((xs.Length, ys.Length)); ys
                        AfterFit = fun f -> seen.Add((-1, f.Train.Length)); r.AfterFit f } }
            let r = Continual.run newModel tok.Value options probe sequence.Value
            let union = sequence.Value.Tasks |> List.sumBy (fun t -> t.Train.Length)
            Expect.equal (List.ofSeq seen) [ (union, union); (-1, union) ] "one training, on the union"
            let m = r.Matrix
            for j in 0 .. 2 do
                for i in 0 .. j do
                    Expect.equal m[j, i] m[2, i] $"a[{j},{i}] is the joint model's score"
            Expect.equal r.Summary.BWT 0.0 "BWT is 0 by construction"
            Expect.equal r.Summary.FRa 0.0 "F.Ra is 0 by construction"
        }
    ]
