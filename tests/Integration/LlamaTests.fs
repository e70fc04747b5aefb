module LlamaTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Models
open Klf.Models.Llama

open LlamaTestKit
open LlamaRopeTests

type Tensor = torch.Tensor


let private namesAndShapes =
    testList "parameters" [
        for preset in LlamaConfig.PresetNames do
            test $"{preset}: HF keys and shape snapshot" {
                use m = create preset
                let cfg = m.Config
                let names = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Seq.toArray
                for expected in [ "model.embed_tokens.weight"; "model.layers.0.self_attn.q_proj.weight"
                                  "model.layers.0.self_attn.k_proj.weight"; "model.layers.0.self_attn.v_proj.weight"
                                  "model.layers.0.self_attn.o_proj.weight"; "model.layers.0.mlp.gate_proj.weight"
                                  "model.layers.0.mlp.up_proj.weight"; "model.layers.0.mlp.down_proj.weight"
                                  "model.layers.0.input_layernorm.weight"; "model.layers.0.post_attention_layernorm.weight"
                                  $"model.layers.{cfg.NumHiddenLayers - 1}.mlp.down_proj.weight"; "model.norm.weight" ] do
                    Expect.contains names expected $"{expected} is a parameter"
                Expect.equal (Array.contains "lm_head.weight" names) (not cfg.TieWordEmbeddings) "lm_head.weight present iff untied"
                let biases = (if cfg.AttentionBias then 4 else 0) + (if cfg.MlpBias then 3 else 0)
                let expectedCount = (9 + biases) * cfg.NumHiddenLayers + 2 + (if cfg.TieWordEmbeddings then 0 else 1)
                Expect.equal names.Length expectedCount "parameter count"
                let stateKeys = m.state_dict().Keys |> Seq.toArray
                Expect.equal stateKeys names "state dict holds exactly the parameters (no buffers)"
                LlamaTestKit.approveShapes preset m
            }
    ]

let private generation =
    testList "generation" [
        test "KV cache == no cache, batch independent, within cap" {
            use m = create "llama-tiny"
            let rng = Random 7
            let prompts = [| for len in [ 3; 7; 1; 5; 2 ] -> randomPrompt rng len |]
            let cap = 10
            let opts = GenerationOptions(MaxNewTokens = cap, EosTokenIds = [| 2 |], UseCache = true, BatchSize = 16)
            let cached = m.GenerateGreedy(prompts, opts)
            let uncached = m.GenerateGreedy(prompts, withOpts opts (Some false) None None)
            printfn "llama-tiny greedy: %A" cached
            Expect.equal cached uncached "cache and no cache agree"
            for r in cached do Expect.isLessThanOrEqual r.Length cap "length within cap"
            Expect.isTrue (cached |> Array.exists (fun r -> (Array.distinct r).Length > 2)) "non-trivial generations"
            let alone = prompts |> Array.map (fun p -> (m.GenerateGreedy([| p |], opts)).[0])
            Expect.equal alone cached "each prompt alone == in batch"
            let chunked = m.GenerateGreedy(prompts, withOpts opts None None (Some 2))
            Expect.equal chunked cached "batch size 2 == one batch"
            // EOS: make a token actually generated for prompt 0 the EOS; that row stops before it.
            let out0 = cached.[0]
            if out0.Length >= 3 then
                let eos = out0.[2]
                let firstEos = Array.findIndex ((=) eos) out0
                let withEos = m.GenerateGreedy(prompts, withOpts opts None (Some [| eos |]) None)
                Expect.equal withEos.[0] out0.[.. firstEos - 1] "row stops at EOS (EOS not returned)"
                let withEosNoCache = m.GenerateGreedy(prompts, withOpts opts (Some false) (Some [| eos |]) None)
                Expect.equal withEosNoCache withEos "EOS: cache == no cache"
                for i in 1 .. prompts.Length - 1 do
                    let alone = m.GenerateGreedy([| prompts.[i] |], withOpts opts None (Some [| eos |]) None)
                    Expect.equal withEos.[i] alone.[0] $"EOS: prompt {i} alone == in batch"
        }
        test "generation restores training mode" {
            use m = create "llama-tiny"
            m.train()
            let _ = m.GenerateGreedy([| [| 5; 6; 7 |] |], GenerationOptions(MaxNewTokens = 3))
            Expect.isTrue m.training "training mode restored"
            m.eval()
            let _ = m.GenerateGreedy([| [| 5; 6; 7 |] |], GenerationOptions(MaxNewTokens = 3))
            Expect.isFalse m.training "eval mode restored"
        }
        test "incremental logits with the cache match full recompute" {
            use m = create "llama-tiny-gqa"
            m.eval()
            use _ng = torch.no_grad()
            let rng = Random 3
            let rows = [| Array.init 9 (fun _ -> int64 (rng.Next(3, 256))); Array.init 9 (fun _ -> int64 (rng.Next(3, 256))) |]
            use x = ids rows
            use full = m.Forward(x)
            use cache = new LlamaKvCache(m.Config.NumHiddenLayers)
            use x0 = x.narrow(1, 0L, 6L)
            use l0 = m.Forward(x0, cache = cache)
            Expect.equal cache.Length 6L "cache holds the prefix"
            for t in 6L .. 8L do
                use xt = x.narrow(1, t, 1L)
                use lt = m.Forward(xt, cache = cache)
                use ft = full.narrow(1, t, 1L)
                Expect.isLessThan (maxAbsDiff lt ft) 1e-5 $"step {t}"
            use f0 = full.narrow(1, 0L, 6L)
            Expect.isLessThan (maxAbsDiff l0 f0) 1e-5 "prefill"
        }
    ]

let private leaks =
  testList "leaks" [
    test "generation leaves no live tensors (cache and no cache)" {
        use m = create "llama-tiny"
        let prompts = [| [| 4; 5; 6 |]; [| 9 |]; [| 10; 11 |] |]
        let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
        for useCache in [ true; false ] do
            let opts = GenerationOptions(MaxNewTokens = 5, UseCache = useCache)
            m.GenerateGreedy(prompts, opts) |> ignore
            let before = live ()
            m.GenerateGreedy(prompts, opts) |> ignore
            Expect.equal (live ()) before $"live tensors unchanged (UseCache = {useCache})"
    }
  ]

let private masking =
    testList "masking" [
        test "causality: logits at t ignore tokens after t" {
            use m = create "llama-tiny"
            m.eval()
            use _ng = torch.no_grad()
            let rng = Random 11
            let a = Array.init 10 (fun _ -> int64 (rng.Next(3, 256)))
            let b = Array.mapi (fun i v -> if i > 4 then int64 (rng.Next(3, 256)) else v) a
            use xa = ids [| a |]
            use xb = ids [| b |]
            use la = m.Forward(xa)
            use lb = m.Forward(xb)
            use pa = la.narrow(1, 0L, 5L)
            use pb = lb.narrow(1, 0L, 5L)
            Expect.isLessThan (maxAbsDiff pa pb) 1e-6 "prefix logits unchanged"
            use sa = la.narrow(1, 5L, 5L)
            use sb = lb.narrow(1, 5L, 5L)
            Expect.isGreaterThan (maxAbsDiff sa sb) 1e-6 "later logits do change"
        }
        test "left padding does not change the last real token's logits" {
            use m = create "llama-tiny"
            m.eval()
            use _ng = torch.no_grad()
            let prompt = [| 17L; 42L; 99L; 5L; 200L; 31L |]
            use x = ids [| prompt |]
            use plain = m.Forward(x)
            let padded = Array.append (Array.create 3 0L) prompt
            use xp = ids [| padded |]
            use mask = ids [| Array.append (Array.create 3 0L) (Array.create prompt.Length 1L) |]
            use pos = LlamaForCausalLM.PositionIdsFromMask(mask)
            use lp = m.Forward(xp, mask, pos)
            use a = plain.narrow(1, 5L, 1L)
            use b = lp.narrow(1, 8L, 1L)
            Expect.isLessThan (maxAbsDiff a b) 1e-5 "last-token logits equal"
            use allReal = plain
            use padReal = lp.narrow(1, 3L, 6L)
            Expect.isLessThan (maxAbsDiff allReal padReal) 1e-5 "all real positions equal"
        }
        test "attention mask: 0 where allowed, dtype minimum elsewhere" {
            use mask = ids [| [| 0L; 1L; 1L |] |]
            use m4 = LlamaModel.BuildMask(mask, 2L, torch.ScalarType.Float32)
            Expect.equal m4.shape [| 1L; 1L; 2L; 3L |] "shape (B, 1, T, S)"
            let v = m4.data<float32>().ToArray()
            let mn = Single.MinValue
            Expect.equal v [| mn; 0.0f; mn; mn; 0.0f; 0.0f |] "causal and padding"
        }
    ]

/// Naive rotate-half RoPE of one head vector at position p (HF LLaMA convention).
let private naiveRope (x: float[]) (p: float) (theta: float) =
    let d = x.Length
    let h = d / 2
    Array.init d (fun j ->
        let i = j % h
        let angle = p * Math.Pow(theta, -(2.0 * float i) / float d)
        if j < h then x.[j] * cos angle - x.[j + h] * sin angle
        else x.[j] * cos angle + x.[j - h] * sin angle)

let private layers =
    testList "layers" [
        test "RoPE matches a naive rotate-half reference" {
            let d = 16
            let theta = 10000.0
            let rng = Random 9
            let xs = Array.init (2 * 3 * d) (fun _ -> rng.NextDouble() * 2.0 - 1.0)
            use x = torch.tensor(xs |> Array.map float32).view(1L, 2L, 3L, int64 d)   // (B, H, T, D)
            let positions = [| 0L; 7L; 1000L |]
            use pos = torch.tensor(positions).view(1L, 3L)
            let struct (c, s) = LlamaRotary.CosSin(pos, d, theta, torch.ScalarType.Float32)
            use c = c
            use s = s
            use y = LlamaRotary.Apply(x, c, s)
            let ys = y.data<float32>().ToArray()
            for h in 0 .. 1 do
                for t in 0 .. 2 do
                    let off = (h * 3 + t) * d
                    let expected = naiveRope xs.[off .. off + d - 1] (float positions.[t]) theta
                    for j in 0 .. d - 1 do
                        Expect.floatClose { absolute = 1e-4; relative = 1e-4 } (float ys.[off + j]) expected.[j] $"h{h} t{t} j{j}"
        }
        test "RoPE: logits invariant to a constant shift of every row's positions" {
            use m = create "llama-tiny"
            use _ng = torch.no_grad()
            use x = ids [| [| 5L; 9L; 33L; 7L; 120L |]; [| 8L; 8L; 1L; 250L; 3L |] |]
            use pos = torch.tensor([| 0L; 1L; 2L; 3L; 4L; 0L; 1L; 2L; 3L; 4L |]).view(2L, 5L)
            use shifted = torch.tensor([| 10L; 11L; 12L; 13L; 14L; 3L; 4L; 5L; 6L; 7L |]).view(2L, 5L)
            use a = m.Forward(x, null, pos)
            use b = m.Forward(x, null, shifted)
            Expect.isLessThan (maxAbsDiff a b) 1e-4 "relative positions only"
            use nonUniform = torch.tensor([| 0L; 2L; 4L; 6L; 8L; 0L; 1L; 2L; 3L; 4L |]).view(2L, 5L)
            use c = m.Forward(x, null, nonUniform)
            use c1 = c.narrow(0, 1L, 1L)
            use a1 = a.narrow(0, 1L, 1L)
            use c0 = c.narrow(0, 0L, 1L)
            use a0 = a.narrow(0, 0L, 1L)
            Expect.isLessThan (maxAbsDiff c1 a1) 1e-6 "position ids are per row"
            Expect.isGreaterThan (maxAbsDiff c0 a0) 1e-4 "stretched positions change logits"
        }
        test "attention block matches a naive eager reference (GQA, causal, 1/sqrt(D))" {
            use m = create "llama-tiny-gqa"
            use _ng = torch.no_grad()
            let attn = m.model.layers.[0].self_attn
            let cfg = m.Config
            let h, hkv, d, t = int64 cfg.NumAttentionHeads, int64 cfg.NumKeyValueHeads, int64 cfg.HeadDim, 5L
            torch.manual_seed 3L |> ignore
            use x = torch.randn(1L, t, int64 cfg.HiddenSize)
            use pos = torch.arange(t).unsqueeze(0L)
            let struct (c, s) = LlamaRotary.CosSin(pos, cfg.HeadDim, cfg.RopeTheta, torch.ScalarType.Float32)
            use c = c
            use s = s
            use mask = LlamaModel.BuildMask(torch.ones(1L, t, torch.int64), t, torch.ScalarType.Float32)
            use got = attn.Forward(x, c, s, mask, null, 0)
            // Reference: explicit projections, per-head loop, kv head = h / (H / Hkv), -inf above the diagonal.
            use q = LlamaRotary.Apply(x.matmul(attn.q_proj.weight.t()).view(1L, t, h, d).transpose(1L, 2L), c, s)
            use k = LlamaRotary.Apply(x.matmul(attn.k_proj.weight.t()).view(1L, t, hkv, d).transpose(1L, 2L), c, s)
            use v = x.matmul(attn.v_proj.weight.t()).view(1L, t, hkv, d).transpose(1L, 2L)
            use causal = torch.ones(t, t).triu(1L).mul(torch.tensor(-1e9f))          // (T, T), -1e9 above the diagonal
            let heads =
                [| for hi in 0L .. h - 1L ->
                    let kvi = hi / (h / hkv)
                    let scores : Tensor =
                        q.select(1, hi).matmul(k.select(1, kvi).transpose(-1L, -2L)).div(torch.tensor(float32 (sqrt (float d)))).add(causal)
                    scores.softmax(-1L).matmul(v.select(1, kvi)) |]          // (1, T, D) each
            use y = torch.cat(heads, -1L)                                       // (1, T, H*D)
            use expected = y.matmul(attn.o_proj.weight.t())
            Expect.isLessThan (maxAbsDiff got expected) 1e-5 "same output"
        }
        test "RMSNorm matches a naive reference; bf16 in, bf16 out" {
            use norm = new Klf.Models.Layers.RmsNorm(8L, 1e-6)
            do
                use _ng = torch.no_grad()
                norm.weight.copy_(torch.arange(1L, 9L).to_type(torch.ScalarType.Float32)) |> ignore
            let xs = [| 0.5f; -1.0f; 2.0f; 0.0f; 3.0f; -0.25f; 1.5f; 4.0f |]
            use x = torch.tensor(xs).view(1L, 8L)
            use y = norm.forward(x)
            let rms = sqrt ((xs |> Array.sumBy (fun v -> float v * float v)) / 8.0 + 1e-6)
            let ys = y.data<float32>().ToArray()
            for j in 0 .. 7 do
                Expect.floatClose Accuracy.high (float ys.[j]) (float (j + 1) * float xs.[j] / rms) $"element {j}"
            use xb = x.to_type(torch.ScalarType.BFloat16)
            norm.``to``(torch.ScalarType.BFloat16) |> ignore
            use yb = norm.forward(xb)
            Expect.equal yb.dtype torch.ScalarType.BFloat16 "bf16 output"
        }
    ]

let private throughput =
  testList "throughput" [
    test "llama-5m: forward+backward throughput (printed)" {
        use m = create "llama-5m"
        m.train()
        let rng = Random 1
        let b, t = 4, 64
        let rows = [| for _ in 1 .. b -> Array.init t (fun _ -> int64 (rng.Next(3, 4096))) |]
        use batch = new LmBatch(ids rows, torch.ones(int64 b, int64 t, torch.int64), ids rows)
        let step () =
            use scope = torch.NewDisposeScope()
            m.zero_grad()
            let l = m.ComputeLoss(batch)
            l.backward()
        step ()
        let sw = Diagnostics.Stopwatch.StartNew()
        let n = 3
        for _ in 1 .. n do step ()
        let tokPerSec = float (n * b * t) / sw.Elapsed.TotalSeconds
        printfn "llama-5m (%d params) fwd+bwd: %.0f tokens/s at B=%d T=%d, %d threads"
            (m.parameters() |> Seq.sumBy (fun p -> p.numel())) tokPerSec b t (torch.get_num_threads())
        Expect.isGreaterThan tokPerSec 0.0 "measured"
    }
  ]

let private variants =
    testList "variants" [
        test "GQA equals MHA with each key/value head repeated" {
            use gqa = create "llama-tiny-gqa"
            use mha = new LlamaForCausalLM(LlamaConfig.Preset "llama-tiny")
            let nRep = int64 (gqa.Config.NumAttentionHeads / gqa.Config.NumKeyValueHeads)
            let d = int64 gqa.Config.HeadDim
            let src = gqa.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> dict
            do
                use _ng = torch.no_grad()
                for struct (name, p) in mha.named_parameters() do
                    let s = src.[name]
                    if name.EndsWith "k_proj.weight" || name.EndsWith "v_proj.weight" then
                        let c = s.shape.[1]
                        use r = s.view(-1L, d, c).repeat_interleave(nRep, dim = 0L).reshape(-1L, c)
                        p.copy_(r) |> ignore
                    else p.copy_(s) |> ignore
            use _ng = torch.no_grad()
            use x = ids [| [| 5L; 9L; 33L; 7L; 120L |]; [| 8L; 8L; 1L; 250L; 3L |] |]
            use a = gqa.Forward(x)
            use b = mha.Forward(x)
            Expect.isLessThan (maxAbsDiff a b) 1e-5 "same logits"
            let opts = GenerationOptions(MaxNewTokens = 6)
            let prompts = [| [| 4; 5; 6 |]; [| 9 |] |]
            Expect.equal (gqa.GenerateGreedy(prompts, opts)) (gqa.GenerateGreedy(prompts, withOpts opts (Some false) None None)) "GQA cache == no cache"
        }
        test "tied embeddings: no lm_head, alias reported, logits use the embedding" {
            use m = create "llama-tiny-tied"
            let names = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Seq.toArray
            Expect.isFalse (Array.contains "lm_head.weight" names) "no lm_head.weight"
            Expect.equal (m.TiedAliases |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.toList)
                         [ "lm_head.weight", "model.embed_tokens.weight" ] "alias"
            use _ng = torch.no_grad()
            use x = ids [| [| 5L; 9L; 33L |] |]
            use logits = m.Forward(x)
            use cache = new LlamaKvCache(m.Config.NumHiddenLayers)
            use h = m.model.Forward(x, torch.ones(1L, 3L, torch.int64), torch.arange(3L).unsqueeze(0L), null)
            use expected = h.matmul(m.model.embed_tokens.weight.t())
            Expect.isLessThan (maxAbsDiff logits expected) 1e-6 "logits = h E^T"
            use untied = create "llama-tiny"
            Expect.isEmpty untied.TiedAliases "untied: no aliases"
        }
        test "bfloat16 forward runs and is close to float32" {
            use m32 = create "llama-tiny"
            torch.manual_seed seed |> ignore
            use m16 = LlamaForCausalLM.Create(LlamaConfig.Preset "llama-tiny", dtype = torch.ScalarType.BFloat16)
            for struct (_, p) in m16.named_parameters() do
                Expect.equal p.dtype torch.ScalarType.BFloat16 "bf16 parameter"
            use _ng = torch.no_grad()
            use x = ids [| [| 5L; 9L; 33L; 7L; 120L; 64L |] |]
            use a = m32.Forward(x)
            use b = m16.Forward(x)
            Expect.equal b.dtype torch.ScalarType.BFloat16 "bf16 logits"
            use scale = a.abs().max()
            let rel = maxAbsDiff a b / float (scale.item<float32>())
            printfn "bf16 vs fp32: max |diff| / max |logit| = %.4f" rel
            Expect.isLessThan rel 0.05 "close"
            let prompts = [| [| 4; 5; 6 |]; [| 9 |] |]
            let opts = GenerationOptions(MaxNewTokens = 4)
            Expect.equal (m16.GenerateGreedy(prompts, opts)) (m16.GenerateGreedy(prompts, withOpts opts (Some false) None None)) "bf16 cache == no cache"
            use batch = new LmBatch(x.clone(), torch.ones_like(x), x.clone())
            use loss = m16.ComputeLoss(batch)
            Expect.equal loss.dtype torch.ScalarType.Float32 "loss is float32"
        }
    ]

/// Naive HF causal-LM loss on host arrays: mean over t < T-1 with labels[t+1] <> -100 of -log softmax(logits[t])[labels[t+1]].
let private naiveLoss (logits: float32[]) (labels: int64[]) b t v =
    let mutable total = 0.0
    let mutable count = 0
    for bi in 0 .. b - 1 do
        for ti in 0 .. t - 2 do
            let target = labels.[bi * t + ti + 1]
            if target <> -100L then
                let row = Array.init v (fun k -> float logits.[(bi * t + ti) * v + k])
                let mx = Array.max row
                let lse = mx + log (row |> Array.sumBy (fun z -> exp (z - mx)))
                total <- total + (lse - row.[int target])
                count <- count + 1
    total / float count

let private loss =
    testList "loss" [
        test "counts only label positions (naive reference)" {
            use m = create "llama-tiny"
            let input = [| [| 1L; 10L; 11L; 12L; 13L; 0L |]; [| 1L; 20L; 21L; 22L; 0L; 0L |] |]
            let labels = [| [| -100L; -100L; 11L; 12L; 13L; -100L |]; [| -100L; -100L; -100L; 22L; -100L; -100L |] |]
            let mask = input |> Array.map (Array.map (fun v -> if v = 0L then 0L else 1L))
            use batch = new LmBatch(ids input, ids mask, ids labels)
            Expect.equal batch.LabelTokenCount 4L "label count"
            use l = m.ComputeLoss(batch)
            use _ng = torch.no_grad()
            use logits = m.Forward(batch.InputIds, batch.AttentionMask)
            let expected = naiveLoss (logits.data<float32>().ToArray()) (Array.concat labels) 2 6 256
            Expect.floatClose Accuracy.medium (float (l.item<float32>())) expected "loss = naive mean over label positions"
            // Changing labels at ignored positions (and the unshifted first column) cannot matter.
            let labels2 = labels |> Array.map (Array.mapi (fun i v -> if i = 0 then 7L else v))
            use batch2 = new LmBatch(ids input, ids mask, ids labels2)
            use l2 = m.ComputeLoss(batch2)
            Expect.equal (l2.item<float32>()) (l.item<float32>()) "first label column is never a target"
        }
        test "overfits one batch with AdamW" {
            use m = create "llama-tiny"
            m.train()
            let rng = Random 5
            let rows = [| for _ in 1 .. 4 -> Array.init 12 (fun _ -> int64 (rng.Next(3, 256))) |]
            use batch = new LmBatch(ids rows, torch.ones(4L, 12L, torch.int64), ids rows)
            let opt = torch.optim.AdamW(m.parameters(), lr = 1e-2)
            let losses =
                [ for _ in 1 .. 30 do
                    use scope = torch.NewDisposeScope()
                    opt.zero_grad()
                    let l = m.ComputeLoss(batch)
                    l.backward()
                    opt.step() |> ignore
                    yield float (l.item<float32>()) ]
            printfn "AdamW losses: first %.3f last %.3f" losses.Head (List.last losses)
            Expect.isLessThan (List.last losses) (0.5 * losses.Head) "loss at least halves"
        }
    ]

let private config =
    testList "config" [
        test "preset round trip through JSON" {
            for name in LlamaConfig.PresetNames do
                let c = LlamaConfig.Preset name
                let back = LlamaConfig.FromJson(c.ToJson(), name)
                Expect.equal back c $"{name} round trip"
                Expect.equal (LlamaConfig.Preset(name, 3000)).VocabSize 3000 "vocab override"
        }
        test "HF config: fields, defaults, unknown fields kept" {
            let c = LlamaConfig.FromJson(JsonNode.Parse(sampleConfig).AsObject(), "sample")
            Expect.equal c.EosTokenIds [| 128001; 128008; 128009 |] "all EOS ids"
            Expect.equal c.EosTokenId 128001 "first EOS id"
            Expect.equal c.HeadDim 64 "head_dim = hidden / heads"
            Expect.equal c.NumKeyValueHeads 8 "kv heads"
            Expect.equal c.PadTokenId (Nullable()) "no pad"
            Expect.equal c.RopeTheta 500000.0 "rope theta"
            let j = c.ToJson()
            Expect.equal (j.["transformers_version"].GetValue<string>()) "4.45.0" "unknown field kept"
            Expect.equal (LlamaConfig.FromJson(j, "again")) c "round trip"
            let path = Path.Combine(Path.GetTempPath(), $"klf-llama-config-{Guid.NewGuid():N}.json")
            File.WriteAllText(path, sampleConfig)
            try Expect.equal (LlamaConfig.FromFile path) c "from file" finally File.Delete path
            let noKv = JsonNode.Parse(sampleConfig).AsObject()
            noKv.Remove "num_key_value_heads" |> ignore
            Expect.equal (LlamaConfig.FromJson(noKv, "x")).NumKeyValueHeads 32 "kv heads default to heads"
            let newer = JsonNode.Parse(sampleConfig).AsObject()
            newer.Remove "torch_dtype" |> ignore
            newer.["dtype"] <- JsonValue.Create "float16"
            let cn = LlamaConfig.FromJson(newer, "newer")
            Expect.equal cn.TorchDtype "float16" "dtype read when torch_dtype is absent"
            Expect.equal (LlamaConfig.FromJson(cn.ToJson(), "again")) cn "round trip with dtype"
        }
        test "wrong model_type is a clear error naming the source and the field" {
            let j = JsonNode.Parse(sampleConfig).AsObject()
            j.["model_type"] <- JsonValue.Create "gpt2"
            let path = Path.Combine(Path.GetTempPath(), $"klf-gpt2-{Guid.NewGuid():N}.json")
            File.WriteAllText(path, j.ToJsonString())
            let msg =
                try
                    try LlamaConfig.FromFile path |> ignore; "" with :? FormatException as e -> e.Message
                finally File.Delete path
            Expect.stringContains msg "model_type" "names the field"
            Expect.stringContains msg path "names the file"
            Expect.stringContains msg "gpt2" "says what it got"
            let act = JsonNode.Parse(sampleConfig).AsObject()
            act.["hidden_act"] <- JsonValue.Create "gelu"
            let msg2 = try LlamaConfig.FromJson(act, "cfg") |> ignore; "" with e -> e.Message
            Expect.stringContains msg2 "hidden_act" "hidden_act checked"
        }
    ]

[<Tests>]
let tests =
    // Sequenced: models are seeded through torch's global generator.
    testSequenced <| testList "llama" [ namesAndShapes; generation; leaks; masking; layers; variants; loss; config; ropeScaling; throughput ]
