module TrainingProperties

open Expecto
open FsCheck
open Klf.Training

let private config = PropertyConfig.config 200

[<Tests>]
let tests =
    testList "training laws" [
        testPropertyWithConfig config "schedule: m in [0,1], rises to 1 at W, falls to 0 at T" <| fun (NonNegativeInt w) (PositiveInt extra) (NonNegativeInt s) ->
            let t = w + extra
            let m x = Schedules.LinearWarmupDecay(x, w, t)
            let inRange = m s >= 0.0 && m s <= 1.0
            let peak = abs (m w - 1.0) < 1e-12
            let ends = m t = 0.0 && m (t + s) = 0.0
            let monotone =
                if s < w then m s <= m (s + 1)
                else m (s + 1) <= m s
            inRange && peak && ends && monotone

        testPropertyWithConfig config "bucketing: every index exactly once, sizes bounded, batches length-sorted" <| fun (lengths: NonNegativeInt[]) (PositiveInt bs) (PositiveInt pool) (seed: int) ->
            let lengths = lengths |> Array.map (fun (NonNegativeInt l) -> l)
            let bs = 1 + bs % 16
            let pool = 1 + pool % 8
            let plan = Batching.PlanBuckets(lengths, bs, seed, pool)
            let covers = (plan |> Array.concat |> Array.sort) = [| 0 .. lengths.Length - 1 |]
            let sizes = plan |> Array.forall (fun b -> b.Length >= 1 && b.Length <= bs)
            let sorted = plan |> Array.forall (fun b -> b |> Array.pairwise |> Array.forall (fun (i, j) -> lengths.[i] <= lengths.[j]))
            let poolSize = bs * pool
            let expectedBatches =
                [ for start in 0 .. poolSize .. lengths.Length - 1 -> (min poolSize (lengths.Length - start) + bs - 1) / bs ] |> List.sum
            let deterministic = Batching.PlanBuckets(lengths, bs, seed, pool) = plan
            covers && sizes && sorted && plan.Length = expectedBatches && deterministic

        for mode in [ PromptTruncation.DropStart; PromptTruncation.DropMiddle ] do
          testPropertyWithConfig config $"decoder-only truncation keeps the answer, and drop-{PromptCut.Name mode} keeps the right prompt tokens" <| fun (prompt: PositiveInt[]) (answer: PositiveInt[]) (PositiveInt maxLen) ->
            let prompt = prompt |> Array.map (fun (PositiveInt x) -> x)
            let answer = answer |> Array.map (fun (PositiveInt x) -> x)
            let maxLen = 1 + maxLen % 20
            let struct (ids, labels) = Batching.DecoderOnlySequence(LmExample(prompt, answer), 2, maxLen, mode)
            let full = Array.append answer [| 2 |]
            let kept = min full.Length maxLen
            let promptKept = ids.Length - kept
            let expectedPrompt =
                if promptKept >= prompt.Length then prompt
                elif mode = PromptTruncation.DropStart then prompt.[prompt.Length - promptKept ..]
                else Array.append prompt.[.. promptKept / 2 - 1] prompt.[prompt.Length - (promptKept - promptKept / 2) ..]
            ids.Length = labels.Length
            && ids.Length = min (prompt.Length + full.Length) maxLen
            && ids.[promptKept ..] = full.[.. kept - 1]
            && labels.[promptKept ..] = full.[.. kept - 1]
            && labels.[.. promptKept - 1] |> Array.forall ((=) Batching.IgnoreIndex)
            && ids.[.. promptKept - 1] = expectedPrompt

        testPropertyWithConfig config "a prompt cut keeps at most room tokens, in order, and the prompt itself when it fits" <| fun (prompt: int[]) (room: int) (middle: bool) ->
            let mode = if middle then PromptTruncation.DropMiddle else PromptTruncation.DropStart
            let cut = PromptCut.Apply(prompt, room, mode)
            let expectedLength = max 0 (min prompt.Length room)
            // A cut is a head of the prompt followed by a tail of it (the head is empty for drop-start).
            let isHeadTail =
                [ 0 .. cut.Length ] |> List.exists (fun h ->
                    cut.[.. h - 1] = prompt.[.. h - 1] && cut.[h ..] = prompt.[prompt.Length - (cut.Length - h) ..]
                    && (middle || h = 0))
            cut.Length = expectedLength && isHeadTail && (prompt.Length > room || obj.ReferenceEquals(cut, prompt))
    
        test "training FLOPs: 6 per layer weight per token, attention in full, the head on label positions only" {
            let c = Klf.Models.Llama.LlamaConfig.Preset("llama-5m")
            // llama-5m: hidden 256, MLP 688, 4 layers of q, k, v, o (256 × 256) and gate, up, down (256 × 688).
            let weights = 4.0 * (4.0 * 256.0 * 256.0 + 3.0 * 256.0 * 688.0)
            Expect.equal (Klf.Pipelines.TrainingFlops.layerMatrixWeights c) weights "layer matrices"
            let batch, len, labels = 16.0, 128.0, 8.0
            let expected = 6.0 * weights * batch * len + 12.0 * batch * len * len * 256.0 * 4.0 + 6.0 * 256.0 * 4096.0 * batch * labels
            Expect.floatClose Accuracy.veryHigh (Klf.Pipelines.TrainingFlops.llamaStep c 16 128 8) expected "one step"
        }
    ]

