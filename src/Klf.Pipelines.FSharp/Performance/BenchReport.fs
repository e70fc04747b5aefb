namespace Klf.Pipelines

open System
open System.Globalization
open System.Text
open System.Text.Json
open System.Text.Json.Nodes

/// A benchmark run as `bench.json` (the figures, stable keys) and as a text table.
[<RequireQualifiedAccess>]
module BenchReport =
    let private num (x: float) : JsonNode = if Double.IsFinite x then JsonValue.Create x else null
    let private obj (pairs: (string * JsonNode) list) = JsonObject(pairs |> List.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v)))
    let private arr (xs: JsonNode seq) = JsonArray(Array.ofSeq xs) :> JsonNode
    let private str (s: string) : JsonNode = JsonValue.Create s
    let private int64n (x: int64) : JsonNode = JsonValue.Create x
    let private intn (x: int) : JsonNode = JsonValue.Create x

    /// The results as the JSON object of `bench.json`.
    let toJson (r: BenchResults) : JsonObject =
        let m = r.Machine
        obj [ "format", str "klf-bench/1"
              "machine", obj [ "cpu", str m.Cpu; "cores", intn m.Cores; "threads", intn m.Threads; "os", str m.Os; "runtime", str m.Runtime; "torchsharp", str m.TorchSharp ]
              "matmul_gflops", (match r.Matmul with Some p -> obj [ "size", intn p.Size; "gflops", num p.Gflops ] | None -> null)
              "train", arr [ for t in r.Train ->
                              obj [ "model", str t.Model; "parameters", int64n t.Parameters; "trainable", int64n t.Trainable
                                    "batch", intn t.Batch; "seq_len", intn t.SeqLen; "labels", intn t.Labels; "step_ms", num t.StepMs
                                    "tokens_per_s", num t.TokensPerSecond; "flops_per_step", num t.FlopsPerStep; "gflops", num t.Gflops; "mfu", num t.Mfu ] ]
              "importance_overhead", arr [ for i in r.Importance ->
                                            obj [ "training", str i.Training; "plain_ms", num i.PlainMs; "tracked_ms", num i.TrackedMs
                                                  "ratio", num i.Ratio; "ratios", arr [ for r in i.Ratios -> num r ]; "hook_ms", num i.HookMs ] ]
              "fusion", arr [ for f in r.Fusion ->
                               obj [ "rule", str f.Rule; "units", str f.Units; "base", str f.Base; "unit_count", intn f.UnitCount; "slices", intn f.Slices
                                     "bytes", int64n f.Bytes; "fuse_ms", num f.FuseMs; "copy_ms", num f.CopyMs
                                     "bytes_per_s", num f.BytesPerSecond; "copy_bytes_per_s", num f.CopyBytesPerSecond; "ratio", num f.Ratio
                                     "torch_fuse_ms", num f.TorchFuseMs; "torch_ratio", num f.TorchRatio; "klf_over_torch", num f.KlfOverTorch ] ]
              "generation", arr [ for g in r.Generation ->
                                   obj [ "model", str g.Model; "batch", intn g.Batch; "prompt", intn g.Prompt; "new_tokens", intn g.NewTokens
                                         "cache_ms", num g.CacheMs; "no_cache_ms", num g.NoCacheMs; "cache_tokens_per_s", num g.CacheTokensPerSecond
                                         "no_cache_tokens_per_s", num g.NoCacheTokensPerSecond; "speedup", num g.Speedup
                                         "torch_cache_ms", num g.TorchCacheMs; "torch_no_cache_ms", num g.TorchNoCacheMs
                                         "torch_cache_tokens_per_s", num g.TorchCacheTokensPerSecond; "torch_no_cache_tokens_per_s", num g.TorchNoCacheTokensPerSecond
                                         "klf_over_torch_cache", num g.KlfOverTorchCache; "klf_over_torch_no_cache", num g.KlfOverTorchNoCache ] ]
              "memory", arr [ for mem in r.Memory ->
                               obj [ "strategy", str mem.Strategy; "model", str mem.Model
                                     "tasks", arr [ for t in mem.Tasks -> str t ]
                                     "peak_bytes", arr [ for b in mem.PeakBytes -> int64n b ]
                                     "resident_bytes", arr [ for b in mem.ResidentBytes -> int64n b ] ] ]
              "low_precision_base", arr [ for l in r.LowPrecision ->
                                           obj [ "model", str l.Model; "base", str l.Base; "frozen_bytes", int64n l.FrozenBytes
                                                 "trainable_bytes", int64n l.TrainableBytes; "peak_bytes", int64n l.PeakBytes
                                                 "step_ms", num l.StepMs; "loss", num l.Loss ] ]
              "pytorch", (match r.PyTorch, r.TorchFusion, r.TorchGeneration with
                          | None, None, None -> null
                          | step, fusion, generation ->
                              // The step keys stay where they were; the fusion and generation notes join them.
                              let p = step |> Option.defaultWith (fun () -> BenchPyTorch.notRun "")
                              let note (n: string option) : JsonNode = match n with Some m -> str m | None -> null
                              obj [ "available", JsonValue.Create p.Available; "message", str p.Message; "python", str p.Python
                                    "torch", str p.TorchVersion; "blas", str p.Blas; "threads", intn p.Threads; "model", str p.Model
                                    "torch_step_ms", num p.TorchStepMs; "klf_step_ms", num p.KlfStepMs; "klf_over_torch", num p.Ratio
                                    "fusion", note fusion; "generation", note generation ])
              "seconds", num r.Seconds ]

    /// `bench.json` text (indented).
    let json (r: BenchResults) : string = (toJson r).ToJsonString(JsonSerializerOptions(WriteIndented = true))

    let private f (digits: int) (x: float) = if Double.IsFinite x then x.ToString("F" + string digits, CultureInfo.InvariantCulture) else "-"
    let private mb (b: int64) = (float b / 1048576.0).ToString("F0", CultureInfo.InvariantCulture)

    /// The results as text tables, one per section that ran.
    let table (r: BenchResults) : string =
        let sb = StringBuilder()
        let line (s: string) = sb.AppendLine s |> ignore
        // A table with PyTorch columns, then what they hold or why they are empty, then the blank line the other tables end with.
        let withNote (table: string) (n: string option) =
            sb.Append table |> ignore
            n |> Option.iter (fun m -> line $"PyTorch: {m}")
            line ""
        let m = r.Machine
        line $"machine: {m.Cpu}, {m.Cores} cores, {m.Threads} torch threads, {m.Os}, {m.Runtime}, TorchSharp {m.TorchSharp}"
        match r.Matmul with
        | Some p -> line $"matmul peak: {f 1 p.Gflops} GFLOP/s fp32 (square {p.Size})"
        | None -> ()
        if not r.Train.IsEmpty then
            line ""
            line "training step (forward, backward, clipping, AdamW; fp32)"
            line (TextTable.render [ "model"; "params"; "batch x len"; "step ms"; "tokens/s"; "GFLOP/s"; "MFU" ]
                    [ for t in r.Train -> [ t.Model; string t.Parameters; $"{t.Batch} x {t.SeqLen}"; f 1 t.StepMs; f 0 t.TokensPerSecond; f 1 t.Gflops; f 2 t.Mfu ] ])
        if not r.Importance.IsEmpty then
            line "importance tracking (step with the tracker ÷ without; ratio: median of the repeats)"
            line (TextTable.render [ "training"; "plain ms"; "tracked ms"; "ratio"; "repeats"; "hook ms" ]
                    [ for i in r.Importance -> [ i.Training; f 1 i.PlainMs; f 1 i.TrackedMs; f 3 i.Ratio; String.Join(" ", i.Ratios |> List.map (f 3)); f 2 i.HookMs ] ])
        if not r.Fusion.IsEmpty then
            line "fusion (bytes of fused parameters per second ÷ copy_ of the same tensors; Klf÷PyTorch = Klf's time ÷ plain PyTorch's for the same fusion)"
            withNote (TextTable.render [ "rule"; "units"; "base"; "slices"; "MB"; "fuse ms"; "copy ms"; "GB/s"; "copy GB/s"; "ratio"; "torch ms"; "torch ratio"; "Klf÷PyTorch" ]
                    [ for x in r.Fusion ->
                        [ x.Rule; x.Units; x.Base; string x.Slices; mb x.Bytes; f 2 x.FuseMs; f 2 x.CopyMs; f 2 (x.BytesPerSecond / 1e9); f 2 (x.CopyBytesPerSecond / 1e9); f 3 x.Ratio
                          f 2 x.TorchFuseMs; f 3 x.TorchRatio; f 3 x.KlfOverTorch ] ])
                r.TorchFusion
        if not r.Generation.IsEmpty then
            line "greedy decoding (new tokens per second; speedup = time without the cache ÷ with it; Klf÷PyTorch = Klf's time ÷ PyTorch's)"
            withNote (TextTable.render [ "model"; "batch"; "prompt"; "new"; "cache tok/s"; "no-cache tok/s"; "speedup"; "torch cache tok/s"; "torch no-cache tok/s"; "Klf÷PyTorch cache"; "Klf÷PyTorch no-cache" ]
                    [ for g in r.Generation ->
                        [ g.Model; string g.Batch; string g.Prompt; string g.NewTokens; f 0 g.CacheTokensPerSecond; f 0 g.NoCacheTokensPerSecond; f 1 g.Speedup
                          f 0 g.TorchCacheTokensPerSecond; f 0 g.TorchNoCacheTokensPerSecond; f 2 g.KlfOverTorchCache; f 2 g.KlfOverTorchNoCache ] ])
                r.TorchGeneration
        for mem in r.Memory do
            line $"memory, {mem.Strategy} on {mem.Model} (MB; peak during each task, resident after it, heap trimmed)"
            line (TextTable.render ("" :: [ for i in 1 .. mem.Tasks.Length -> $"task {i}" ])
                    [ "peak" :: [ for b in mem.PeakBytes -> mb b ]; "resident" :: [ for b in mem.ResidentBytes -> mb b ] ])
        if not r.LowPrecision.IsEmpty then
            line "LoRA r 8 over a frozen base in float32 or bfloat16 (MB; peak resident while training)"
            line (TextTable.render [ "model"; "base"; "frozen MB"; "adapter MB"; "peak MB"; "step ms"; "loss" ]
                    [ for l in r.LowPrecision -> [ l.Model; l.Base; mb l.FrozenBytes; f 1 (float l.TrainableBytes / 1048576.0); mb l.PeakBytes; f 1 l.StepMs; f 3 l.Loss ] ])
        match r.PyTorch with
        | Some p when p.Available ->
            line $"PyTorch {p.TorchVersion} ({p.Python}, {p.Threads} threads, BLAS {p.Blas}), {p.Model}: step {f 1 p.TorchStepMs} ms; Klf {f 1 p.KlfStepMs} ms; Klf ÷ PyTorch {f 2 p.Ratio}"
        | Some p -> line $"PyTorch: {p.Message}"
        | None -> ()
        line $"total {f 0 r.Seconds} s"
        sb.ToString()
