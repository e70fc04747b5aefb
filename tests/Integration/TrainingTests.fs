module TrainingTests

open System
open Expecto
open TorchSharp
type Tensor = TorchSharp.torch.Tensor
type ScalarType = TorchSharp.torch.ScalarType
open Klf.Models
open Klf.Adapters
open Klf.Training

/// A learnable toy task: the answer is the last prompt token + 10.
let examples (seed: int) (n: int) =
    let rng = Random(seed)
    [| for _ in 1 .. n ->
        let len = rng.Next(2, 7)
        let p = Array.init len (fun _ -> rng.Next(3, 20))
        LmExample(p, [| p.[len - 1] + 10 |]) |]

let private longs (t: Tensor) = t.cpu().data<int64>().ToArray() |> Array.map int

let private adapted (seed: int64) (dropout: float) =
    let m = TinyLm.create seed
    let lora = Lora.Apply(m, LoraConfig(R = 8, Alpha = 16.0, Dropout = dropout, TargetModules = [| "q_proj"; "v_proj"; "out_proj"; "lm_head" |]))
    m, lora

let private randomizeB (lora: LoraModel) =
    torch.manual_seed(99L) |> ignore
    use _ng = torch.no_grad()
    for w in lora.Modules do w.LoraB("default").normal_(0.0, 0.05) |> ignore

let private grads (ctx: StepContext) =
    [| for struct (_, p) in ctx.Trainable -> p.grad.cpu().data<float32>().ToArray() |]

let private maxAbsDiff (a: float32[][]) (b: float32[][]) =
    Array.map2 (fun (x: float32[]) (y: float32[]) -> Array.map2 (fun u v -> abs (float u - float v)) x y |> Array.max) a b |> Array.max

/// Gradient of one optimizer step over the given micro-batches (lr 0: the model does not move).
let private stepGrads (runner: StepRunner) (micro: LmBatch list) =
    let captured = ref [||]
    let hooks = StepHooks()
    hooks.AfterBackward.Add(fun ctx -> captured.Value <- grads ctx)
    let m = runner.Step(micro |> Array.ofList, hooks)
    m, captured.Value

/// Sequenced: these tests seed torch's global generator and count live tensors globally, so
/// they must not interleave with other tests.
[<Tests>]
let tests =
    testSequenced <| testList "training" [
        test "decoder-only batch: prompt+answer+eos, labels only on the answer, right padding" {
            let layout = BatchLayout(ModelFamily.DecoderOnly, 0, 2, 64)
            use b = Batching.Build([| LmExample([| 5; 6; 7 |], [| 8; 9 |]); LmExample([| 4 |], [| 3 |]) |], layout)
            Expect.equal (longs b.InputIds) [| 5; 6; 7; 8; 9; 2;   4; 3; 2; 0; 0; 0 |] "ids"
            Expect.equal (longs b.AttentionMask) [| 1; 1; 1; 1; 1; 1;   1; 1; 1; 0; 0; 0 |] "mask"
            Expect.equal (longs b.Labels) [| -100; -100; -100; 8; 9; 2;   -100; 3; 2; -100; -100; -100 |] "labels"
            Expect.equal b.LabelTokenCount 5L "label tokens"
        }

        test "encoder-decoder batch: input prompt+eos, labels answer+eos" {
            let layout = BatchLayout(ModelFamily.EncoderDecoder, 0, 1, 64, 8)
            use b = Batching.Build([| LmExample([| 5; 6; 7 |], [| 8; 9 |]); LmExample([| 4 |], [| 3 |]) |], layout)
            Expect.equal (longs b.InputIds) [| 5; 6; 7; 1;   4; 1; 0; 0 |] "ids"
            Expect.equal (longs b.AttentionMask) [| 1; 1; 1; 1;   1; 1; 0; 0 |] "mask"
            Expect.equal (longs b.Labels) [| 8; 9; 1;   3; 1; -100 |] "labels"
        }

        test "drop-start truncation drops the prompt's beginning and keeps the answer" {
            let struct (ids, labels) = Batching.DecoderOnlySequence(LmExample([| 1; 2; 3; 4; 5; 6 |], [| 8; 9 |]), 2, 5, PromptTruncation.DropStart)
            Expect.equal ids [| 5; 6; 8; 9; 2 |] "ids"
            Expect.equal labels [| -100; -100; 8; 9; 2 |] "labels"
            let struct (input, target) = Batching.EncoderDecoderPair(LmExample([| 1; 2; 3; 4; 5; 6 |], [| 8; 9; 10 |]), 1, 4, 3, PromptTruncation.DropStart)
            Expect.equal input [| 4; 5; 6; 1 |] "encoder input keeps the prompt's end and EOS"
            Expect.equal target [| 8; 9; 10 |] "target cut on the right only when it alone is too long"
        }

        test "the default truncation drops the prompt's middle: instruction and end survive" {
            let struct (ids, labels) = Batching.DecoderOnlySequence(LmExample([| 1; 2; 3; 4; 5; 6; 7 |], [| 8; 9 |]), 2, 8)
            Expect.equal ids [| 1; 2; 5; 6; 7; 8; 9; 2 |] "ids: room for 8 − 3 = 5 of the 7 prompt tokens, 2 from the head and 3 from the tail"
            Expect.equal labels [| -100; -100; -100; -100; -100; 8; 9; 2 |] "labels"
            let struct (input, _) = Batching.EncoderDecoderPair(LmExample([| 1; 2; 3; 4; 5; 6 |], [| 8 |]), 1, 5, 3)
            Expect.equal input [| 1; 2; 5; 6; 1 |] "encoder input: head, tail, EOS"
        }

        test "linear warm-up then decay (Hugging Face values)" {
            let m s = Schedules.LinearWarmupDecay(s, 10, 110)
            Expect.equal [ m 0; m 5; m 10; m 60; m 109; m 110; m 500 ] [ 0.0; 0.5; 1.0; 0.5; 0.01; 0.0; 0.0 ] "multipliers"
            Expect.equal (Schedules.LinearWarmupDecay(0, 0, 4)) 1.0 "no warm-up starts at 1"
            Expect.equal (OptimizerOptions(LearningRate = 1e-3, WarmupSteps = 10, TotalSteps = 110).LearningRateAt 5) 5e-4 "lr"
        }

        test "bucketing covers every example exactly once, batches are length-sorted within pools" {
            let lengths = Array.init 103 (fun i -> (i * 37) % 23)
            let plan = Batching.PlanBuckets(lengths, 8, 5, 4)
            Expect.equal (plan |> Array.concat |> Array.sort) [| 0 .. 102 |] "a permutation"
            Expect.isTrue (plan |> Array.forall (fun b -> b.Length >= 1 && b.Length <= 8)) "sizes"
            Expect.equal (Batching.PlanBuckets(lengths, 8, 5, 4)) plan "same seed, same plan"
            Expect.notEqual (Batching.PlanBuckets(lengths, 8, 6, 4)) plan "other seed, other plan"
        }

        test "two micro-batches give the gradient and loss of one double batch" {
            let m, lora = adapted 3L 0.0
            use _m = m
            randomizeB lora
            let lm = m :> ILanguageModel
            let layout = BatchLayout.For(lm, 64)
            use runner = new StepRunner(lm, OptimizerOptions(LearningRate = 0.0, WeightDecay = 0.0, MaxGradNorm = 0.0))
            // equal label-token counts (every answer is one token + EOS) and unequal ones
            let equal = examples 5 4
            let unequal = Array.append (examples 6 3) [| LmExample([| 4; 5 |], [| 6; 7; 8; 9; 10 |]) |]
            for ex, split in [ equal, 2; unequal, 1 ] do
                use big = Batching.Build(ex, layout)
                use a = Batching.Build(ex.[.. split - 1], layout)
                use b = Batching.Build(ex.[split ..], layout)
                let m1, g1 = stepGrads runner [ big ]
                let m2, g2 = stepGrads runner [ a; b ]
                Expect.floatClose Accuracy.medium m2.Loss m1.Loss "same loss (float32 rounding)"
                Expect.equal m2.Tokens m1.Tokens "same tokens"
                let d = maxAbsDiff g1 g2
                Expect.isLessThan d 1e-6 $"same gradient (max diff {d:E2})"
                Expect.isGreaterThan (g1 |> Array.sumBy (Array.sumBy (fun x -> abs (float x)))) 0.0 "gradients are not trivially zero"
        }

        test "clipping caps the total gradient norm" {
            let m, lora = adapted 3L 0.0
            use _m = m
            randomizeB lora
            let lm = m :> ILanguageModel
            use runner = new StepRunner(lm, OptimizerOptions(MaxGradNorm = 1e-3))
            use batch = Batching.Build(examples 1 8, BatchLayout.For(lm, 64))
            let mutable clipped = nan
            let hooks = StepHooks()
            hooks.AfterClip.Add(fun ctx ->
                clipped <- grads ctx |> Array.sumBy (Array.sumBy (fun x -> float x * float x)) |> sqrt)
            let metrics = runner.Step([| batch |], hooks)
            Expect.isGreaterThan metrics.GradNorm 1e-3 "the raw norm exceeds the cap"
            Expect.isLessThanOrEqual clipped (1e-3 * 1.0001) $"clipped norm {clipped:E3}"
        }

        test "hooks run in order and the extra loss is added" {
            let m, lora = adapted 3L 0.0
            use _m = m
            let lm = m :> ILanguageModel
            use runner = new StepRunner(lm, OptimizerOptions())
            use batch = Batching.Build(examples 1 4, BatchLayout.For(lm, 64))
            let order = ResizeArray<string>()
            let a0 = lora.Modules.[0].LoraA "default"
            let expectedExtra = a0.detach().square().sum().ToDouble() * 0.1
            let hooks = StepHooks()
            hooks.ExtraLosses.Add(fun _ -> order.Add "extra"; a0.square().sum() * 0.1)
            hooks.AfterBackward.Add(fun ctx -> order.Add "backward"; Expect.isTrue (Double.IsNaN ctx.GradNorm) "no norm yet")
            hooks.AfterClip.Add(fun ctx -> order.Add "clip"; Expect.isFalse (Double.IsNaN ctx.GradNorm) "norm known")
            hooks.AfterOptimizerStep.Add(fun ctx -> order.Add "step"; Expect.equal ctx.Step 0 "first step")
            let metrics = runner.Step([| batch |], hooks)
            Expect.equal (List.ofSeq order) [ "extra"; "backward"; "clip"; "step" ] "order"
            Expect.floatClose Accuracy.medium metrics.ExtraLoss expectedExtra "extra loss reported"
            Expect.equal runner.StepsTaken 1 "one step"
            Expect.equal (runner.Trainable |> Seq.length) (lora.Modules.Count * 2) "only LoRA matrices are optimized"
        }

        test "loss falls over 50 steps" {
            let m, _ = adapted 1L 0.0
            use _m = m
            let lm = m :> ILanguageModel
            let train = examples 7 256
            let before = Trainer.EvaluateLoss(lm, train.[.. 63])
            let metrics = Trainer.Fit(lm, train, TrainerOptions(BatchSize = 8, MaxSteps = 50, Seed = 1, Optimizer = OptimizerOptions(LearningRate = 1e-2, WarmupSteps = 5)))
            let after = Trainer.EvaluateLoss(lm, train.[.. 63])
            Expect.equal metrics.Count 50 "50 steps"
            let first = metrics |> Seq.take 5 |> Seq.averageBy (fun s -> s.Loss)
            let last = metrics |> Seq.skip 45 |> Seq.averageBy (fun s -> s.Loss)
            printfn "training: loss first5 %.3f last5 %.3f; eval %.3f -> %.3f" first last before after
            Expect.isLessThan last (0.7 * first) "training loss falls"
            Expect.isLessThan after (0.7 * before) "evaluation loss falls"
            Expect.isTrue m.training "training mode restored after evaluation"
        }

        test "same seed gives the identical loss sequence" {
            let run () =
                let m, _ = adapted 1L 0.1            // dropout on: the torch seed matters too
                use _m = m
                Trainer.Fit(m, examples 7 64, TrainerOptions(BatchSize = 4, AccumulationSteps = 2, MaxSteps = 12, Seed = 4, Optimizer = OptimizerOptions(LearningRate = 1e-2)))
                |> Seq.map (fun s -> s.Loss) |> Array.ofSeq
            let a = run ()
            let b = run ()
            Expect.equal a b "identical losses"
        }

        test "no tensors leak over 50 steps" {
            let m, _ = adapted 1L 0.05
            use _m = m
            let lm = m :> ILanguageModel
            let layout = BatchLayout.For(lm, 64)
            let ex = examples 2 8
            use runner = new StepRunner(lm, OptimizerOptions(LearningRate = 1e-3))
            let stepOnce () =
                use b = Batching.Build(ex, layout)
                runner.Step([| b |]) |> ignore
            stepOnce ()   // the optimizer creates its state on the first steps
            stepOnce ()
            GC.Collect()
            GC.WaitForPendingFinalizers()
            let before = torch.Tensor.TotalCount
            for _ in 1 .. 50 do stepOnce ()
            let after = torch.Tensor.TotalCount
            printfn "training: live tensors before %d, after 50 steps %d" before after
            Expect.isLessThanOrEqual after before "live tensor count does not grow"
        }
    ]
