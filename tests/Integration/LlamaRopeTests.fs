/// rope_scaling (linear, dynamic, llama3) and attention/MLP biases of the LLaMA family.
module LlamaRopeTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Checkpoints
open Klf.Models
open Klf.Models.Llama

open LlamaTestKit

/// HF `_compute_llama3_parameters`, written out naively in float64 for one inverse frequency.
let private naiveLlama3 (theta: float) (d: int) (factor: float) (low: float) (high: float) (original: float) (i: int) =
    let inv = 1.0 / Math.Pow(theta, float (2 * i) / float d)
    let wavelen = 2.0 * Math.PI / inv
    let lowWavelen = original / low
    let highWavelen = original / high
    if wavelen < highWavelen then inv
    elif wavelen > lowWavelen then inv / factor
    else
        let smooth = (original / wavelen - low) / (high - low)
        (1.0 - smooth) * inv / factor + smooth * inv

/// A preset with another rope_scaling (JSON text, or null for none).
let private withRope (preset: string) (ropeScaling: string) =
    let j = (LlamaConfig.Preset preset).ToJson()
    j.["rope_scaling"] <- (if isNull ropeScaling then null else JsonNode.Parse ropeScaling)
    LlamaConfig.FromJson(j, preset)

let private llama31Scaling = """{"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
  "original_max_position_embeddings": 8192, "rope_type": "llama3"}"""

/// Run inside the sequenced "llama" list (models are seeded through the global generator).
let ropeScaling =
    testList "rope scaling" [
        test "llama3 inv_freq equals a naive float64 reading of HF's formula (Llama 3.1 8B settings)" {
            let j = JsonNode.Parse(sampleConfig).AsObject()
            j.["hidden_size"] <- JsonValue.Create 4096
            j.["num_attention_heads"] <- JsonValue.Create 32      // head_dim 128
            j.["rope_scaling"] <- JsonNode.Parse llama31Scaling
            let c = LlamaConfig.FromJson(j, "llama-3.1-8b")
            Expect.equal c.HeadDim 128 "head_dim"
            Expect.equal c.RopeScaling.RopeType "llama3" "rope type"
            let got = LlamaRotary.InvFreq(c)
            Expect.equal got.Length 64 "D/2 frequencies"
            for i in 0 .. 63 do
                let expected = naiveLlama3 500000.0 128 8.0 1.0 4.0 8192.0 i
                Expect.floatClose { absolute = 0.0; relative = 1e-12 } got.[i] expected $"inv_freq[{i}]"
            // The three regimes are all exercised: kept, smoothed, divided by the factor.
            let plain = Array.init 64 (fun i -> 1.0 / Math.Pow(500000.0, float (2 * i) / 128.0))
            let kept = Array.init 64 (fun i -> got.[i] = plain.[i]) |> Array.filter id |> Array.length
            let divided = Array.init 64 (fun i -> abs (got.[i] - plain.[i] / 8.0) < 1e-15 * plain.[i]) |> Array.filter id |> Array.length
            printfn "llama3 8B: %d kept, %d divided by 8, %d smoothed" kept divided (64 - kept - divided)
            Expect.isGreaterThan kept 0 "some kept"
            Expect.isGreaterThan divided 0 "some divided"
            Expect.isGreaterThan (64 - kept - divided) 0 "some smoothed"
        }
        test "linear scaling at positions p equals default RoPE at p / factor" {
            let linear = withRope "llama-tiny" """{"type": "linear", "factor": 2.0}"""
            Expect.equal linear.RopeScaling.RopeType "linear" "older key 'type' read"
            torch.manual_seed seed |> ignore
            use ml = new LlamaForCausalLM(linear)
            use md = create "llama-tiny"
            use _ng = torch.no_grad()
            use x = ids [| [| 5L; 9L; 33L; 7L; 120L; 64L |] |]
            use pos = torch.arange(0L, 12L, 2L).unsqueeze(0L)         // 0, 2, .., 10
            use half = torch.arange(0L, 6L).unsqueeze(0L)             // 0, 1, .., 5
            use a = ml.Forward(x, null, pos)
            use b = md.Forward(x, null, half)
            Expect.isLessThan (maxAbsDiff a b) 1e-5 "same logits"
            use c = md.Forward(x, null, pos)
            Expect.isGreaterThan (maxAbsDiff a c) 1e-4 "and differs from default at p"
        }
        test "dynamic NTK: default up to max_position_embeddings, then the scaled base" {
            let dyn = withRope "llama-tiny" """{"rope_type": "dynamic", "factor": 4.0}"""
            let plain = LlamaConfig.Preset "llama-tiny"
            let maxPos = dyn.MaxPositionEmbeddings
            Expect.equal (LlamaRotary.InvFreq(dyn, int64 maxPos - 1L)) (LlamaRotary.InvFreq plain) "within the trained length"
            let seqLen = 3 * maxPos
            let d = float dyn.HeadDim
            let theta = dyn.RopeTheta * Math.Pow(4.0 * float seqLen / float maxPos - 3.0, d / (d - 2.0))
            let got = LlamaRotary.InvFreq(dyn, int64 seqLen - 1L)
            for i in 0 .. got.Length - 1 do
                Expect.floatClose { absolute = 0.0; relative = 1e-12 } got.[i] (1.0 / Math.Pow(theta, 2.0 * float i / d)) $"inv_freq[{i}]"
            torch.manual_seed seed |> ignore
            use md = new LlamaForCausalLM(dyn)
            use mp = create "llama-tiny"
            use _ng = torch.no_grad()
            use x = ids [| [| 5L; 9L; 33L |] |]
            use a = md.Forward(x)
            use b = mp.Forward(x)
            Expect.isLessThan (maxAbsDiff a b) 1e-6 "short sequences: as default"
            use far = torch.tensor([| 600L; 601L; 602L |]).view(1L, 3L)
            use c = md.Forward(x, null, far)
            use e = mp.Forward(x, null, far)
            Expect.isGreaterThan (maxAbsDiff c e) 1e-5 "beyond max_position_embeddings: scaled"
        }
        test "a Llama 3.2 style config (rope_scaling llama3, biases) saves, loads from a folder and runs" {
            use m = create "llama-tiny-bias"
            let cfg = m.Config
            Expect.equal cfg.RopeScaling.RopeType "llama3" "preset uses llama3 scaling"
            let names = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
            for p in [ "q_proj"; "k_proj"; "v_proj"; "o_proj" ] do
                Expect.contains names $"model.layers.0.self_attn.{p}.bias" $"{p} bias"
            for p in [ "gate_proj"; "up_proj"; "down_proj" ] do
                Expect.contains names $"model.layers.1.mlp.{p}.bias" $"{p} bias"
            use plain = create "llama-tiny"
            Expect.isFalse (plain.named_parameters() |> Seq.exists (fun struct (n, _) -> n.EndsWith ".bias")) "no bias by default"
            let dir = Path.Combine(Path.GetTempPath(), $"klf-llama3-{Guid.NewGuid():N}")
            try
                do
                    use _ng = torch.no_grad()
                    for struct (n, p) in m.named_parameters() do
                        if n.EndsWith ".bias" then p.normal_(0.0, 0.1) |> ignore   // init is zero: make them matter
                Klf.Checkpoints.HfWeights.Save(m, dir)
                let saved = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json"))).AsObject()
                Expect.equal (saved.["rope_scaling"].["rope_type"].GetValue<string>()) "llama3" "rope_scaling written"
                Expect.isTrue (saved.["attention_bias"].GetValue<bool>()) "attention_bias written"
                use loaded = ModelFolder.Load dir :?> LlamaForCausalLM
                Expect.equal loaded.Config cfg "config round trip through the folder"
                use _ng = torch.no_grad()
                use x = ids [| [| 5L; 9L; 33L; 7L; 120L; 64L |] |]
                use a = m.Forward(x)
                use b = loaded.Forward(x)
                Expect.equal (maxAbsDiff a b) 0.0 "same logits after load"
                Expect.isFalse (a.isnan().any().item<bool>()) "finite"
                let prompts = [| [| 4; 5; 6 |]; [| 9 |] |]
                let opts = GenerationOptions(MaxNewTokens = 5)
                Expect.equal (loaded.GenerateGreedy(prompts, opts)) (loaded.GenerateGreedy(prompts, withOpts opts (Some false) None None)) "cache == no cache"
            finally
                if Directory.Exists dir then Directory.Delete(dir, true)
        }
        test "rope_scaling and bias flags round trip; unknown rope types are clear errors" {
            for rs in [ llama31Scaling; """{"type": "linear", "factor": 2.0}"""; """{"rope_type": "dynamic", "factor": 2.0}"""; """{"rope_type": "default"}""" ] do
                let j = JsonNode.Parse(sampleConfig).AsObject()
                j.["rope_scaling"] <- JsonNode.Parse rs
                j.["mlp_bias"] <- JsonValue.Create true
                let c = LlamaConfig.FromJson(j, "sample")
                Expect.isTrue c.MlpBias "mlp_bias read"
                Expect.isFalse c.AttentionBias "attention_bias read"
                let back = c.ToJson()
                Expect.isTrue (JsonNode.DeepEquals(back.["rope_scaling"], JsonNode.Parse rs)) $"rope_scaling kept as written: {rs}"
                Expect.equal (LlamaConfig.FromJson(back, "again")) c "round trip"
            let plain = LlamaConfig.FromJson(JsonNode.Parse(sampleConfig).AsObject(), "sample")
            Expect.isNull (box plain.RopeScaling) "no rope_scaling"
            Expect.isNull (plain.ToJson().["rope_scaling"]) "written as null"
            let path = Path.Combine(Path.GetTempPath(), $"klf-yarn-{Guid.NewGuid():N}.json")
            let errorOf (rs: string) =
                let j = JsonNode.Parse(sampleConfig).AsObject()
                j.["rope_scaling"] <- JsonNode.Parse rs
                File.WriteAllText(path, j.ToJsonString())
                try
                    try LlamaConfig.FromFile path |> ignore; "" with :? FormatException as e -> e.Message
                finally File.Delete path
            let msg = errorOf """{"rope_type": "yarn", "factor": 4.0}"""
            Expect.stringContains msg path "names the file"
            Expect.stringContains msg "rope_scaling.rope_type" "names the field"
            Expect.stringContains msg "yarn" "says what it got"
            Expect.stringContains (errorOf """{"type": "longrope", "factor": 4.0}""") "rope_scaling.type" "older key named"
            Expect.stringContains (errorOf """{"rope_type": "llama3", "factor": 8.0}""") "low_freq_factor" "missing llama3 field named"
            Expect.stringContains (errorOf """{"rope_type": "linear"}""") "rope_scaling.factor" "missing factor named"
        }
    ]
