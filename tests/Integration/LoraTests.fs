module LoraTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open TorchSharp
type Tensor = TorchSharp.torch.Tensor
type ScalarType = TorchSharp.torch.ScalarType
open Klf.Models
open Klf.Adapters

let private ids () = torch.tensor([| 1L; 5L; 7L; 3L; 9L; 4L; 11L; 12L; 6L; 8L; 2L; 0L |]).reshape(2L, 6L)

/// Same shape and dtype and every element equal (bit-exact for non-NaN floats).
let bitEqual (a: Tensor) (b: Tensor) =
    a.shape = b.shape && a.dtype = b.dtype && a.ne(b).sum().ToInt64() = 0L

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "klf-lora-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

/// Reads the keys of a safetensors file straight from its JSON header (independent of our reader).
let private safetensorsKeys (path: string) =
    let bytes = File.ReadAllBytes path
    let n = BitConverter.ToUInt64(bytes, 0) |> int
    let header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, n)).AsObject()
    header |> Seq.map (fun kv -> kv.Key) |> Seq.filter ((<>) "__metadata__") |> Set.ofSeq

let private randomizeB (lora: LoraModel) (adapter: string) (seed: int64) =
    torch.manual_seed(seed) |> ignore
    use _ng = torch.no_grad()
    for m in lora.ModulesOf adapter do
        m.LoraB(adapter).normal_(0.0, 0.1) |> ignore

let private logits (m: TinyLm.TinyLm) =
    use x = ids ()
    m.Logits x

let private qv = LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = [| "q_proj"; "v_proj" |])

/// Sequenced: these tests seed torch's global generator and count live tensors globally, so
/// they must not interleave with other tests.
[<Tests>]
let tests =
    testSequenced <| testList "lora" [
        test "in-memory names are PEFT's (base keeps its HF key), file keys are PEFT's adapter-file keys" {
            use m = TinyLm.create 1L
            let lora = Lora.Apply(m, qv)
            let names = m.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.shape) |> Map.ofSeq
            Expect.equal names.["layers.0.q_proj.weight"] [| 32L; 32L |] "base weight keeps its key"
            Expect.isTrue (names.ContainsKey "layers.0.q_proj.bias") "base bias keeps its key"
            Expect.equal names.["layers.0.q_proj.lora_A.default.weight"] [| 4L; 32L |] "A is (r, in)"
            Expect.equal names.["layers.1.v_proj.lora_B.default.weight"] [| 32L; 4L |] "B is (out, r)"
            Expect.isFalse (names |> Map.exists (fun k _ -> k.Contains "base_layer")) "no base_layer level"
            Expect.equal (lora.Modules |> Seq.map (fun w -> w.Path) |> List.ofSeq)
                [ "layers.0.q_proj"; "layers.0.v_proj"; "layers.1.q_proj"; "layers.1.v_proj" ] "wrapped modules"
            let dir = tempDir ()
            lora.SaveAdapter(dir, "default")
            let keys = safetensorsKeys (Path.Combine(dir, "adapter_model.safetensors"))
            let expected =
                set [ for l in 0 .. 1 do
                        for p in [ "q_proj"; "v_proj" ] do
                          for mat in [ "lora_A"; "lora_B" ] -> $"base_model.model.layers.{l}.{p}.{mat}.weight" ]
            Expect.equal keys expected "file keys"
            // Format check with an independent decoder: 8-byte aligned header, contiguous offsets
            // from 0 covering the data section, raw little-endian F32 values equal to A.
            let path = Path.Combine(dir, "adapter_model.safetensors")
            let bytes = File.ReadAllBytes path
            let n = BitConverter.ToUInt64(bytes, 0) |> int
            Expect.equal (n % 8) 0 "header padded to 8 bytes"
            let header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, n)).AsObject()
            let spans =
                [ for kv in header do
                    if kv.Key <> "__metadata__" then
                        let o = kv.Value.AsObject()
                        Expect.equal (o.["dtype"].GetValue<string>()) "F32" "dtype"
                        let offs = o.["data_offsets"].AsArray()
                        yield offs.[0].GetValue<int64>(), offs.[1].GetValue<int64>() ]
                |> List.sort
            Expect.equal (fst spans.Head) 0L "data starts at 0"
            for (_, e), (b, _) in List.pairwise spans do Expect.equal b e "contiguous"
            Expect.equal (int64 (bytes.Length - 8 - n)) (snd (List.last spans)) "data section fully used"
            let a = lora.Modules.[0].LoraA "default"
            let entry = header.[$"base_model.model.{lora.Modules.[0].Path}.lora_A.weight"].AsObject()
            let start = 8 + n + int (entry.["data_offsets"].AsArray().[0].GetValue<int64>())
            let fromFile = Array.init (int a.NumberOfElements) (fun i -> BitConverter.ToSingle(bytes, start + 4 * i))
            Expect.equal fromFile (a.cpu().data<float32>().ToArray()) "A's raw values"
            let cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))
            Expect.equal (cfg.["peft_type"].GetValue<string>()) "LORA" "peft_type"
            Expect.equal (cfg.["r"].GetValue<int>()) 4 "r"
            Expect.equal (cfg.["lora_alpha"].GetValue<double>()) 8.0 "lora_alpha"
            Expect.equal (cfg.["bias"].GetValue<string>()) "none" "bias"
            Expect.equal (cfg.["target_modules"].AsArray() |> Seq.map (fun x -> x.GetValue<string>()) |> List.ofSeq) [ "q_proj"; "v_proj" ] "targets"
            Directory.Delete(dir, true)
        }

        test "base parameters are frozen, adapter parameters trainable" {
            use m = TinyLm.create 1L
            Lora.Apply(m, qv) |> ignore
            for struct (n, p) in m.named_parameters() do
                Expect.equal p.requires_grad (Lora.IsLoraPath n) $"requires_grad of {n}"
        }

        test "with B = 0 the adapted forward equals the base forward exactly" {
            use m = TinyLm.create 1L
            use before = logits m
            Lora.Apply(m, LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.05, TargetModules = [| "q_proj"; "v_proj" |])) |> ignore
            m.train()
            use after = logits m
            Expect.isTrue (bitEqual before after) "bit-identical logits"
        }

        test "the adapter acts through ModuleList children and regex targets" {
            use m = TinyLm.create 1L
            use before = logits m
            let lora = Lora.Apply(m, LoraConfig(R = 2, Alpha = 2.0, Dropout = 0.0, TargetRegex = @"mixers\.\d+"))
            Expect.equal (lora.Modules |> Seq.map (fun w -> w.Path) |> List.ofSeq) [ "mixers.0" ] "regex target"
            randomizeB lora "default" 3L
            use after = logits m
            Expect.isFalse (before.allclose(after, 1e-6, 1e-6)) "a non-zero B changes the output"
        }

        test "no matching module is an error" {
            use m = TinyLm.create 1L
            Expect.throwsT<InvalidOperationException> (fun () -> Lora.Apply(m, LoraConfig(TargetModules = [| "k_proj" |])) |> ignore) "k_proj absent"
        }

        test "merged and unmerged forwards agree; unmerge restores the base weights" {
            use m = TinyLm.create 1L
            let lora = Lora.Apply(m, qv)
            randomizeB lora "default" 5L
            m.eval()
            let weights () = [ for w in lora.Modules -> w.Base.weight.detach().clone() ]
            let w0 = weights ()
            use y0 = logits m
            lora.Merge "default"
            Expect.isTrue (lora.Modules |> Seq.forall (fun w -> w.IsMerged "default")) "merged"
            use y1 = logits m
            Expect.isTrue (y0.allclose(y1, 1e-5, 1e-5)) $"merged ≈ unmerged (max diff {(y0 - y1).abs().max().ToDouble()})"
            lora.Unmerge "default"
            use y2 = logits m
            Expect.isTrue (y0.allclose(y2, 1e-6, 1e-6)) "after unmerge ≈ before"
            let w1 = weights ()
            let maxDiff = List.map2 (fun (a: Tensor) (b: Tensor) -> (a - b).abs().max().ToDouble()) w0 w1 |> List.max
            // float32: (W + Δ) − Δ is W up to one rounding of |W| + |Δ| (~6e-8 here), not always bit-exact.
            Expect.isLessThanOrEqual maxDiff 1e-6 $"unmerge restores W (max diff {maxDiff:E2})"
            printfn "lora: unmerge max |ΔW| = %.3g (bit-exact: %b)" maxDiff (List.forall2 bitEqual w0 w1)
        }

        test "two adapters on one module: toggling active and trainable" {
            use m = TinyLm.create 1L
            m.eval()
            use yBase = logits m
            let lora = Lora.Apply(m, LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = [| "q_proj"; "v_proj" |], AdapterName = "a"))
            Lora.Apply(m, LoraConfig(R = 2, Alpha = 8.0, Dropout = 0.0, TargetModules = [| "q_proj"; "v_proj" |], AdapterName = "b")) |> ignore
            Expect.equal (List.ofSeq lora.AdapterNames) [ "a"; "b" ] "both adapters on one handle"
            Expect.equal (List.ofSeq lora.Modules.[0].AdapterNames) [ "a"; "b" ] "both on one module"
            randomizeB lora "a" 7L
            randomizeB lora "b" 8L
            lora.SetActiveAdapters "a"
            use yA = logits m
            lora.SetActiveAdapters "b"
            use yB = logits m
            lora.SetActiveAdapters("a", "b")
            use yAB = logits m
            lora.SetActiveAdapters()
            use yNone = logits m
            Expect.isTrue (bitEqual yNone yBase) "no active adapter = base exactly"
            Expect.isFalse (yA.allclose(yB, 1e-6, 1e-6)) "a ≠ b"
            // The model is non-linear in the adapters' outputs, so compare a layer: Δ of both = Δa + Δb.
            let w = lora.Modules.[0]
            use x = torch.randn(3L, 32L)
            use y0 = w.Base.forward x
            lora.SetActiveAdapters "a"
            use ya = w.Base.call x
            lora.SetActiveAdapters "b"
            use yb = w.Base.call x
            lora.SetActiveAdapters("a", "b")
            use yab = w.Base.call x
            use sum = ya + yb - y0
            Expect.isTrue (yab.allclose(sum, 1e-5, 1e-6)) "contributions add"
            lora.SetTrainableAdapters "b"
            Expect.isFalse (w.LoraA("a").requires_grad) "a frozen"
            Expect.isTrue (w.LoraB("b").requires_grad) "b trainable"
            lora.SetBaseTrainable true
            Expect.isTrue w.Base.weight.requires_grad "base unfrozen"
            Expect.isFalse (w.LoraA("a").requires_grad) "adapters keep their flags"
            lora.SetBaseTrainable false
            Expect.isFalse w.Base.weight.requires_grad "base frozen again"
        }

        test "adapters follow the model through dtype conversion" {
            use m = TinyLm.create 1L
            let lora = Lora.Apply(m, qv)
            m.``to``(ScalarType.Float64) |> ignore
            lora.SyncToBase()
            for struct (n, p) in m.named_parameters() do
                Expect.equal p.requires_grad (Lora.IsLoraPath n) $"requires_grad of {n} kept"
                Expect.equal p.dtype ScalarType.Float64 $"{n} converted"
            Expect.equal (lora.Modules.[0].LoraA("default").dtype) ScalarType.Float64 "accessor sees the converted A"
            m.``to``(ScalarType.Float32) |> ignore
            use y32 = logits m                       // the forward hook syncs by itself
            Expect.equal y32.dtype ScalarType.Float32 "back to float32 without an explicit sync"
            m.``to``(ScalarType.Float64) |> ignore
            use y = logits m
            Expect.equal y.dtype ScalarType.Float64 "forward runs in float64"
        }

        test "save then load is bit-exact (adapter created from the file's config)" {
            use m = TinyLm.create 1L
            let lora = Lora.Apply(m, qv)
            randomizeB lora "default" 11L
            let dir = tempDir ()
            lora.SaveAdapter(dir, "default")
            use m2 = TinyLm.create 1L
            Expect.isNull (Lora.Find m2) "fresh model has no LoRA handle"
            let handle2 = Lora.LoadAdapter(m2, dir, "task1")
            Expect.equal handle2.Configs.["task1"].R 4 "config read back"
            for w in lora.Modules do
                let w2 = handle2.Modules |> Seq.find (fun x -> x.Path = w.Path)
                Expect.isTrue (bitEqual (w.LoraA "default") (w2.LoraA "task1")) $"A of {w.Path}"
                Expect.isTrue (bitEqual (w.LoraB "default") (w2.LoraB "task1")) $"B of {w.Path}"
            Directory.Delete(dir, true)
        }

        test "loading a non-matching adapter file lists missing and unexpected keys" {
            use qOnly = TinyLm.create 1L
            let lq = Lora.Apply(qOnly, LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = [| "q_proj" |]))
            let dirQ = tempDir ()
            lq.SaveAdapter(dirQ, "default")
            use both = TinyLm.create 1L
            let lb = Lora.Apply(both, qv)
            let e = Expect.throwsC (fun () -> lb.LoadAdapter(dirQ, "default")) id
            Expect.stringContains e.Message "missing keys: [base_model.model.layers.0.v_proj.lora_A.weight" "missing v_proj keys listed"
            Expect.stringContains e.Message "unexpected keys: []" "nothing unexpected"
            let dirQV = tempDir ()
            lb.SaveAdapter(dirQV, "default")
            let e2 = Expect.throwsC (fun () -> lq.LoadAdapter(dirQV, "default")) id
            Expect.stringContains e2.Message "unexpected keys: [base_model.model.layers.0.v_proj.lora_A.weight" "unexpected v_proj keys listed"
            Directory.Delete(dirQ, true)
            Directory.Delete(dirQV, true)
        }
        test "PEFT fields: use_rslora scales by alpha / sqrt r, rank_pattern and alpha_pattern set each module's rank and alpha, and all survive save and load" {
            let config =
                LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = [| "q_proj"; "v_proj" |], UseRsLora = true,
                           RankPattern = [| Collections.Generic.KeyValuePair("q_proj", 2) |],
                           AlphaPattern = [| Collections.Generic.KeyValuePair("layers.1.v_proj", 3.0) |])
            use m = TinyLm.create 1L
            let lora = Lora.Apply(m, config)
            let byPath = lora.Modules |> Seq.map (fun w -> w.Path, w) |> Map.ofSeq
            Expect.equal (byPath["layers.0.q_proj"].Rank "default") 2 "rank_pattern: q_proj has rank 2"
            Expect.equal (byPath["layers.0.v_proj"].Rank "default") 4 "the others keep r"
            Expect.floatClose Accuracy.veryHigh (byPath["layers.0.q_proj"].Scaling "default") (8.0 / sqrt 2.0) "rsLoRA: alpha / sqrt r"
            Expect.floatClose Accuracy.veryHigh (byPath["layers.1.v_proj"].Scaling "default") (3.0 / 2.0) "alpha_pattern: alpha 3 over sqrt 4"
            Expect.floatClose Accuracy.veryHigh (byPath["layers.0.v_proj"].Scaling "default") (8.0 / 2.0) "alpha 8 over sqrt 4"
            randomizeB lora "default" 5L
            // The forward adds scaling * B A x: check one module by hand (every temporary in a dispose scope).
            let w = byPath["layers.0.q_proj"]
            use scope = torch.NewDisposeScope()
            use x = torch.randn(3L, 32L)
            use expected = torch.nn.functional.linear(x, w.Base.weight, w.Base.bias)
            use delta = torch.matmul(torch.matmul(x, (w.LoraA "default").t()), (w.LoraB "default").t()).mul(torch.tensor(8.0 / sqrt 2.0))
            use want = expected.add(delta)
            use got = w.Base.call(x)
            let diff = got.sub(want).abs().max().ToDouble()
            let part = got.sub(expected).abs().max().ToDouble()
            Expect.isLessThan diff 1e-5 $"the adapted forward uses the rsLoRA scaling (max diff {diff}, adapter part {part})"
            let dir = tempDir ()
            lora.SaveAdapter(dir, "default")
            let json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))
            Expect.isTrue (json["use_rslora"].GetValue<bool>()) "use_rslora written"
            Expect.equal (json["rank_pattern"].["q_proj"].GetValue<int>()) 2 "rank_pattern written"
            use m2 = TinyLm.create 1L
            let back = Lora.LoadAdapter(m2, dir, "default")
            let w2 = back.Modules |> Seq.find (fun x -> x.Path = "layers.0.q_proj")
            Expect.equal (w2.Rank "default") 2 "rank read back"
            Expect.floatClose Accuracy.veryHigh (w2.Scaling "default") (8.0 / sqrt 2.0) "scaling read back"
            Expect.isTrue (bitEqual (w.LoraB "default") (w2.LoraB "default")) "weights read back"
            Directory.Delete(dir, true)
        }

        test "PEFT fields: exclude_modules and layers_to_transform with layers_pattern choose the modules as PEFT does" {
            let c = LoraConfig(R = 2, TargetModules = [| "q_proj"; "v_proj" |], ExcludeModules = [| "layers.1.q_proj" |])
            Expect.isTrue (c.Matches "model.layers.0.self_attn.q_proj") "targeted"
            Expect.isFalse (c.Matches "model.layers.1.q_proj") "excluded by name suffix"
            let rx = LoraConfig(R = 2, TargetRegex = @".*\.(q|v)_proj", ExcludeRegex = @".*layers\.0\..*")
            Expect.isFalse (rx.Matches "model.layers.0.self_attn.q_proj") "excluded by regex"
            Expect.isTrue (rx.Matches "model.layers.2.self_attn.v_proj") "kept"
            let layers = LoraConfig(R = 2, TargetModules = [| "q_proj" |], LayersToTransform = [| 1 |], LayersPattern = [| "layers" |])
            Expect.isFalse (layers.Matches "model.layers.0.self_attn.q_proj") "layer 0 not transformed"
            Expect.isTrue (layers.Matches "model.layers.1.self_attn.q_proj") "layer 1 transformed"
            Expect.equal (LoraConfig.LayerIndex("encoder.block.0.layer.1.SelfAttention.q", null)) (Nullable 1) "no pattern: PEFT's greedy rule takes the last index"
            Expect.equal (LoraConfig.LayerIndex("encoder.block.0.layer.1.SelfAttention.q", [| "block" |])) (Nullable 0) "with layers_pattern"
            Expect.equal (LoraConfig.LayerIndex("layers.0.q_proj", null)) (Nullable()) "as in PEFT, an index needs a segment before the layer list"
        }

        test "PEFT fields Klf does not implement are refused by name before any tensor is loaded; off values and metadata are accepted" {
            use m = TinyLm.create 1L
            let lora = Lora.Apply(m, qv)
            let dir = tempDir ()
            lora.SaveAdapter(dir, "default")
            let file = Path.Combine(dir, "adapter_config.json")
            let original = File.ReadAllText file
            let withField (key: string) (value: JsonNode) =
                let o = JsonNode.Parse(original).AsObject()
                o[key] <- value
                File.WriteAllText(file, o.ToJsonString())
            for key, value, says in [ "use_dora", JsonValue.Create true :> JsonNode, "DoRA"
                                      "modules_to_save", JsonArray(JsonValue.Create "lm_head") :> JsonNode, "extra modules"
                                      "bias", JsonValue.Create "all" :> JsonNode, "no biases"
                                      "fan_in_fan_out", JsonValue.Create true :> JsonNode, "transposed"
                                      "layer_replication", JsonArray(JsonArray(JsonValue.Create 0, JsonValue.Create 2)) :> JsonNode, "duplicated"
                                      "some_future_field", JsonValue.Create 3 :> JsonNode, "not a LoRA field Klf knows" ] do
                withField key value
                use fresh = TinyLm.create 1L
                let e = Expect.throwsC (fun () -> Lora.LoadAdapter(fresh, dir, "default") |> ignore) id
                Expect.stringContains e.Message file $"{key}: names the file"
                Expect.stringContains e.Message $"\"{key}\"" $"{key}: names the field"
                Expect.stringContains e.Message says $"{key}: says what it would change"
                Expect.isNull (Lora.Find fresh) $"{key}: refused before the model was touched"
            for key, value in [ "use_dora", JsonValue.Create false :> JsonNode; "some_future_field", null; "loftq_config", JsonObject() :> JsonNode
                                "revision", JsonValue.Create "main" :> JsonNode; "megatron_core", JsonValue.Create "megatron.core" :> JsonNode ] do
                withField key value
                use fresh = TinyLm.create 1L
                Lora.LoadAdapter(fresh, dir, "default") |> ignore
            File.WriteAllText(file, original.Replace("\"r\": 4", "\"r\": \"four\""))
            use fresh = TinyLm.create 1L
            let e = Expect.throwsC (fun () -> Lora.LoadAdapter(fresh, dir, "default") |> ignore) id
            Expect.stringContains e.Message "\"r\" is \"four\": expected an integer" "a wrong type is named"
            Directory.Delete(dir, true)
        }
    ]
