/// Helpers shared by the LLaMA test files: seeded presets, id tensors, comparisons, a real config.
module LlamaTestKit

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Klf.Models
open Klf.Models.Llama

type Tensor = torch.Tensor

let seed = 20261126L

/// "name [d0, d1]" lines of every parameter of a module, in registration order, then "total N", newline-terminated.
let shapeDump (m: torch.nn.Module) =
    let lines = m.named_parameters() |> Seq.map (fun struct (n, p) -> sprintf "%s [%s]" n (String.Join(", ", p.shape))) |> String.concat "\n"
    sprintf "%s\ntotal %d\n" lines (m.parameters() |> Seq.sumBy (fun p -> p.numel()))

/// Compares a module's shape dump with tests/Integration/approved/<name>.txt; on a difference writes
/// <name>.received.txt beside it and fails.
let approveShapes (name: string) (m: torch.nn.Module) =
    let dir = Path.Combine(__SOURCE_DIRECTORY__, "approved")
    let dump = shapeDump m
    let approved = Path.Combine(dir, $"{name}.txt")
    let received = Path.Combine(dir, $"{name}.received.txt")
    let approvedText = if File.Exists approved then File.ReadAllText approved else ""
    if approvedText <> dump then
        File.WriteAllText(received, dump)
        failtestf "shape snapshot of %s differs from %s (see %s)" name approved received
    elif File.Exists received then File.Delete received

/// A freshly initialised model of a preset, the global generator seeded first.
let create (preset: string) =
    torch.manual_seed seed |> ignore
    new LlamaForCausalLM(LlamaConfig.Preset preset)

let ids (rows: int64[][]) : Tensor =
    let t = rows.[0].Length
    torch.tensor(Array.concat rows).view(int64 rows.Length, int64 t)

/// A copy of generation options with some fields changed (F# cannot use C#'s `with`).
let withOpts (o: GenerationOptions) (cache: bool option) (eos: int[] option) (batch: int option) =
    GenerationOptions(o.MaxNewTokens, defaultArg eos o.EosTokenIds, defaultArg cache o.UseCache, defaultArg batch o.BatchSize)

let randomPrompt (rng: Random) len = Array.init len (fun _ -> rng.Next(3, 256))

let maxAbsDiff (a: Tensor) (b: Tensor) =
    use d = (a.to_type(torch.ScalarType.Float32) - b.to_type(torch.ScalarType.Float32)).abs().max()
    d.item<float32>() |> float

/// A Llama 3.2 1B style config.json (as HF writes it).
let sampleConfig = """{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 2048,
  "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0", "use_cache": true, "vocab_size": 128256
}"""
