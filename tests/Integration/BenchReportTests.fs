/// bench.json and the bench tables with and without PyTorch's fusion and decoding figures, from
/// hand-made results (no measuring, no Python run).
module BenchReportTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Klf.Pipelines

let private fusionRow : FusionBench =
    { Rule = "ties"; Units = "neuron-16"; Base = "previous"; UnitCount = 199; Slices = 591; Bytes = 21046272L
      FuseMs = 40.0; CopyMs = 1.0; BytesPerSecond = 5e8; CopyBytesPerSecond = 2e10; Ratio = 0.025
      TorchFuseMs = nan; TorchRatio = nan; KlfOverTorch = nan }

let private generationRow : GenerationBench =
    { Model = "llama-5m"; Batch = 8; Prompt = 32; NewTokens = 64; CacheMs = 500.0; NoCacheMs = 4000.0
      CacheTokensPerSecond = 1024.0; NoCacheTokensPerSecond = 128.0; Speedup = 8.0
      TorchCacheMs = nan; TorchNoCacheMs = nan; TorchCacheTokensPerSecond = nan; TorchNoCacheTokensPerSecond = nan
      KlfOverTorchCache = nan; KlfOverTorchNoCache = nan }

let private results (fusion: FusionBench) (generation: GenerationBench) (note: string) : BenchResults =
    { Machine = { Cpu = "test"; Cores = 2; Threads = 2; Os = "test"; Runtime = "test"; TorchSharp = "0" }
      Matmul = None; Train = []; Importance = []; Fusion = [ fusion ]; Generation = [ generation ]; Memory = []; LowPrecision = []
      PyTorch = None; TorchFusion = Some note; TorchGeneration = Some note; Seconds = 1.0 }

let private skipped = "skipped: no Python with torch (python3); Debian's python3-torch provides one"

[<Tests>]
let tests =
    testList "bench report" [
        test "without PyTorch every fusion and decoding row has its torch keys as null, and the pytorch object says why" {
            let json = BenchReport.toJson (results fusionRow generationRow skipped)
            let fusion = (json["fusion"].AsArray()[0]).AsObject()
            for key in [ "torch_fuse_ms"; "torch_ratio"; "klf_over_torch" ] do
                Expect.isTrue (fusion.ContainsKey key) $"fusion has {key}"
                Expect.isNull fusion[key] $"fusion {key} is null"
            let generation = (json["generation"].AsArray()[0]).AsObject()
            for key in [ "torch_cache_ms"; "torch_no_cache_ms"; "torch_cache_tokens_per_s"; "torch_no_cache_tokens_per_s"; "klf_over_torch_cache"; "klf_over_torch_no_cache" ] do
                Expect.isTrue (generation.ContainsKey key) $"generation has {key}"
                Expect.isNull generation[key] $"generation {key} is null"
            let pytorch = json["pytorch"]
            Expect.equal (pytorch["fusion"].GetValue<string>()) skipped "the fusion note"
            Expect.equal (pytorch["generation"].GetValue<string>()) skipped "the generation note"
            Expect.isFalse (pytorch["available"].GetValue<bool>()) "no step comparison ran"
            Expect.isNull pytorch["torch_step_ms"] "no step time"
            let table = BenchReport.table (results fusionRow generationRow skipped)
            Expect.stringContains table $"PyTorch: {skipped}" "the table says why the PyTorch columns are empty"
            let row = table.Split('\n') |> Array.find (fun l -> l.StartsWith "ties")
            let cells = row.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            Expect.sequenceEqual cells[cells.Length - 3 ..] [| "-"; "-"; "-" |] $"the fusion row's PyTorch cells are '-' ({row})"
        }

        test "with PyTorch the rows carry its figures and Klf ÷ PyTorch under the same keys" {
            let fusion = { fusionRow with TorchFuseMs = 200.0; TorchRatio = 0.005; KlfOverTorch = 0.2 }
            let generation =
                { generationRow with
                    TorchCacheMs = 1000.0; TorchNoCacheMs = 8000.0; TorchCacheTokensPerSecond = 512.0; TorchNoCacheTokensPerSecond = 64.0
                    KlfOverTorchCache = 0.5; KlfOverTorchNoCache = 0.5 }
            let json = BenchReport.toJson (results fusion generation "ran: PyTorch 1.13")
            let fusionJson, generationJson = json["fusion"].AsArray()[0], json["generation"].AsArray()[0]
            Expect.equal (fusionJson["klf_over_torch"].GetValue<float>()) 0.2 "Klf ÷ PyTorch, fusion"
            Expect.equal (generationJson["torch_cache_tokens_per_s"].GetValue<float>()) 512.0 "PyTorch's tokens/s"
            Expect.equal (generationJson["klf_over_torch_no_cache"].GetValue<float>()) 0.5 "Klf ÷ PyTorch, no cache"
            let table = BenchReport.table (results fusion generation "ran: PyTorch 1.13")
            Expect.stringContains table "200.00" "PyTorch's fusion ms in the table"
            Expect.stringContains table "PyTorch: ran: PyTorch 1.13" "the note under the tables"
        }

        test "a missing script leaves the fusion and decoding rows as they were, with a skipped note" {
            let script = Path.Combine(Path.GetTempPath(), $"klf-no-such-{Guid.NewGuid():N}.py")
            let config = Klf.Models.Llama.LlamaConfig.Preset "llama-5m"
            let rows, note = BenchPyTorchFusion.compare script "llama-5m" config 1 1 [ fusionRow ]
            Expect.isTrue (obj.ReferenceEquals(List.exactlyOne rows, fusionRow)) "fusion rows unchanged"
            Expect.stringStarts note "skipped:" "fusion note"
            let rows, note = BenchPyTorchGeneration.compare script "llama-5m" config 1 1 [ generationRow ]
            Expect.isTrue (obj.ReferenceEquals(List.exactlyOne rows, generationRow)) "decoding rows unchanged"
            Expect.stringStarts note "skipped:" "decoding note"
        }
    ]
