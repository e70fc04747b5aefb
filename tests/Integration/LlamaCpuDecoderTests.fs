/// The CPU decoder of batch-1 cached generation (LlamaCpuDecoder) against the model's own forward:
/// logits at every step, greedy tokens with it on and off, and when it must step aside.
module LlamaCpuDecoderTests

open System
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Models
open Klf.Models.Llama
open Klf.Adapters
open Klf.Fusion

open LlamaTestKit

let private withRope (preset: string) (ropeScaling: string) (maxPositions: int) =
    let j = (LlamaConfig.Preset preset).ToJson()
    j.["rope_scaling"] <- JsonNode.Parse ropeScaling
    j.["max_position_embeddings"] <- JsonValue.Create maxPositions
    LlamaConfig.FromJson(j, preset)

/// Every variant the decoder handles: MHA, GQA, tied head, biases with llama3 RoPE, linear and dynamic RoPE.
let private models () : (string * (unit -> LlamaForCausalLM)) list =
    [ for p in [ "llama-tiny"; "llama-tiny-gqa"; "llama-tiny-tied"; "llama-tiny-bias" ] do yield p, (fun () -> create p)
      yield "linear rope", (fun () -> torch.manual_seed seed |> ignore; new LlamaForCausalLM(withRope "llama-tiny" """{"rope_type": "linear", "factor": 2.0}""" 512))
      // Positions run past max_position_embeddings (16), where dynamic NTK changes the frequencies every step.
      yield "dynamic rope", (fun () -> torch.manual_seed seed |> ignore; new LlamaForCausalLM(withRope "llama-tiny-gqa" """{"rope_type": "dynamic", "factor": 2.0}""" 16)) ]

let private withDecoder (enabled: bool) (f: unit -> 'a) =
    let before = CpuTensors.Enabled
    CpuTensors.Enabled <- enabled
    try f () finally CpuTensors.Enabled <- before

let private options n cache = GenerationOptions(MaxNewTokens = n, EosTokenIds = [||], UseCache = cache, BatchSize = 1)

let private logits =
    testList "logits" [
        for name, make in models () ->
            test $"{name}: every step's logits match the model's own forward" {
                use m = make ()
                m.eval()
                use _ng = torch.no_grad()
                let rng = Random 5
                let prompt = Array.init 6 (fun _ -> int64 (rng.Next(3, 256)))
                let steps = 14
                let capacity = int64 (prompt.Length + steps + 1)
                use cache = new LlamaKvCache(m.Config.NumHiddenLayers, capacity)
                use reference = new LlamaKvCache(m.Config.NumHiddenLayers, capacity)   // the forward's own cached steps
                use x0 = ids [| prompt |]
                use _prefill = m.Forward(x0, cache = cache)
                use _prefill2 = m.Forward(x0, cache = reference)
                let decoder = LlamaCpuDecoder.TryCreate(m, cache, int64 prompt.Length, steps)
                Expect.isNotNull decoder "the decoder takes a float32 CPU model"
                use d = decoder
                let sequence = Collections.Generic.List<int64>(prompt)
                let got = Array.zeroCreate<float32> m.Config.VocabSize
                let relative (expected: float32[]) =
                    let scale = expected |> Array.map (fun v -> abs (float v)) |> Array.max
                    (Array.map2 (fun (a: float32) (b: float32) -> abs (float a - float b)) got expected |> Array.max) / scale
                let mutable token = rng.Next(3, 256)
                let mutable worstCached, worstFull = 0.0, 0.0
                for _ in 1 .. steps do
                    sequence.Add(int64 token)
                    let next = d.Step token
                    d.CopyLogits(got.AsSpan())
                    use xt = ids [| [| int64 token |] |]
                    use step = m.Forward(xt, cache = reference)
                    use last = step.view(-1L).contiguous()
                    worstCached <- max worstCached (relative (last.data<float32>().ToArray()))
                    use argmax = last.argmax()
                    Expect.equal next (int (argmax.item<int64>())) "the decoder's token is the argmax of the forward's logits"
                    use all = ids [| sequence.ToArray() |]
                    use full = m.Forward(all)
                    use lastFull = full.select(1, -1L).view(-1L).contiguous()
                    worstFull <- max worstFull (relative (lastFull.data<float32>().ToArray()))
                    token <- next
                Expect.isLessThan worstCached 1e-5 "logits within float32 rounding of the cached forward (relative to the largest)"
                // Dynamic NTK re-rotates every key with the frequencies of the longest position in a full
                // forward, a cached step keeps the keys as they were rotated: the two differ by design (as in HF).
                if name <> "dynamic rope" then
                    Expect.isLessThan worstFull 1e-5 "and of the forward over the whole sequence"
                Expect.equal cache.Length (int64 prompt.Length) "the cache counts decoded positions only when the decoder is disposed"
                d.Dispose()
                Expect.equal cache.Length (int64 (prompt.Length + steps)) "disposing counts the decoded positions into the cache"
            }
    ]

let private tokens =
    testList "greedy tokens" [
        for name, make in models () @ [ "llama-5m", (fun () -> create "llama-5m") ] do
          yield test $"{name}: decoder on == decoder off == no cache, batch 1" {
                use m = make ()
                let rng = Random 9
                let vocab = m.Config.VocabSize
                for len in [ 1; 4; 11 ] do
                    let prompt = Array.init len (fun _ -> rng.Next(3, vocab))
                    let on = withDecoder true (fun () -> m.GenerateGreedy([| prompt |], options 24 true))
                    let off = withDecoder false (fun () -> m.GenerateGreedy([| prompt |], options 24 true))
                    Expect.equal on.[0].Length 24 "no EOS: every new token"
                    Expect.equal on off $"prompt of {len}: decoder on == off"
                    // Dynamic NTK: cached and uncached forwards differ by design (see the logits test).
                    if name <> "dynamic rope" then
                        let uncached = m.GenerateGreedy([| prompt |], options 24 false)
                        Expect.equal on uncached $"prompt of {len}: cached == uncached"
            }
        yield test "EOS stops the row under the decoder too" {
            use m = create "llama-tiny"
            let prompt = [| 7; 8; 9 |]
            let free = m.GenerateGreedy([| prompt |], options 12 true).[0]
            let eos = free.[4]
            let stop = Array.findIndex ((=) eos) free
            let stopped = m.GenerateGreedy([| prompt |], GenerationOptions(MaxNewTokens = 12, EosTokenIds = [| eos |], UseCache = true, BatchSize = 1)).[0]
            Expect.equal stopped free.[.. stop - 1] "tokens up to the first EOS, without it"
        }
        yield test "no live tensors left behind" {
            use m = create "llama-tiny"
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            m.GenerateGreedy([| [| 4; 5; 6 |] |], options 9 true) |> ignore
            let before = live ()
            m.GenerateGreedy([| [| 4; 5; 6 |] |], options 9 true) |> ignore
            Expect.equal (live ()) before "live tensors unchanged"
        }
    ]

let private fallback =
    testList "steps aside" [
        test "LoRA adapters, bfloat16 weights, a switched-off kernel set: no decoder, same tokens as the forward" {
            let check (what: string) (m: LlamaForCausalLM) =
                use _ng = torch.no_grad()
                use cache = new LlamaKvCache(m.Config.NumHiddenLayers, 16L)
                use x0 = ids [| [| 5L; 6L; 7L |] |]
                use _l = m.Forward(x0, cache = cache)
                Expect.isNull (LlamaCpuDecoder.TryCreate(m, cache, 3L, 8)) $"{what}: no decoder"
                let cached = m.GenerateGreedy([| [| 5; 6; 7 |] |], options 8 true)
                let uncached = m.GenerateGreedy([| [| 5; 6; 7 |] |], options 8 false)
                Expect.equal cached uncached $"{what}: cached == uncached"
            use lora = create "llama-tiny"
            Lora.Apply(lora, LoraConfig.ForRank 4) |> ignore
            // A non-zero B so the adapters change the output (they start at zero).
            let randomiseB () =
                use _ng = torch.no_grad()
                for struct (n, p) in lora.named_parameters() do
                    if n.Contains "lora_B" then p.normal_(0.0, 0.1) |> ignore
            randomiseB ()
            check "LoRA" lora
            use bf16 = create "llama-tiny"
            bf16.``to``(torch.ScalarType.BFloat16) |> ignore
            use _ng = torch.no_grad()
            use cache = new LlamaKvCache(bf16.Config.NumHiddenLayers, 16L)
            use x0 = ids [| [| 5L; 6L; 7L |] |]
            use _l = bf16.Forward(x0, cache = cache)
            Expect.isNull (LlamaCpuDecoder.TryCreate(bf16, cache, 3L, 8)) "bfloat16: no decoder"
            use plain = create "llama-tiny"
            withDecoder false (fun () -> check "CpuTensors.Enabled = false" plain)
        }
    ]

[<Tests>]
let tests =
    // Sequenced: models are seeded through torch's global generator, and one test switches CpuTensors.Enabled.
    testSequenced <| testList "llama cpu decoder" [ logits; tokens; fallback ]
