module T5Tests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
type private Tensor = torch.Tensor
type private ScalarType = torch.ScalarType
open Klf.Models
open Klf.Models.T5

let private seed = 20261126L
let private vocab = 128
let private presets = [ "t5-tiny"; "t5-tiny-gated" ]

let private model (preset: string) =
    torch.manual_seed seed |> ignore
    T5ForConditionalGeneration.Create(T5Config.Preset(preset, vocab))

/// (rows) int64 tensor of shape (rows.Length, rows.[0].Length).
let private ids (rows: int64[][]) =
    let b, s = int64 rows.Length, int64 rows.[0].Length
    torch.tensor(Array.concat rows).reshape(b, s)

let private maxAbsDiff (a: Tensor) (b: Tensor) =
    use d = torch.NewDisposeScope()
    (a.``to``(ScalarType.Float32) - b.``to``(ScalarType.Float32)).abs().max().item<float32>() |> float

let private repoRoot () =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then failwith "Klf.sln not found above the test binary"
        elif File.Exists(Path.Combine(dir.FullName, "Klf.sln")) then dir.FullName
        else up dir.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

let private snapshot (m: T5ForConditionalGeneration) =
    m.named_parameters()
    |> Seq.map (fun struct (name, p) -> sprintf "%s [%s]" name (String.Join(", ", p.shape)))
    |> String.concat "\n"

/// Compares text with tests/Integration/approved/<name>.txt; writes it if missing, writes .received and fails on a difference.
let private approve (name: string) (text: string) =
    let dir = Path.Combine(repoRoot (), "tests", "Integration", "approved")
    Directory.CreateDirectory dir |> ignore
    let approved = Path.Combine(dir, name + ".txt")
    let received = Path.Combine(dir, name + ".received.txt")
    let text = text + "\n"
    if not (File.Exists approved) then
        File.WriteAllText(approved, text)
        printfn "approved snapshot written: %s (commit it)" (Path.GetFileName approved)
    elif File.ReadAllText approved <> text then
        File.WriteAllText(received, text)
        failtestf "%s differs from the approved snapshot; see %s" name (Path.GetFileName received)
    elif File.Exists received then
        File.Delete received

let private keyTests =
    testList "keys" [
        test "t5-tiny: HF key names, no embed_tokens parameters, tied aliases" {
            use m = model "t5-tiny"
            let keys = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
            for k in [ "shared.weight"
                       "encoder.block.0.layer.0.SelfAttention.q.weight"
                       "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
                       "encoder.block.0.layer.0.layer_norm.weight"
                       "encoder.block.1.layer.1.DenseReluDense.wi.weight"
                       "encoder.block.1.layer.1.DenseReluDense.wo.weight"
                       "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
                       "decoder.block.0.layer.1.EncDecAttention.k.weight"
                       "decoder.block.1.layer.2.DenseReluDense.wi.weight"
                       "encoder.final_layer_norm.weight"
                       "decoder.final_layer_norm.weight" ] do
                Expect.contains keys k $"key {k}"
            Expect.isFalse (keys.Contains "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight") "bias only in block 0"
            Expect.isFalse (keys.Contains "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight") "no cross bias"
            Expect.isFalse (keys.Contains "lm_head.weight") "tied: no lm_head parameter"
            Expect.isFalse (keys |> Set.exists (fun k -> k.Contains "embed_tokens")) "embed_tokens are aliases, not parameters"
            // encoder 2×8 + bias + final norm = 18; decoder 2×13 + bias + final norm = 28; shared = 1
            Expect.equal keys.Count 47 "parameter count"
            Expect.equal (m.TiedAliases |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq)
                (Map [ "encoder.embed_tokens.weight", "shared.weight"
                       "decoder.embed_tokens.weight", "shared.weight"
                       "lm_head.weight", "shared.weight" ]) "aliases"
            approve "t5-tiny" (snapshot m)
        }
        test "t5-tiny-gated: HF key names, untied lm_head" {
            use m = model "t5-tiny-gated"
            let keys = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
            for k in [ "shared.weight"
                       "lm_head.weight"
                       "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
                       "encoder.block.0.layer.1.DenseReluDense.wi_1.weight"
                       "decoder.block.2.layer.2.DenseReluDense.wo.weight"
                       "decoder.block.2.layer.1.EncDecAttention.o.weight" ] do
                Expect.contains keys k $"key {k}"
            Expect.isFalse (keys.Contains "encoder.block.0.layer.1.DenseReluDense.wi.weight") "gated has no wi"
            // encoder 2×9 + 2 = 20; decoder 3×14 + 2 = 44; shared + lm_head = 2
            Expect.equal keys.Count 66 "parameter count"
            Expect.equal m.TiedAliases.Count 2 "only the embed_tokens aliases"
            approve "t5-tiny-gated" (snapshot m)
        }
    ]

/// Naive scalar reference of HF's bucket formula in double precision. Returns None where the log-spaced
/// quotient is within 1e-5 of an integer: there HF's float32 arithmetic decides, not this reference.
let private naiveBucket (rel: int64) (bidirectional: bool) (numBuckets: int) (maxDistance: int) : int64 option =
    let nb = if bidirectional then numBuckets / 2 else numBuckets
    let offset = if bidirectional && rel > 0L then int64 nb else 0L
    let d = if bidirectional then abs rel else max 0L (-rel)
    let maxExact = nb / 2
    if d < int64 maxExact then Some(offset + d)
    else
        let q = log (float d / float maxExact) / log (float maxDistance / float maxExact) * float (nb - maxExact)
        if abs (q - round q) < 1e-5 then None
        else Some(offset + min (int64 maxExact + int64 (floor q)) (int64 nb - 1L))

let private initTests =
    testList "init" [
        test "t5-tiny-gated: HF _init_weights standard deviations, reproducible from torch.manual_seed" {
            use m = model "t5-tiny-gated"
            use m2 = model "t5-tiny-gated"
            let c = m.Config
            let dModel, dKv, heads, dFf = float c.DModel, float c.DKv, float c.NumHeads, float c.DFf
            let expected (name: string) =
                if name.EndsWith "layer_norm.weight" then None
                elif name = "shared.weight" || name = "lm_head.weight" then Some 1.0
                elif name.EndsWith ".q.weight" then Some((dModel * dKv) ** -0.5)
                elif name.EndsWith ".o.weight" then Some((heads * dKv) ** -0.5)
                elif name.EndsWith ".wo.weight" then Some(dFf ** -0.5)
                else Some(dModel ** -0.5) // k, v, relative_attention_bias, wi_0, wi_1
            for (struct (name, p)), (struct (_, p2)) in Seq.zip (m.named_parameters()) (m2.named_parameters()) do
                use d = torch.NewDisposeScope()
                Expect.isTrue (p.eq(p2).all().item<bool>()) $"{name}: same seed, same weights"
                match expected name with
                | None -> Expect.isTrue (p.eq(torch.ones_like p).all().item<bool>()) $"{name}: ones"
                | Some std ->
                    let got = p.std().item<float32>() |> float
                    let tol = if p.numel() < 1000L then 0.2 else 0.1
                    Expect.isLessThan (abs (got / std - 1.0)) tol $"{name}: std {got} vs {std}"
        }
    ]

let private bucketTests =
    testList "relative position buckets" [
        test "HF formula, num_buckets=32, max_distance=128" {
            // Hand-computed from HF's _relative_position_bucket (relative = key position - query position).
            // Bidirectional: 16 buckets per direction, +16 for positive offsets, max_exact = 8, then
            //   8 + floor(log(d/8) / log(128/8) * 8), capped at 15.
            // Causal: 32 buckets for offsets <= 0 (positive -> 0), max_exact = 16, then
            //   16 + floor(log(d/16) / log(128/16) * 16), capped at 31.
            let bidirectional =
                [ 0L, 0L; -1L, 1L; 1L, 17L; -7L, 7L; 7L, 23L; -8L, 8L; -12L, 9L   // log(1.5)/log16*8 = 1.17
                  20L, 26L                                                        // 16 + 8 + floor(2.64)
                  -50L, 13L                                                       // 8 + floor(5.29)
                  100L, 31L                                                       // 16 + 8 + floor(7.29)
                  -128L, 15L; -1000L, 15L; 1000L, 31L ]
            let causal =
                [ 0L, 0L; 5L, 0L; 1000L, 0L; -1L, 1L; -15L, 15L; -16L, 16L
                  -20L, 17L                                                       // 16 + floor(1.72)
                  -50L, 24L                                                       // 16 + floor(8.77)
                  -100L, 30L                                                      // 16 + floor(14.10)
                  -127L, 31L; -128L, 31L; -500L, 31L ]
            for cases, bidi in [ bidirectional, true; causal, false ] do
                use rel = torch.tensor(cases |> List.map fst |> Array.ofList)
                use buckets = T5Attention.RelativePositionBucket(rel, bidi, 32, 128)
                let got = buckets.data<int64>().ToArray() |> List.ofArray
                Expect.equal (List.zip (List.map fst cases) got) cases $"bidirectional={bidi}"
        }
        test "matches a naive double-precision reference on [-300, 300] for several bucket settings" {
            let rels = [| -300L .. 300L |]
            for numBuckets, maxDistance in [ 32, 128; 16, 64; 64, 256; 8, 20 ] do
                for bidi in [ true; false ] do
                    use rel = torch.tensor(rels)
                    use buckets = T5Attention.RelativePositionBucket(rel, bidi, numBuckets, maxDistance)
                    let got = buckets.data<int64>().ToArray()
                    let mutable skipped = []
                    for i in 0 .. rels.Length - 1 do
                        match naiveBucket rels.[i] bidi numBuckets maxDistance with
                        | Some expected -> Expect.equal got.[i] expected $"rel {rels.[i]} buckets {numBuckets} max {maxDistance} bidi {bidi}"
                        | None -> skipped <- (rels.[i], got.[i]) :: skipped
                        Expect.isTrue (got.[i] >= 0L && got.[i] < int64 numBuckets) "bucket in range"
                    if numBuckets = 32 && not skipped.IsEmpty then
                        printfn "buckets at exact log boundaries (float32 decides), bidi=%b: %A" bidi (List.rev skipped)
        }
    ]

/// A naive reference of the whole T5 forward pass in double-precision loops over plain arrays, written
/// from the HF modeling_t5 semantics (pre-norm residual blocks, RMS norm, unscaled attention scores plus a
/// relative position bias computed by block 0 and shared, causal decoder, cross-attention masked by the
/// encoder mask, tied head rescaled by d_model^-0.5). Sequences are short (< 8) so buckets are exact.
module private NaiveT5 =
    type Mat = float[][] // rows

    let param (m: T5ForConditionalGeneration) =
        let table =
            m.named_parameters()
            |> Seq.map (fun struct (n, p) ->
                let shape = p.shape
                let flat = p.detach().cpu().``to``(ScalarType.Float64).data<float>().ToArray()
                let rows = if shape.Length = 1 then 1 else int shape.[0]
                let cols = if shape.Length = 1 then int shape.[0] else int shape.[1]
                n, Array.init rows (fun r -> Array.sub flat (r * cols) cols))
            |> dict
        fun (name: string) -> table.[name]

    let matvec (w: Mat) (x: float[]) = w |> Array.map (fun row -> Array.fold2 (fun acc a b -> acc + a * b) 0.0 row x)
    let add (a: float[]) (b: float[]) = Array.map2 (+) a b
    let rms (w: float[]) (eps: float) (x: float[]) =
        let v = (x |> Array.sumBy (fun a -> a * a)) / float x.Length
        Array.map2 (fun wi xi -> wi * xi / sqrt (v + eps)) w x
    let geluNew x = 0.5 * x * (1.0 + tanh (sqrt (2.0 / Math.PI) * (x + 0.044715 * x * x * x)))

    /// Multi-head attention of queries xs over keys ys; bias h i j (additive, already masked).
    let attention (p: string -> Mat) (prefix: string) (heads: int) (dkv: int) (xs: float[][]) (ys: float[][]) (bias: int -> int -> int -> float) =
        let q = xs |> Array.map (matvec (p (prefix + ".q.weight")))
        let k = ys |> Array.map (matvec (p (prefix + ".k.weight")))
        let v = ys |> Array.map (matvec (p (prefix + ".v.weight")))
        xs |> Array.mapi (fun i _ ->
            let concat =
                [| for h in 0 .. heads - 1 do
                    let sl (a: float[]) = Array.sub a (h * dkv) dkv
                    let scores = Array.init ys.Length (fun j -> Array.fold2 (fun acc a b -> acc + a * b) 0.0 (sl q.[i]) (sl k.[j]) + bias h i j)
                    let mx = Array.max scores
                    let e = scores |> Array.map (fun s -> exp (s - mx))
                    let z = Array.sum e
                    yield! Array.init dkv (fun d -> Seq.sum (seq { for j in 0 .. ys.Length - 1 -> e.[j] / z * (sl v.[j]).[d] })) |]
            matvec (p (prefix + ".o.weight")) concat)

    let ff (c: T5Config) (p: string -> Mat) (prefix: string) (x: float[]) =
        let hidden =
            if c.IsGatedAct then
                Array.map2 (fun g l -> geluNew g * l) (matvec (p (prefix + ".wi_0.weight")) x) (matvec (p (prefix + ".wi_1.weight")) x)
            else matvec (p (prefix + ".wi.weight")) x |> Array.map (max 0.0)
        matvec (p (prefix + ".wo.weight")) hidden

    /// Logits (T × V) of one example: encoder tokens with mask, decoder input tokens.
    let logits (m: T5ForConditionalGeneration) (encIds: int64[]) (encMask: int64[]) (decIds: int64[]) =
        let c = m.Config
        let p = param m
        let eps = c.LayerNormEpsilon
        let norm name = rms (p name).[0] eps
        let emb (ids: int64[]) = ids |> Array.map (fun t -> Array.copy (p "shared.weight").[int t])
        let relBias (stack: string) bidi h i j =
            let b = (naiveBucket (int64 (j - i)) bidi c.RelativeAttentionNumBuckets c.RelativeAttentionMaxDistance).Value
            (p (stack + ".block.0.layer.0.SelfAttention.relative_attention_bias.weight")).[int b].[h]
        let neg = -1e30
        // Encoder
        let mutable h = emb encIds
        let encBias hh i j = relBias "encoder" true hh i j + (if encMask.[j] = 0L then neg else 0.0)
        for b in 0 .. c.NumLayers - 1 do
            let pre = $"encoder.block.{b}.layer"
            let a = attention p $"{pre}.0.SelfAttention" c.NumHeads c.DKv (h |> Array.map (norm $"{pre}.0.layer_norm.weight")) (h |> Array.map (norm $"{pre}.0.layer_norm.weight")) encBias
            h <- Array.map2 add h a
            h <- h |> Array.map (fun x -> add x (ff c p $"{pre}.1.DenseReluDense" (norm $"{pre}.1.layer_norm.weight" x)))
        let enc = h |> Array.map (norm "encoder.final_layer_norm.weight")
        // Decoder
        let mutable d = emb decIds
        let selfBias hh i j = relBias "decoder" false hh i j + (if j > i then neg else 0.0)
        let crossBias _ _ j = if encMask.[j] = 0L then neg else 0.0
        for b in 0 .. c.NumDecoderLayers - 1 do
            let pre = $"decoder.block.{b}.layer"
            let n0 = d |> Array.map (norm $"{pre}.0.layer_norm.weight")
            d <- Array.map2 add d (attention p $"{pre}.0.SelfAttention" c.NumHeads c.DKv n0 n0 selfBias)
            let n1 = d |> Array.map (norm $"{pre}.1.layer_norm.weight")
            d <- Array.map2 add d (attention p $"{pre}.1.EncDecAttention" c.NumHeads c.DKv n1 enc crossBias)
            d <- d |> Array.map (fun x -> add x (ff c p $"{pre}.2.DenseReluDense" (norm $"{pre}.2.layer_norm.weight" x)))
        let out = d |> Array.map (norm "decoder.final_layer_norm.weight")
        if c.TieWordEmbeddings then
            out |> Array.map (fun x -> matvec (p "shared.weight") (x |> Array.map (fun v -> v * float c.DModel ** -0.5)))
        else out |> Array.map (matvec (p "lm_head.weight"))

let private referenceTests =
    testList "naive reference" [
        for preset in presets ->
            test $"{preset}: logits equal a double-precision loop implementation" {
                use m = model preset
                m.eval()
                use _ng = torch.no_grad()
                use d = torch.NewDisposeScope()
                let encRows = [| [| 5L; 9L; 13L; 17L; 1L |]; [| 7L; 1L; 0L; 0L; 0L |] |]
                let maskRows = [| [| 1L; 1L; 1L; 1L; 1L |]; [| 1L; 1L; 0L; 0L; 0L |] |]
                let decRows = [| [| 0L; 11L; 12L; 13L |]; [| 0L; 21L; 22L; 23L |] |]
                let got = m.Decode(ids decRows, m.Encode(ids encRows, ids maskRows), ids maskRows).``to``(ScalarType.Float64)
                let v = int64 vocab
                for b in 0 .. 1 do
                    let expected = NaiveT5.logits m encRows.[b] maskRows.[b] decRows.[b]
                    let scale = expected |> Array.collect id |> Array.map abs |> Array.max
                    for t in 0 .. decRows.[b].Length - 1 do
                        let row = got.select(0L, int64 b).select(0L, int64 t).data<float>().ToArray()
                        Expect.equal (int64 row.Length) v "vocab"
                        let err = Array.map2 (fun a e -> abs (a - e)) row expected.[t] |> Array.max
                        Expect.isLessThan (err / scale) 1e-5 $"row {b} position {t}"
            }
    ]

let private gen maxNew (eos: int[]) useCache batch =
    GenerationOptions(MaxNewTokens = maxNew, EosTokenIds = eos, UseCache = useCache, BatchSize = batch)

let private promptSet =
    [| [| 5; 9; 13; 17; 1 |]; [| 7; 1 |]; [| 3; 4; 5; 6; 7; 8; 9; 10; 1 |]; [| 42; 1 |] |]

let private generationTests =
    testList "generation" [
        for preset in presets ->
            test $"{preset}: KV cache = no cache, batch-independent, EOS stop, no leaks, mode restored" {
                use m = model preset
                m.train()
                let opts = gen 10 [||] true 4
                let live0 = DisposeScopeManager.Statistics.ThreadTotalLiveCount
                let cached = m.GenerateGreedy(promptSet, opts)
                let live1 = DisposeScopeManager.Statistics.ThreadTotalLiveCount
                Expect.equal live1 live0 "no tensors left alive by generation"
                Expect.isTrue m.training "training mode restored"
                let uncached = m.GenerateGreedy(promptSet, gen 10 [||] false 4)
                Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount live0 "no tensors left alive without cache either"
                Expect.equal cached uncached "cache vs recomputing the prefix"
                Expect.all cached (fun r -> r.Length = 10) "no EOS: MaxNewTokens each"
                let single = m.GenerateGreedy(promptSet, gen 10 [||] true 1)
                Expect.equal single cached "batch of 1 vs batch of 4"
                let pairs = m.GenerateGreedy(Array.rev promptSet, gen 10 [||] true 2)
                Expect.equal pairs (Array.rev cached) "other batch composition"
                // EOS: stop at (and drop) the first occurrence of the 4th token of prompt 0's answer.
                let stop = cached.[0].[3]
                let withEos = m.GenerateGreedy(promptSet, gen 10 [| stop |] true 4)
                for r in 0 .. promptSet.Length - 1 do
                    let expected = cached.[r] |> Array.takeWhile (fun t -> t <> stop)
                    Expect.equal withEos.[r] expected $"row {r} stops at EOS"
                let withEosNoCache = m.GenerateGreedy(promptSet, gen 10 [| stop |] false 4)
                Expect.equal withEosNoCache withEos "EOS with and without cache"
            }
    ]

let private invarianceTests =
    testList "invariances" [
        for preset in presets ->
            test $"{preset}: decoder causality, encoder padding invariance" {
                use m = model preset
                m.eval()
                use _ng = torch.no_grad()
                use d = torch.NewDisposeScope()
                let enc = ids [| [| 5L; 9L; 13L; 1L |]; [| 7L; 1L; 0L; 0L |] |]
                let mask = ids [| [| 1L; 1L; 1L; 1L |]; [| 1L; 1L; 0L; 0L |] |]
                let h = m.Encode(enc, mask)
                // Causality: changing decoder tokens after position 2 leaves logits of positions 0..2 unchanged.
                let dec1 = ids [| [| 0L; 11L; 12L; 13L; 14L |]; [| 0L; 21L; 22L; 23L; 24L |] |]
                let dec2 = ids [| [| 0L; 11L; 12L; 99L; 98L |]; [| 0L; 21L; 22L; 97L; 96L |] |]
                let l1 = m.Decode(dec1, h, mask)
                let l2 = m.Decode(dec2, h, mask)
                Expect.isLessThan (maxAbsDiff (l1.narrow(1L, 0L, 3L)) (l2.narrow(1L, 0L, 3L))) 1e-5 "prefix logits unchanged"
                Expect.isGreaterThan (maxAbsDiff (l1.narrow(1L, 3L, 2L)) (l2.narrow(1L, 3L, 2L))) 1e-3 "later logits do change"
                // Padding invariance: 3 extra pad columns with mask 0 change nothing at real positions.
                let encPad = torch.cat([| enc; torch.zeros([| 2L; 3L |], ScalarType.Int64) |], 1L)
                let maskPad = torch.cat([| mask; torch.zeros([| 2L; 3L |], ScalarType.Int64) |], 1L)
                let hPad = m.Encode(encPad, maskPad)
                Expect.isLessThan (maxAbsDiff (h.select(0L, 0L)) (hPad.select(0L, 0L).narrow(0L, 0L, 4L))) 1e-5 "row 0 encoder states"
                Expect.isLessThan (maxAbsDiff (h.select(0L, 1L).narrow(0L, 0L, 2L)) (hPad.select(0L, 1L).narrow(0L, 0L, 2L))) 1e-5 "row 1 encoder states"
                let lPad = m.Decode(dec1, hPad, maskPad)
                // Logits reach ~30 with the N(0, 1) untied head: compare relative to their scale.
                let scale = max 1.0 (l1.abs().max().item<float32>() |> float)
                Expect.isLessThan (maxAbsDiff l1 lPad / scale) 1e-5 "decoder logits with padded encoder"
                // KV cache: a 3-token prefill then 2 single steps give the logits of the full decoder pass.
                use cache = new T5KvCache(m.Config.NumDecoderLayers)
                let c0 = m.Decode(dec1.narrow(1L, 0L, 3L), h, mask, cache)
                let c1 = m.Decode(dec1.narrow(1L, 3L, 1L), h, mask, cache)
                let c2 = m.Decode(dec1.narrow(1L, 4L, 1L), h, mask, cache)
                Expect.equal cache.PastLength 5L "cache length"
                Expect.equal (cache.SelfAttention.[0].Keys.shape) [| 2L; 4L; 5L; int64 m.Config.DKv |] "cached self keys (B, H, T, d_kv)"
                Expect.equal (cache.CrossAttention.[0].Keys.shape) [| 2L; 4L; 4L; int64 m.Config.DKv |] "cached cross keys (B, H, S, d_kv)"
                let cachedLogits = torch.cat([| c0; c1; c2 |], 1L)
                Expect.isLessThan (maxAbsDiff l1 cachedLogits / scale) 1e-5 "cached vs full logits"
                // The masked positions really are ignored: changing padded tokens changes nothing either.
                let encJunk = torch.cat([| enc; torch.full([| 2L; 3L |], (77L).ToScalar(), ScalarType.Int64) |], 1L)
                let lJunk = m.Decode(dec1, m.Encode(encJunk, maskPad), maskPad)
                Expect.isLessThan (maxAbsDiff l1 lJunk / scale) 1e-5 "decoder logits with junk under the mask"
            }
    ]

let private trainingTests =
    testList "loss and training" [
        yield test "loss counts only label positions (manual cross-entropy; trailing -100 = shorter labels)" {
            use m = model "t5-tiny-gated"
            m.eval()
            use _ng = torch.no_grad()
            use d = torch.NewDisposeScope()
            let input = ids [| [| 5L; 9L; 13L; 1L |]; [| 7L; 1L; 0L; 0L |] |]
            let mask = ids [| [| 1L; 1L; 1L; 1L |]; [| 1L; 1L; 0L; 0L |] |]
            let labels = ids [| [| 20L; 21L; 1L; -100L |]; [| 30L; 1L; -100L; -100L |] |]
            use batch = new LmBatch(input.clone(), mask.clone(), labels.clone())
            Expect.equal batch.LabelTokenCount 5L "label positions"
            let loss = m.ComputeLoss batch
            Expect.equal loss.dtype ScalarType.Float32 "float32 loss"
            // Manual: mean over the 5 label positions of -log softmax(logits)[label].
            let logits = m.Decode(m.ShiftRight labels, m.Encode(input, mask), mask).``to``(ScalarType.Float32)
            let logp = logits.log_softmax(-1L)
            let lab = labels.data<int64>().ToArray()
            let picked =
                [ for b in 0 .. 1 do
                    for t in 0 .. 3 do
                        let y = lab.[b * 4 + t]
                        if y <> -100L then yield -(logp.select(0L, int64 b).select(0L, int64 t).select(0L, y).item<float32>() |> float) ]
            Expect.equal picked.Length 5 "5 terms"
            Expect.floatClose Accuracy.medium (loss.item<float32>() |> float) (List.average picked) "manual cross-entropy"
            // Decoder inputs: [start, labels[:-1]] with -100 -> pad.
            let shifted = m.ShiftRight(labels).data<int64>().ToArray()
            Expect.equal shifted [| 0L; 20L; 21L; 1L; 0L; 30L; 1L; 0L |] "shift right"
            // Trailing -100 columns change nothing (causal decoder): same loss as the labels cut at 3 columns.
            let labels3 = ids [| [| 20L; 21L; 1L |]; [| 30L; 1L; -100L |] |]
            use batch3 = new LmBatch(input.clone(), mask.clone(), labels3)
            Expect.floatClose Accuracy.medium (m.ComputeLoss(batch3).item<float32>() |> float) (loss.item<float32>() |> float) "shorter labels"
        }
        yield test "loss falls when overfitting one batch (30 AdamW steps, dropout on)" {
            use m = model "t5-tiny"
            m.train()
            use batch = new LmBatch(ids [| [| 5L; 9L; 13L; 1L |]; [| 7L; 8L; 1L; 0L |] |],
                                    ids [| [| 1L; 1L; 1L; 1L |]; [| 1L; 1L; 1L; 0L |] |],
                                    ids [| [| 40L; 41L; 42L; 1L |]; [| 50L; 51L; 1L; -100L |] |])
            use opt = torch.optim.AdamW(m.parameters(), lr = 1e-2)
            let mutable live2 = 0L
            let losses =
                [ for i in 1 .. 30 do
                    if i = 3 then live2 <- DisposeScopeManager.Statistics.ThreadTotalLiveCount
                    use d = torch.NewDisposeScope()
                    opt.zero_grad()
                    let loss = m.ComputeLoss batch
                    loss.backward()
                    opt.step() |> ignore
                    yield loss.item<float32>() |> float ]
            Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount live2 "live tensors do not grow over training steps"
            printfn "t5-tiny overfit: first %.3f last %.3f" losses.Head (List.last losses)
            Expect.isLessThan (List.last losses) (losses.Head * 0.3) "loss falls by more than 70%"
            let answer = m.GenerateGreedy([| [| 5; 9; 13; 1 |] |], GenerationOptions(MaxNewTokens = 5))
            Expect.equal answer.[0] [| 40; 41; 42 |] "memorised answer (greedy, EOS dropped)"
        }
        for preset in presets ->
            test $"{preset}: bfloat16 forward runs and is close to float32" {
                use m32 = model preset
                use m16 = T5ForConditionalGeneration.Create(T5Config.Preset(preset, vocab), dtype = Nullable ScalarType.BFloat16)
                Expect.equal m16.DType ScalarType.BFloat16 "bf16 parameters"
                do
                    use _ng = torch.no_grad()
                    for (struct (_, p32)), (struct (_, p16)) in Seq.zip (m32.named_parameters()) (m16.named_parameters()) do
                        p16.copy_(p32) |> ignore
                m32.eval()
                m16.eval()
                use _ng = torch.no_grad()
                use d = torch.NewDisposeScope()
                let input = ids [| [| 5L; 9L; 13L; 1L |]; [| 7L; 1L; 0L; 0L |] |]
                let mask = ids [| [| 1L; 1L; 1L; 1L |]; [| 1L; 1L; 0L; 0L |] |]
                let dec = ids [| [| 0L; 11L; 12L |]; [| 0L; 21L; 22L |] |]
                let l32 = m32.Decode(dec, m32.Encode(input, mask), mask)
                let l16 = m16.Decode(dec, m16.Encode(input, mask), mask)
                Expect.equal l16.dtype ScalarType.BFloat16 "bf16 logits"
                let scale = l32.abs().max().item<float32>() |> float
                let diff = maxAbsDiff l32 l16
                printfn "%s bf16 vs fp32: max |diff| %.4f of max |logit| %.3f" preset diff scale
                Expect.isLessThan (diff / scale) 0.05 "relative logit error"
                let labels = ids [| [| 20L; 21L; 1L |]; [| 30L; 1L; -100L |] |]
                use b32 = new LmBatch(input.clone(), mask.clone(), labels.clone())
                let loss32 = m32.ComputeLoss(b32).item<float32>() |> float
                let loss16 = m16.ComputeLoss(b32).item<float32>() |> float
                printfn "%s bf16 vs fp32 loss: %.4f vs %.4f" preset loss16 loss32
                Expect.isLessThan (abs (loss16 - loss32) / loss32) 0.03 "loss within 3%"
                let g = m16.GenerateGreedy(promptSet, GenerationOptions(MaxNewTokens = 4, EosTokenIds = [||]))
                Expect.all g (fun r -> r.Length = 4) "bf16 generation runs"
            }
    ]

let private configTests =
    testList "config" [
        test "round trip keeps unknown fields; defaults as HF" {
            for preset in presets do
                let c = T5Config.Preset(preset, 300)
                Expect.equal (T5Config.FromJson(c.ToJson(), preset)) c $"{preset} round trip"
            let json =
                JsonNode.Parse("""{"model_type":"t5","vocab_size":32128,"d_model":512,"d_kv":64,"d_ff":1024,"num_layers":8,
                                  "num_heads":6,"feed_forward_proj":"gated-gelu","tie_word_embeddings":false,
                                  "task_specific_params":{"summarize":{"prefix":"summarize: "}},"n_positions":512}""").AsObject()
            let c = T5Config.FromJson(json, "flan-like")
            Expect.equal c.NumDecoderLayers 8 "num_decoder_layers defaults to num_layers"
            Expect.equal c.RelativeAttentionNumBuckets 32 "buckets default"
            Expect.equal c.RelativeAttentionMaxDistance 128 "max distance default"
            Expect.equal c.DenseActFn "gelu_new" "gated-gelu is gelu_new"
            Expect.equal (c.PadTokenId, c.EosTokenId, c.DecoderStartTokenId) (0, 1, 0) "token ids"
            let back = c.ToJson()
            Expect.equal (back.["task_specific_params"].["summarize"].["prefix"].GetValue<string>()) "summarize: " "unknown nested field kept"
            Expect.equal (back.["n_positions"].GetValue<int>()) 512 "unknown field kept"
            Expect.equal (T5Config.FromJson(back, "again")) c "second round trip"
            let path = Path.Combine(Path.GetTempPath(), $"klf-t5-config-{Guid.NewGuid():N}.json")
            File.WriteAllText(path, c.ToJsonString())
            try Expect.equal (T5Config.FromFile path) c "from file" finally File.Delete path
        }
        test "model_type bart and unsupported feed_forward_proj are clear errors" {
            let path = Path.Combine(Path.GetTempPath(), $"klf-bart-{Guid.NewGuid():N}.json")
            File.WriteAllText(path, """{"model_type":"bart","d_model":16}""")
            try
                let e = Expect.throwsC (fun () -> T5Config.FromFile path |> ignore) id
                Expect.stringContains e.Message path "names the file"
                Expect.stringContains e.Message "model_type" "names the field"
                Expect.stringContains e.Message "bart" "names the value"
            finally File.Delete path
            let silu = JsonNode.Parse("""{"model_type":"t5","feed_forward_proj":"gated-silu"}""").AsObject()
            let e = Expect.throwsC (fun () -> T5Config.FromJson(silu, "cfg.json") |> ignore) id
            Expect.stringContains e.Message "feed_forward_proj" "names the field"
            Expect.stringContains e.Message "cfg.json" "names the source"
        }
    ]

[<Tests>]
let tests =
    testSequenced <| testList "t5" [ keyTests; initTests; bucketTests; referenceTests; generationTests; invarianceTests; trainingTests; configTests ]
