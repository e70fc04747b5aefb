/// The key/value buffers of incremental decoding: appended positions land in place (growing by
/// doubling when the capacity runs out), a cache that has to grow gives the same logits as no cache,
/// and nothing is left alive.
module KvCacheTests

open System
open Expecto
open TorchSharp
open Klf.Models.Layers
open Klf.Models.Llama

[<Tests>]
let tests =
    testSequenced <| testList "kv cache" [
        test "KeyValueBuffer: appends in place, doubles when full, keeps the past, stores cross-attention keys as given, frees everything" {
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            let live0 = live ()
            do
                use _scope = torch.NewDisposeScope() // the test's own temporaries; the buffer's tensors are its own
                use buffer = new KeyValueBuffer(2L)
                let chunk (seed: int64) t = torch.manual_seed seed |> ignore; torch.randn(2L, 3L, t, 4L)
                let parts = [ chunk 1L 1L; chunk 2L 2L; chunk 3L 1L; chunk 4L 3L ]
                let mutable capacities = []
                for p in parts do
                    let k, v = buffer.Append(p, p * 2.0f).ToTuple()
                    capacities <- capacities @ [ buffer.Capacity ]
                    Expect.equal k.shape[2] buffer.Length "the keys cover every cached position"
                    Expect.isTrue ((v.eq(k * 2.0f)).all().item<bool>()) "values beside their keys"
                Expect.equal buffer.Length 7L "1 + 2 + 1 + 3 positions"
                Expect.equal capacities [ 2L; 4L; 4L; 8L ] "room for 2, then doubled as needed"
                use expected = torch.cat(Array.ofList parts, 2L)
                Expect.isTrue (buffer.Keys.eq(expected).all().item<bool>()) "the past kept in order through growth"
                for p in parts do p.Dispose()
                use crossK = torch.ones(2L, 3L, 5L, 4L)
                use crossV = torch.zeros(2L, 3L, 5L, 4L)
                buffer.Store(crossK.clone(), crossV.clone())
                Expect.equal buffer.Length 5L "stored keys replace the contents"
                Expect.isTrue (buffer.Keys.eq(crossK).all().item<bool>()) "as given"
            Expect.equal (live ()) live0 "no tensor left alive"
        }

        test "a LLaMA cache that starts with room for one position grows and gives the logits of no cache" {
            torch.manual_seed 5L |> ignore
            use model = new LlamaForCausalLM(LlamaConfig.Preset("llama-tiny", 300))
            model.eval()
            use _ng = torch.no_grad()
            let tokens = [| 5L; 17L; 42L; 9L; 100L; 7L; 3L; 250L |]
            use cache = new LlamaKvCache(model.Config.NumHiddenLayers, 1L)
            use prompt = LlamaTestKit.ids [| tokens[.. 2] |]
            use first = model.Forward(prompt, cache = cache)
            for t in 3 .. tokens.Length - 1 do
                use step = LlamaTestKit.ids [| [| tokens[t] |] |]
                use stepLogits = model.Forward(step, cache = cache)
                use all = LlamaTestKit.ids [| tokens[.. t] |]
                use full = model.Forward(all)
                use last = full.select(1L, -1L)
                use mine = stepLogits.select(1L, -1L)
                Expect.isTrue (mine.allclose(last, 1e-4, 1e-5)) $"position {t}: cached logits = full forward's"
            Expect.equal cache.Length (int64 tokens.Length) "every position cached"
        }
    ]
