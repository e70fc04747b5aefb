// Checkpoint fusion beyond memory: generates two sharded LLaMA-family checkpoints larger than a third
// of this machine's memory (2.2B parameters, 8.8 GB each in float32, tensor by tensor), random
// importance profiles for their whole-tensor units, then runs `klf fuse` on them under
// /usr/bin/time and reports its peak resident memory against the largest tensor, and its throughput.
//
//   scripts/pack.sh && dotnet fsi scripts/bench-large-fuse.fsx [--dir DIR] [--keep] [--drop-caches]
//
// The same run first times the machine's floor for the same bytes: reading both inputs and writing
// one output's worth to disk (flushed), and reports the fusion's time ÷ that floor. --drop-caches
// (root only) empties the page cache before the floor and before the fusion, so both start cold.
//
// DIR (default: a temporary folder) needs about 27 GB free: the two inputs and the fused output.
// The klf program is the repository's build (./klf builds it). Not part of the test suite.
#r "nuget: Klf.Core"

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Klf.Models
open Klf.Checkpoints
open Klf.SkillUnits
open Klf.Importance

Klf.Native.TorchNative.EnsureLoaded()
let args = fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray
let rec option name dflt = function
    | n :: v :: _ when n = name -> v
    | _ :: rest -> option name dflt rest
    | [] -> dflt
let keep = List.contains "--keep" args
let repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))
let dir = match option "--dir" "" args with "" -> Directory.CreateTempSubdirectory("klf-large-fuse-").FullName | d -> Path.GetFullPath d
Directory.CreateDirectory dir |> ignore

// hidden 2048, 40 layers, MLP 5632, vocabulary 32000, untied: 2.19B parameters, 8.8 GB in float32.
let config =
    JsonNode.Parse("""{ "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 2048,
      "intermediate_size": 5632, "num_hidden_layers": 40, "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 128,
      "rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048, "tie_word_embeddings": false,
      "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32" }""").AsObject()
let shard = 2_000_000_000L
let clock = Stopwatch.StartNew()
for name, seed in [ "A", 1L; "B", 2L ] do
    let target = Path.Combine(dir, name)
    if not (File.Exists(Path.Combine(target, HfWeights.IndexFile))) then
        let n = RandomCheckpoint.Write(config, "bench config", target, seed, Nullable shard)
        printfn "generated %s: %d parameters (%.0f s)" target n clock.Elapsed.TotalSeconds

// Random importance profiles for the whole-tensor units of this model (what `klf train --importance` writes).
let profiles =
    use skeleton = LanguageModels.FromConfig(config, "bench config", torch.META)
    let map = FullFineTuningPartitioner().Partition skeleton
    let rng = Random(3)
    [ for name in [ "A"; "B" ] ->
        let path = Path.Combine(dir, $"importance-{name}.json")
        ImportanceProfile.FromMap(map, ImportanceMath.MinMax(Array.init map.Count (fun _ -> rng.NextDouble())), [| TaskImportance(name, Array.init map.Count (fun _ -> rng.NextDouble())) |]).Save path
        path ]
let largest =
    Directory.GetFiles(Path.Combine(dir, "B"), "*.safetensors")
    |> Array.collect (fun f -> let struct (tensors, _) = Klf.Formats.SafeTensors.ReadHeader(f) in tensors |> Seq.map (fun t -> t.End - t.Begin) |> Array.ofSeq)
    |> Array.max
let inputBytes = Directory.GetFiles(Path.Combine(dir, "B"), "*.safetensors") |> Array.sumBy (fun f -> FileInfo(f).Length)

let dropCaches () =
    if List.contains "--drop-caches" args then
        use sync = Process.Start("sync") in sync.WaitForExit()
        File.WriteAllText("/proc/sys/vm/drop_caches", "3")

// The floor: every input byte read and one output's bytes written and flushed, in 8 MiB blocks.
let floorSeconds =
    dropCaches ()
    let clock = Stopwatch.StartNew()
    let block = Array.zeroCreate<byte> (8 <<< 20)
    let target = Path.Combine(dir, "floor.bin")
    do
        use w = new FileStream(target, FileMode.Create, FileAccess.Write, FileShare.None, 1)
        for name in [ "A"; "B" ] do
            for f in Directory.GetFiles(Path.Combine(dir, name), "*.safetensors") |> Array.sort do
                use r = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan)
                let mutable n = r.Read(block, 0, block.Length)
                while n > 0 do
                    if name = "B" then w.Write(block, 0, n)
                    n <- r.Read(block, 0, block.Length)
        w.Flush(true)
    File.Delete target
    clock.Elapsed.TotalSeconds

let out = Path.Combine(dir, "F")
if Directory.Exists out then Directory.Delete(out, true)
dropCaches ()
let klf = Path.Combine(repo, "src", "Klf.Scripts", "bin", "Release", "net10.0", "klf.dll")
if not (File.Exists klf) then failwithf "%s not found: build klf first (./klf --help builds it)" klf
let psi = ProcessStartInfo("/usr/bin/time", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
for a in [ "-v"; "dotnet"; klf; "fuse"; "--previous"; Path.Combine(dir, "A"); "--current"; Path.Combine(dir, "B")
           "--previous-importance"; profiles[0]; "--current-importance"; profiles[1]; "--out"; out ] do psi.ArgumentList.Add a
let run = Stopwatch.StartNew()
let p = Process.Start psi
let stdout, stderr = p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync()
p.WaitForExit()
let seconds = run.Elapsed.TotalSeconds
if p.ExitCode <> 0 then failwithf "klf fuse failed (%d):\n%s\n%s" p.ExitCode stdout.Result stderr.Result
printfn "%s" stdout.Result
let field (name: string) =
    // `/usr/bin/time -v` lines read "Name (unit): value"; the elapsed value itself holds colons (m:ss).
    stderr.Result.Split('\n') |> Array.find (fun l -> l.Trim().StartsWith name) |> fun l -> l.Substring(l.IndexOf("): ") + 3).Trim()
let peakKb = int64 (field "Maximum resident set size")
let gib (b: int64) = float b / float (1L <<< 30)
printfn "inputs      2 × %.2f GiB in %d shards each; largest tensor %.0f MiB; machine memory %.1f GiB"
    (gib inputBytes) (Directory.GetFiles(Path.Combine(dir, "B"), "*.safetensors").Length) (float largest / 1048576.0)
    (gib (GC.GetGCMemoryInfo().TotalAvailableMemoryBytes))
printfn "klf fuse    %.0f s wall (%s elapsed by time); peak resident %.2f GiB = %.1f × the largest tensor"
    seconds (field "Elapsed (wall clock) time") (float peakKb / 1048576.0) (float (peakKb * 1024L) / float largest)
printfn "throughput  %.2f GB/s of fused parameters (%.2f GB/s read and written: two inputs, one output)"
    (float inputBytes / seconds / 1e9) (3.0 * float inputBytes / seconds / 1e9)
printfn "floor       %.1f s to read both inputs and write one output's bytes (flushed); klf fuse ÷ floor = %.2f"
    floorSeconds (seconds / floorSeconds)
if not keep then Directory.Delete(dir, true)
