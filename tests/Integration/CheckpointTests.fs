module CheckpointTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Models
open Klf.Models.Llama
open Klf.Checkpoints
open Klf.Formats

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "klf-ckpt-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory d |> ignore
    d

let private withTemp f =
    let d = tempDir ()
    try f d finally try Directory.Delete(d, true) with _ -> ()

let private create preset (seed: int64) =
    torch.manual_seed seed |> ignore
    LanguageModels.FromPreset preset

/// Every state entry of both models has the same dtype, shape and bytes.
let private bitEqual (a: ILanguageModel) (b: ILanguageModel) =
    let sa = HfWeights.LiveStateDict a
    let sb = HfWeights.LiveStateDict b
    Expect.equal (Set sa.Keys) (Set sb.Keys) "same keys"
    for KeyValue(k, t) in sa do
        let u = sb[k]
        Expect.equal u.dtype t.dtype $"{k} dtype"
        Expect.equal u.shape t.shape $"{k} shape"
        Expect.isTrue (t.bytes.ToArray() = u.bytes.ToArray()) $"{k} bytes equal"

let private dispose (m: ILanguageModel) = m.Dispose()

[<Tests>]
let tests =
    testSequenced <| testList "checkpoints" [
        test "RandomCheckpoint writes a sharded checkpoint tensor by tensor that loads strictly, the same bytes for the same seed, norms 1" {
            let dir = Directory.CreateTempSubdirectory("klf-random-ck-").FullName
            try
                let config = (Klf.Models.LanguageModels.FromPreset("llama-tiny", Nullable(), torch.META)).ConfigJson()
                let write name seed = RandomCheckpoint.Write(config, "llama-tiny", Path.Combine(dir, name), seed, Nullable 100_000L)
                let n = write "a" 5L
                write "b" 5L |> ignore
                write "c" 6L |> ignore
                Expect.equal n 115008L "parameters written"
                Expect.isTrue (File.Exists(Path.Combine(dir, "a", HfWeights.IndexFile))) "sharded"
                let files name = Directory.GetFiles(Path.Combine(dir, name), "*.safetensors") |> Array.sort |> Array.map File.ReadAllBytes
                Expect.equal (files "a") (files "b") "the same seed, the same bytes"
                Expect.notEqual (files "a") (files "c") "another seed, other weights"
                use m = ModelFolder.Load(Path.Combine(dir, "a"))
                let ps = m.Module.named_parameters() |> Seq.map (fun struct (k, p) -> k, p) |> Map.ofSeq
                Expect.isTrue (ps["model.norm.weight"].eq(torch.ones(64L)).all().item<bool>()) "norms are 1"
                let std = ps["model.layers.0.mlp.up_proj.weight"].std().item<float32>()
                Expect.floatClose { absolute = 0.003; relative = 0.0 } (float std) 0.02 "weights ~ N(0, 0.02)"
            finally
                Directory.Delete(dir, true)
        }

        for preset in [ "llama-tiny"; "llama-tiny-tied"; "llama-tiny-gqa"; "t5-tiny"; "t5-tiny-gated" ] do
            test $"{preset}: save then load is bit-exact (fp32)" {
                withTemp (fun dir ->
                    let a = create preset 1L
                    HfWeights.Save(a, dir)
                    let b = ModelFolder.Load dir
                    bitEqual a b
                    dispose a; dispose b)
            }

        test "SafeTensorsReader reads each tensor as Load does, into fresh tensors or reused buffers, across chunks; bad buffers and files are named" {
            withTemp (fun dir ->
                let path = Path.Combine(dir, "t.safetensors")
                torch.manual_seed 7L |> ignore
                // 3M floats span two 8 MiB read chunks; a bf16 and an int64 entry and an empty one besides.
                let tensors =
                    dict [ "big", torch.randn([| 3L; 1_000_000L |]); "half", torch.randn([| 5L; 7L |]).``to``(torch.ScalarType.BFloat16)
                           "ids", torch.arange(11L); "empty", torch.empty([| 0L; 4L |]) ]
                SafeTensors.Save(path, tensors)
                let bytesOf (t: torch.Tensor) = t.contiguous().bytes.ToArray()
                use reader = new SafeTensorsReader(path)
                Expect.equal (reader.Tensors |> Seq.map (fun t -> t.Name) |> Set.ofSeq) (Set [ "big"; "half"; "ids"; "empty" ]) "entries"
                for KeyValue(name, t) in tensors do
                    use read = reader.Read name
                    Expect.equal read.dtype t.dtype $"{name} dtype"
                    Expect.equal read.shape t.shape $"{name} shape"
                    Expect.isTrue (bytesOf read = bytesOf t) $"{name} bytes"
                // Into one buffer, twice: each read is a view of its start with the entry's values.
                use buffer = torch.zeros(3_000_000L)
                for _ in 1 .. 2 do
                    use big = reader.Read(reader["big"], buffer)
                    Expect.isTrue (bytesOf big = bytesOf tensors["big"]) "big through the buffer"
                Expect.isTrue (bytesOf buffer = bytesOf (tensors["big"].reshape(-1L))) "the buffer holds the values"
                Expect.throwsT<ArgumentException> (fun () -> reader.Read(reader["big"], torch.zeros(10L)) |> ignore) "a buffer too small"
                let e = try reader.Read(reader["half"], torch.zeros(100L)) |> ignore; "" with :? ArgumentException as e -> e.Message
                Expect.stringContains e "half" "a buffer of another dtype names the entry"
                let e = try reader.Read "nope" |> ignore; "" with :? System.Collections.Generic.KeyNotFoundException as e -> e.Message
                Expect.stringContains e path "an unknown name names the file"
                // A truncated file fails when opened, naming the file.
                let cut = Path.Combine(dir, "cut.safetensors")
                File.WriteAllBytes(cut, File.ReadAllBytes(path) |> Array.take 4096)
                let e = try (new SafeTensorsReader(cut)).Dispose(); "" with :? InvalidDataException as e -> e.Message
                Expect.stringContains e cut "the truncated file is named"
                for t in tensors.Values do t.Dispose())
        }

        test "bf16 save then load is bit-exact and keeps the dtype on disk" {
            withTemp (fun dir ->
                let a = create "llama-tiny" 2L
                a.Module.``to``(torch.ScalarType.BFloat16) |> ignore
                HfWeights.Save(a, dir)
                let header, _ = SafeTensors.ReadHeader(Path.Combine(dir, "model.safetensors")).ToTuple()
                Expect.all header (fun i -> i.DType = "BF16") "stored as BF16"
                let b = ModelFolder.Load(dir, dtype = torch.ScalarType.BFloat16)
                bitEqual a b
                dispose a; dispose b)
        }

        test "sharded save writes an index and loads back bit-exact" {
            withTemp (fun dir ->
                let a = create "llama-tiny" 3L
                HfWeights.Save(a, dir, maxShardBytes = 100_000L)
                Expect.isTrue (File.Exists(Path.Combine(dir, HfWeights.IndexFile))) "index written"
                Expect.isFalse (File.Exists(Path.Combine(dir, HfWeights.SingleFile))) "no single file beside shards"
                let shards = Directory.GetFiles(dir, "model-*-of-*.safetensors")
                Expect.isGreaterThan shards.Length 1 "several shards"
                let b = ModelFolder.Load dir
                bitEqual a b
                dispose a; dispose b)
        }

        test "strict load of a wrong checkpoint fails with the missing and unexpected keys, model untouched" {
            withTemp (fun dir ->
                let tied = create "llama-tiny-tied" 4L
                HfWeights.Save(tied, dir)
                // Rename one key so the file has an unexpected key and the model a missing one.
                let path = Path.Combine(dir, "model.safetensors")
                let tensors = SafeTensors.Load path
                let w = tensors["model.norm.weight"]
                tensors.Remove "model.norm.weight" |> ignore
                tensors["model.final_norm.weight"] <- w
                SafeTensors.Save(path, tensors)
                for t in tensors.Values do t.Dispose()
                let untied = create "llama-tiny" 5L
                let before = HfWeights.LiveStateDict(untied) |> Seq.map (fun kv -> kv.Key, kv.Value.clone()) |> dict
                let ex =
                    try HfWeights.LoadInto(untied, dir) |> ignore; failwith "expected a mismatch"
                    with :? CheckpointMismatchException as ex -> ex
                Expect.equal (List.ofSeq ex.Missing) [ "lm_head.weight"; "model.norm.weight" ] "missing keys listed"
                Expect.equal (List.ofSeq ex.Unexpected) [ "model.final_norm.weight" ] "unexpected keys listed"
                Expect.stringContains ex.Message dir "message names the folder"
                Expect.stringContains ex.Message "Missing keys: lm_head.weight, model.norm.weight" "message lists missing keys"
                Expect.stringContains ex.Message "Unexpected keys: model.final_norm.weight" "message lists unexpected keys"
                for KeyValue(k, t) in HfWeights.LiveStateDict untied do
                    Expect.isTrue (t.bytes.ToArray() = before[k].bytes.ToArray()) $"{k} unchanged after the failed load"
                for t in before.Values do t.Dispose()
                dispose tied; dispose untied)
        }

        test "keys Hugging Face ignores (old LLaMA rotary inv_freq buffers) and tied aliases load without error" {
            withTemp (fun dir ->
                let a = create "llama-tiny-tied" 10L
                HfWeights.Save(a, dir)
                let path = Path.Combine(dir, "model.safetensors")
                let tensors = SafeTensors.Load path
                // As older transformers versions wrote them: the RoPE buffer per layer and the tied head.
                tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] <- torch.ones([| 8L |])
                tensors["model.layers.1.self_attn.rotary_emb.inv_freq"] <- torch.ones([| 8L |])
                tensors["lm_head.weight"] <- tensors["model.embed_tokens.weight"].clone()
                SafeTensors.Save(path, tensors)
                for t in tensors.Values do t.Dispose()
                let b = ModelFolder.Load dir
                bitEqual a b
                dispose a; dispose b)
        }

        test "a checkpoint of another shape fails with the shape mismatches" {
            withTemp (fun dir ->
                let gqa = create "llama-tiny-gqa" 6L
                HfWeights.Save(gqa, dir)
                let plain = create "llama-tiny" 7L
                let ex =
                    try HfWeights.LoadInto(plain, dir) |> ignore; failwith "expected a mismatch"
                    with :? CheckpointMismatchException as ex -> ex
                Expect.isNonEmpty ex.ShapeMismatches "k/v projections differ in shape"
                Expect.exists ex.ShapeMismatches (fun s -> s.StartsWith "model.layers.0.self_attn.k_proj.weight") "k_proj listed"
                dispose gqa; dispose plain)
        }

        test "a folder without weights or config gives an error naming the folder and the files looked for" {
            withTemp (fun dir ->
                let e1 = try ModelFolder.Load dir |> ignore; "" with :? FileNotFoundException as e -> e.Message
                Expect.stringContains e1 "config.json" "names config.json"
                File.WriteAllText(Path.Combine(dir, "config.json"), (LlamaConfig.Preset "llama-tiny").ToJson().ToJsonString())
                let e2 = try ModelFolder.Load dir |> ignore; "" with :? FileNotFoundException as e -> e.Message
                Expect.stringContains e2 dir "names the folder"
                Expect.stringContains e2 "model.safetensors" "names the weights file"
                File.WriteAllText(Path.Combine(dir, "model.safetensors"), "garbage")
                let e3 = try ModelFolder.Load dir |> ignore; "" with :? InvalidDataException as e -> e.Message
                Expect.stringContains e3 "model.safetensors" "names the corrupt file")
        }

        test "checkpoint folders are written atomically, with a manifest whose hashes are verified" {
            withTemp (fun root ->
                let dir = Path.Combine(root, "step-10")
                let a = create "llama-tiny" 8L
                let extra = JsonObject()
                extra["step"] <- JsonValue.Create 10
                let m = Checkpoint.Save(a, dir, extra)
                Expect.containsAll m.Files.Keys [ "config.json"; "model.safetensors" ] "manifest lists the files"
                let b = create "llama-tiny" 9L
                let m2 = Checkpoint.Load(b, dir)
                Expect.equal (m2.Extra["step"].GetValue<int>()) 10 "extra data round trips"
                bitEqual a b
                // A failure while writing a new checkpoint over it leaves the old one complete.
                let failing () =
                    AtomicFile.WriteFolder(dir, fun tmp ->
                        File.WriteAllText(Path.Combine(tmp, "model.safetensors"), "half")
                        failwith "simulated crash")
                Expect.throws failing "the write fails"
                Checkpoint.ReadManifest dir |> ignore
                Expect.equal (Directory.GetFileSystemEntries root |> Array.map Path.GetFileName) [| "step-10" |] "no temporary folders left"
                // Corruption is detected through the manifest.
                let weights = Path.Combine(dir, "model.safetensors")
                let bytes = File.ReadAllBytes weights
                bytes[bytes.Length - 1] <- bytes[bytes.Length - 1] ^^^ 0xFFuy
                File.WriteAllBytes(weights, bytes)
                let e = try Checkpoint.ReadManifest dir |> ignore; "" with :? InvalidDataException as e -> e.Message
                Expect.stringContains e "model.safetensors" "names the corrupted file"
                dispose a; dispose b)
        }
    ]
