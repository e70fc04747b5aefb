/// Laws of skill-unit partitions and unit scores on random tiny LLaMA / T5 configurations with
/// random trainable sets (full, partly frozen, LoRA of random rank and targets, two adapters),
/// each checked against naive float[] / int[] references.
module SkillUnitLaws

open System
open System.Collections.Generic
open System.Text.Json.Nodes
open Expecto
open FsCheck.FSharp
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.SkillUnits

let private config = PropertyConfig.config 100

/// A random tiny model and trainable set, fully determined by `key` (printable, replayable).
type Spec =
    { Key: int
      Family: string
      Json: string
      Mode: string
      LoraR: int
      Targets: string[] }

let private pick (rng: Random) (xs: 'a[]) = xs.[rng.Next xs.Length]

/// Trainable sets; base-trainable ones twice as likely (they are what the head partitioner splits).
let private modes = [| "full"; "full"; "partial"; "partial"; "lora"; "lora2"; "lora2both"; "loraA"; "lora+base"; "lora+base" |]

let spec (key: int) : Spec =
    let rng = Random key
    if rng.Next 5 < 3 then
        let heads = pick rng [| 1; 2; 4; 6 |]
        let divisors = [| 1; 2; 3; 4; 6 |] |> Array.filter (fun k -> heads % k = 0)
        // grouped-query attention (kv < heads) two times in three when possible
        let kv = if heads > 1 && rng.Next 3 > 0 then pick rng (divisors |> Array.filter ((<>) heads)) else heads
        let j = Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", 16).ToJson()
        j.["hidden_size"] <- pick rng [| 8; 12; 16 |]
        j.["intermediate_size"] <- 16
        j.["num_hidden_layers"] <- rng.Next(1, 3)
        j.["num_attention_heads"] <- heads
        j.["num_key_value_heads"] <- kv
        j.["head_dim"] <- pick rng [| 2; 4 |]
        j.["tie_word_embeddings"] <- (rng.Next 2 = 0)
        j.["attention_bias"] <- (rng.Next 3 = 0)
        j.["mlp_bias"] <- (rng.Next 3 = 0)
        let targets = [| "q_proj"; "k_proj"; "v_proj"; "o_proj"; "gate_proj"; "up_proj"; "down_proj" |]
        { Key = key; Family = "llama"; Json = j.ToJsonString(); Mode = pick rng modes
          LoraR = rng.Next(1, 5); Targets = Array.append [| "q_proj" |] (targets |> Array.filter (fun _ -> rng.Next 3 = 0)) }
    else
        let gated = rng.Next 2 = 0
        let j = Klf.Models.T5.T5Config.Preset((if gated then "t5-tiny-gated" else "t5-tiny"), 16).ToJson()
        j.["d_model"] <- pick rng [| 8; 16 |]
        j.["d_kv"] <- pick rng [| 2; 4 |]
        j.["d_ff"] <- 16
        j.["num_heads"] <- rng.Next(1, 4)
        j.["num_layers"] <- rng.Next(1, 3)
        j.["num_decoder_layers"] <- rng.Next(1, 3)
        j.["relative_attention_num_buckets"] <- 4
        let ff = if gated then [| "wi_0"; "wi_1"; "wo" |] else [| "wi"; "wo" |]
        let targets = Array.append [| "q"; "k"; "v"; "o" |] ff
        { Key = key; Family = "t5"; Json = j.ToJsonString(); Mode = pick rng modes
          LoraR = rng.Next(1, 5); Targets = Array.append [| "v" |] (targets |> Array.filter (fun _ -> rng.Next 3 = 0)) }

/// Builds the model of a spec (weights from `weightSeed`) and sets its trainable parameters.
let build (s: Spec) (weightSeed: int64) : ILanguageModel =
    torch.manual_seed weightSeed |> ignore
    let m = LanguageModels.FromConfig(JsonNode.Parse(s.Json).AsObject(), $"spec {s.Key}")
    let rng = Random(s.Key + 1)
    let lora name = LoraConfig(R = s.LoraR, Alpha = 2.0 * float s.LoraR, Dropout = 0.0, TargetModules = s.Targets, AdapterName = name)
    match s.Mode with
    | "partial" ->
        for struct (_, p) in m.Module.named_parameters() do
            if rng.Next 3 = 0 then p.requires_grad_(false) |> ignore
        if not (m.Module.named_parameters() |> Seq.exists (fun struct (_, p) -> p.requires_grad)) then
            (m.Module.named_parameters() |> Seq.head |> fun struct (_, p) -> p).requires_grad_(true) |> ignore
    | "lora" -> Lora.Apply(m.Module, lora "default") |> ignore
    | "lora2" ->
        Lora.Apply(m.Module, lora "old") |> ignore
        let h = Lora.Apply(m.Module, lora "default")
        h.SetTrainableAdapters [| "default" |]
    | "lora2both" ->
        Lora.Apply(m.Module, lora "old") |> ignore
        let h = Lora.Apply(m.Module, LoraConfig(R = s.LoraR + 1, Alpha = 4.0, Dropout = 0.0, TargetModules = [| s.Targets.[0] |]))
        h.SetTrainableAdapters [| "old"; "default" |]
    | "loraA" -> // only the A matrices train: rank-1 units are single rows
        Lora.Apply(m.Module, lora "default") |> ignore
        for struct (n, p) in m.Module.named_parameters() do
            if n.Contains ".lora_B." then p.requires_grad_(false) |> ignore
    | "lora+base" ->
        let h = Lora.Apply(m.Module, lora "default")
        for struct (n, p) in m.Module.named_parameters() do
            if not (Lora.IsLoraPath n) && rng.Next 4 = 0 then p.requires_grad_(true) |> ignore
        ignore h
    | _ -> ()
    m

let hasLora (m: ILanguageModel) =
    m.Module.named_parameters() |> Seq.exists (fun struct (n, p) -> p.requires_grad && Lora.IsLoraPath n)

/// The partitioners that apply to a model (LoRA ones only with trainable LoRA matrices).
let partitioners (m: ILanguageModel) =
    // neuron-3: blocks whose last one is shorter when the width is not a multiple of 3.
    Seq.append SkillUnitPartitioners.Names [ "neuron-3" ]
    |> Seq.filter (fun n -> hasLora m || not (n.StartsWith "lora"))
    |> Seq.map SkillUnitPartitioners.ByName
    |> List.ofSeq

let private numel (shape: int64[]) = shape |> Array.fold (*) 1L

/// Naive: does flat (row-major) element i of a tensor of `shape` lie in `slice`?
let inSlice (shape: int64[]) (slice: UnitSlice) (i: int64) =
    if slice.IsWhole then true
    else
        let stride = shape.[slice.Dim + 1 ..] |> Array.fold (*) 1L
        let coord = (i / stride) % shape.[slice.Dim]
        coord >= slice.Start && coord < slice.Start + slice.Length

/// Naive coverage: Ok () when every trainable element is in exactly one unit, no frozen element in
/// any, and every unit's ElementCount is its number of elements; else Error with the first problem.
let coverage (m: ILanguageModel) (map: SkillUnitMap) =
    let ps = Dictionary<string, int64[] * bool>()
    for struct (n, p) in m.Module.named_parameters() do ps.[n] <- (p.shape, p.requires_grad)
    let counts = Dictionary<string, int[]>()
    for KeyValue (n, (shape, _)) in ps do counts.[n] <- Array.zeroCreate (int (numel shape))
    let errors = ResizeArray<string>()
    for u in map.Units do
        let mutable n = 0L
        for s in u.Slices do
            match ps.TryGetValue s.Parameter with
            | false, _ -> errors.Add $"{u.Id}: unknown parameter {s.Parameter}"
            | true, (shape, _) ->
                let c = counts.[s.Parameter]
                for i in 0 .. c.Length - 1 do
                    if inSlice shape s (int64 i) then
                        c.[i] <- c.[i] + 1
                        n <- n + 1L
        if n <> u.ElementCount then errors.Add $"{u.Id}: ElementCount {u.ElementCount}, elements {n}"
    for KeyValue (n, (_, trainable)) in ps do
        let want = if trainable then 1 else 0
        match counts.[n] |> Array.tryFindIndex ((<>) want) with
        | Some i -> errors.Add $"{n}[{i}] covered {counts.[n].[i]} times (trainable {trainable})"
        | None -> ()
    if errors.Count = 0 then Ok () else Error (String.Join("; ", errors |> Seq.truncate 5))

/// Random non-negative element scores (float32, parameter shapes) for every trainable parameter,
/// as tensors and as the naive float[] they were made from.
let randomScores (m: ILanguageModel) (key: int) =
    let rng = Random(key * 7 + 3)
    [ for struct (n, p) in m.Module.named_parameters() do
        if p.requires_grad then
            let data = Array.init (int (numel p.shape)) (fun _ -> float32 (rng.NextDouble()) * (if rng.Next 10 = 0 then 100.0f else 1.0f))
            yield n, data, torch.tensor(data, ReadOnlySpan<int64>(p.shape)) ]

/// Naive unit score: mean over the unit's elements, or for a rank-1 unit (A row, B column) the mean
/// over the materialised outer product B[:,r]·A[r,:] of scores.
let naiveScore (shapes: IDictionary<string, int64[]>) (data: IDictionary<string, float32[]>) (u: SkillUnit) =
    let elems (s: UnitSlice) =
        let shape = shapes.[s.Parameter]
        data.[s.Parameter] |> Array.indexed |> Array.filter (fun (i, _) -> inSlice shape s (int64 i)) |> Array.map (snd >> float)
    match u.Aggregation, u.Slices |> List.ofSeq with
    | UnitAggregation.Mean, slices -> slices |> Seq.collect elems |> Seq.average
    | UnitAggregation.ProductOfSliceMeans, [ a; b ] ->
        let av, bv = elems a, elems b
        let outer = Array.init (bv.Length * av.Length) (fun k -> bv.[k / av.Length] * av.[k % av.Length])
        Array.average outer
    | UnitAggregation.ProductOfSliceMeans, slices -> slices |> Seq.map (elems >> Array.average) |> Seq.fold (*) 1.0
    | a, _ -> failwithf "aggregation %A" a

let private relClose (x: float) (y: float) = abs (x - y) <= 1e-6 * max (abs x) (abs y) + 1e-30

let private withModel (s: Spec) (seed: int64) (f: ILanguageModel -> 'a) =
    let m = build s seed
    try f m finally m.Dispose()

[<Tests>]
let tests =
    testList "skill unit laws" [
        testPropertyWithConfig config "every partitioner covers every trainable element exactly once" <| fun (key: int) ->
            let s = spec key
            withModel s 1L (fun m ->
                [ for p in partitioners m ->
                    match coverage m (p.Partition m) with
                    | Ok () -> true
                    | Error e -> failwithf "spec %d (%s, %s), partitioner %s: %s" key s.Family s.Mode p.Name e ]
                |> List.forall id)

        testPropertyWithConfig config "unit scores equal the naive mean / rank-1 outer-product mean (1e-6 relative)" <| fun (key: int) ->
            let s = spec key
            withModel s 1L (fun m ->
                let scores = randomScores m key
                try
                    let tensors = scores |> List.map (fun (n, _, t) -> KeyValuePair(n, t)) |> Dictionary
                    let data = scores |> List.map (fun (n, d, _) -> n, d) |> dict
                    let shapes = m.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.shape) |> dict
                    [ for p in partitioners m do
                        let map = p.Partition m
                        let got = UnitScores.Compute(map, m, tensors)
                        for i in 0 .. map.Count - 1 do
                            let want = naiveScore shapes data map.Units.[i]
                            if not (relClose got.[i] want) then
                                failwithf "spec %d, %s, unit %s: %g vs naive %g" key p.Name map.Units.[i].Id got.[i] want
                        yield got.Length = map.Count ]
                    |> List.forall id
                finally
                    for (_, _, t) in scores do t.Dispose())

        testPropertyWithConfig config "lora-rank1 pairs row r of A with column r of B of the same module and adapter, r = 0 .. R−1, and the views are those rows and columns" <| fun (key: int) ->
            let s = spec key
            withModel s 1L (fun m ->
                not (hasLora m) ||
                    let live = m.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p :> torch.Tensor) |> dict
                    let map = (LoraRank1Partitioner()).Partition m
                    let rank1 = map.Units |> Seq.filter (fun u -> u.Aggregation = UnitAggregation.ProductOfSliceMeans) |> List.ofSeq
                    let byModule = rank1 |> List.groupBy (fun u -> u.Id.Substring(0, u.Id.LastIndexOf ".r"))
                    let pairs =
                        rank1 |> List.forall (fun u ->
                            let r = int64 (u.Id.Substring(u.Id.LastIndexOf ".r" + 2))
                            let a = u.Slices |> Seq.tryFind (fun x -> x.Parameter.Contains ".lora_A.")
                            let b = u.Slices |> Seq.tryFind (fun x -> x.Parameter.Contains ".lora_B.")
                            let aOk = a |> Option.forall (fun x -> x.Dim = 0 && x.Start = r && x.Length = 1L)
                            let bOk = b |> Option.forall (fun x -> x.Dim = 1 && x.Start = r && x.Length = 1L)
                            let same =
                                match a, b with
                                | Some x, Some y -> x.Parameter.Replace(".lora_A.", ".lora_B.") = y.Parameter
                                | _ -> true
                            use _s = torch.NewDisposeScope()
                            let views =
                                (a |> Option.forall (fun x -> (x.View live[x.Parameter]).eq(live[x.Parameter].narrow(0L, r, 1L)).all().item<bool>()))
                                && (b |> Option.forall (fun y -> (y.View live[y.Parameter]).eq(live[y.Parameter].narrow(1L, r, 1L)).all().item<bool>()))
                            aOk && bOk && same && views && (a.IsSome || b.IsSome))
                    let ranks =
                        byModule |> List.forall (fun (_, us) ->
                            let rs = us |> List.map (fun u -> int (u.Id.Substring(u.Id.LastIndexOf ".r" + 2))) |> List.sort
                            rs = [ 0 .. rs.Length - 1 ])
                    if not (pairs && ranks) then failwithf "spec %d (%s, %s): rank-1 pairing broken" key s.Family s.Mode
                    true)

        testPropertyWithConfig config "ids and fingerprints: equal for identical models, different for another architecture" <| fun (key: int) ->
            let s = spec key
            let grown =
                let j = JsonNode.Parse(s.Json).AsObject()
                let k = if s.Family = "llama" then "num_hidden_layers" else "num_layers"
                j.[k] <- j.[k].GetValue<int>() + 1
                { s with Json = j.ToJsonString() }
            withModel s 1L (fun m1 ->
                withModel s 2L (fun m2 ->
                    withModel grown 1L (fun m3 ->
                        [ for p in partitioners m1 do
                            let a, b, c = p.Partition m1, (SkillUnitPartitioners.ByName p.Name).Partition m2, p.Partition m3
                            let describe (x: SkillUnitMap) =
                                x.Units |> Seq.map (fun u -> u.Id, String.Join(",", u.Slices), u.Layer, u.ModuleType, u.ElementCount) |> List.ofSeq
                            yield describe a = describe b && a.Fingerprint = b.Fingerprint && a.Fingerprint <> c.Fingerprint ]
                        |> List.forall id)))

        test "labels: layer and module type from names (LLaMA, T5, LoRA)" {
            let cases =
                [ "model.layers.3.self_attn.q_proj.weight", "model.layers.3", "self_attn.q_proj"
                  "model.layers.0.self_attn.q_proj.bias", "model.layers.0", "self_attn.q_proj.bias"
                  "model.layers.1.mlp.up_proj.weight", "model.layers.1", "mlp.up_proj"
                  "model.layers.1.input_layernorm.weight", "model.layers.1", "input_layernorm"
                  "model.embed_tokens.weight", "embeddings", "model.embed_tokens"
                  "lm_head.weight", "head", "lm_head"
                  "model.norm.weight", "final_norm", "model.norm"
                  "shared.weight", "embeddings", "shared"
                  "encoder.block.1.layer.0.SelfAttention.q.weight", "encoder.block.1", "SelfAttention.q"
                  "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder.block.0", "SelfAttention.relative_attention_bias"
                  "encoder.block.0.layer.1.layer_norm.weight", "encoder.block.0", "DenseReluDense.layer_norm"
                  "decoder.block.0.layer.1.layer_norm.weight", "decoder.block.0", "EncDecAttention.layer_norm"
                  "decoder.block.2.layer.2.DenseReluDense.wi_0.weight", "decoder.block.2", "DenseReluDense.wi_0"
                  "decoder.final_layer_norm.weight", "final_norm", "decoder.final_layer_norm"
                  "model.layers.0.self_attn.v_proj.lora_B.default.weight", "model.layers.0", "self_attn.v_proj.lora_B"
                  "encoder.block.1.layer.0.SelfAttention.q.lora_A.7.weight", "encoder.block.1", "SelfAttention.q.lora_A" ]
            for (name, layer, kind) in cases do
                Expect.equal (UnitNames.Layer name) layer $"layer of {name}"
                Expect.equal (UnitNames.ModuleType name) kind $"module type of {name}"
        }

        test "scores: a missing or misshapen score tensor is an error naming the parameter" {
            let s = { spec 3 with Mode = "full" }
            withModel s 1L (fun m ->
                let map = FullFineTuningPartitioner().Partition m
                let scores = randomScores m 3
                try
                    let all = scores |> List.map (fun (n, _, t) -> KeyValuePair(n, t)) |> Dictionary
                    let first = map.Units.[0].Slices.[0].Parameter
                    let missing = Dictionary(all)
                    missing.Remove first |> ignore
                    Expect.throwsT<KeyNotFoundException> (fun () -> UnitScores.Compute(map, missing) |> ignore) "missing"
                    use wrong = torch.zeros(3L, 5L)
                    let bad = Dictionary(all)
                    bad.[first] <- wrong
                    Expect.throwsT<ArgumentException> (fun () -> UnitScores.Compute(map, m, bad) |> ignore) "shape"
                finally
                    for (_, _, t) in scores do t.Dispose())
        }

        test "ByName knows the five partitioners (and neuron blocks) and rejects others" {
            for n in [ "full"; "lora-matrix"; "lora-rank1"; "head"; "neuron"; "neuron-16" ] do
                Expect.equal (SkillUnitPartitioners.ByName(n).Name) n n
            Expect.equal (SkillUnitPartitioners.ByName("neuron-16") :?> NeuronPartitioner).BlockSize 16 "block size"
            for bad in [ "rows"; "neuron-0"; "neuron-x"; "neuron-"; "neuron-+4" ] do
                Expect.throwsT<ArgumentException> (fun () -> SkillUnitPartitioners.ByName bad |> ignore) bad
        }
    ]
