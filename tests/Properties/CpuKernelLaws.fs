/// The CPU fusion kernels (CpuFusionKernels, CpuLerp, CpuSelection, TorchCpuRandom) against the
/// rules' torch forms, bit for bit, and against naive float64 references written here, on seeded
/// tensors: whole tensors and row or column units, sizes below and above the selection's sampling
/// threshold and the parallel split, with the previous model and with a separate base.
module CpuKernelLaws

open System
open Expecto
open TorchSharp
open Klf.SkillUnits
open Klf.Fusion

let private bits (t: torch.Tensor) = t.contiguous().data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits
let private values (t: torch.Tensor) = t.contiguous().data<float32>().ToArray() |> Array.map float

/// Units of `rows` indices along `dim` of a [r, c] tensor (or one whole unit when dim < 0), with
/// seeded categories and scores.
let private slicesFor (rng: Random) (shape: int64[]) (dim: int) (rows: int) (rule: IFusionRule) =
    let unitsOf (slices: UnitSlice list) =
        [ for i, s in List.indexed slices ->
            let n = (shape |> Array.fold (*) 1L) / (if s.IsWhole then 1L else shape[dim] / s.Length)
            let unit = SkillUnit($"u{i}", [| s |], UnitAggregation.Mean, "layer", "w", n)
            let category = enum<UnitCategory> (rng.Next 4)
            let context = UnitFusionContext(unit, rng.NextDouble(), rng.NextDouble(), category, int64 (rng.Next()))
            SliceToFuse(unit, s, context, rule.LambdaFor context) ]
    if dim < 0 then unitsOf [ UnitSlice("w") ]
    else
        let size = shape[dim]
        unitsOf [ for start in 0L .. int64 rows .. size - 1L -> UnitSlice("w", dim, start, min (int64 rows) (size - start)) ]

/// Fuses with the CPU kernels on or off: the output's float32 bits and values.
let private fuseWith (cpu: bool) (rule: IFusionRule) (cur: torch.Tensor) (prev: torch.Tensor) (basis: torch.Tensor option) (slices: SliceToFuse list) =
    let before = CpuTensors.Enabled
    CpuTensors.Enabled <- cpu
    try
        use out = cur.clone()
        TensorFusion.Fuse(rule, out, prev, Option.toObj basis, ResizeArray slices) |> ignore
        bits out, values out
    finally CpuTensors.Enabled <- before

type private Case = { Rows: int64; Cols: int64; Dim: int; UnitRows: int; Seed: int; WithBase: bool }

let private cases =
    [ for seed, (rows, cols) in List.indexed [ (3L, 5L); (17L, 33L); (64L, 257L); (300L, 301L); (512L, 700L); (1024L, 1376L) ] do
        for dim in [ -1; 0; 1 ] do
            for withBase in [ false; true ] ->
                { Rows = rows; Cols = cols; Dim = dim; UnitRows = 16; Seed = seed; WithBase = withBase } ]

let private inputs (c: Case) =
    use g = new torch.Generator(uint64 (c.Seed + 1))
    let b = torch.randn([| c.Rows; c.Cols |], generator = g)
    let p = b + torch.randn([| c.Rows; c.Cols |], generator = g) * 0.01
    let q = p + torch.randn([| c.Rows; c.Cols |], generator = g) * 0.01
    b, p, q

let private name (c: Case) = $"""{c.Rows}x{c.Cols} {(match c.Dim with -1 -> "whole" | 0 -> "rows" | _ -> "columns")}{(if c.WithBase then ", base" else "")}"""

/// Naive references over float64 copies of the inputs, per unit slice: the rule's definition.
let private reference (rule: IFusionRule) (c: Case) (b: float[]) (p: float[]) (q: float[]) (slices: SliceToFuse list) : float[] =
    let cols = int c.Cols
    let out = Array.copy q
    let indices (s: UnitSlice) =
        [| for i in 0 .. b.Length - 1 do
             let r, col = i / cols, i % cols
             if s.IsWhole || (s.Dim = 0 && int64 r >= s.Start && int64 r < s.Start + s.Length) || (s.Dim = 1 && int64 col >= s.Start && int64 col < s.Start + s.Length) then yield i |]
    let basis = if c.WithBase then b else p
    for s in slices do
        let ix = indices s.Slice
        match rule with
        | :? IInterpolatingRule ->
            for i in ix do out[i] <- p[i] + s.Lambda * (q[i] - p[i])
        | :? TaskArithmeticRule ->
            for i in ix do out[i] <- basis[i] + (p[i] - basis[i]) + (q[i] - basis[i])
        | :? MagMaxRule ->
            for i in ix do
                let tp, tc = p[i] - basis[i], q[i] - basis[i]
                out[i] <- basis[i] + (if abs tc >= abs tp then tc else tp)
        | :? TiesRule as t ->
            let keep = min ix.Length (max 1 (int (ceil (t.KeepFraction * float ix.Length - 1e-9))))
            let trim (tv: float[]) =
                let thr = (tv |> Array.map abs |> Array.sortDescending)[keep - 1]
                tv |> Array.map (fun v -> if abs v >= thr then v else 0.0)
            // Task vectors rounded to float32, as the rule computes them.
            let tv (x: float[]) = ix |> Array.map (fun i -> float (float32 x[i] - float32 basis[i]))
            let tp, tc = trim (tv p), trim (tv q)
            ix |> Array.iteri (fun j i ->
                let e = sign (tp[j] + tc[j])
                let agreeing = [ tp[j]; tc[j] ] |> List.filter (fun v -> v <> 0.0 && sign v = e)
                out[i] <- basis[i] + t.Scale * (if agreeing.IsEmpty then 0.0 else List.sum agreeing / float agreeing.Length))
        | :? DareRule as d ->
            use mask = d.KeepMask([| int64 ix.Length |], s.Context.Seed, torch.CPU)
            let kept = mask.data<bool>().ToArray()
            ix |> Array.iteri (fun j i -> out[i] <- if kept[j] then p[i] + d.Scale * (q[i] - p[i]) / (1.0 - d.DropRate) else p[i])
        | _ -> failwith "no reference"
    out

let private rules () : IFusionRule list =
    [ KifStaticRule(); KifAdaptiveRule(); AverageRule(); TaskArithmeticRule(); MagMaxRule(); TiesRule(); TiesRule(0.5, 0.7); DareRule(); DareRule(0.3, 0.8) ]

[<Tests>]
let tests =
    testList "CPU fusion kernels" [
        for i, rule in List.indexed (rules ()) do
            testCase $"{rule.Name} #{i}: the CPU kernels give the torch form's bits and the naive values" <| fun () ->
                for c in cases do
                    // DARE ignores a base; column slices reach TIES and DARE gathered (CPU) or as contiguous copies (torch).
                    let b, p, q = inputs c
                    use _b = b
                    use _p = p
                    use _q = q
                    let slices = slicesFor (Random(c.Seed)) [| c.Rows; c.Cols |] c.Dim c.UnitRows rule
                    let basis = if c.WithBase then Some b else None
                    let cpuBits, cpuValues = fuseWith true rule q p basis slices
                    let torchBits, _ = fuseWith false rule q p basis slices
                    let differing = Array.fold2 (fun n x y -> if x <> y then n + 1 else n) 0 cpuBits torchBits
                    Expect.equal differing 0 $"{name c}: elements whose bits differ from the torch form"
                    let expected = reference rule c (values b) (values p) (values q) slices
                    // Inputs are O(1): float32 rounding of a few operations stays within a few 1e-7.
                    let worst = Array.fold2 (fun m (e: float) (a: float) -> max m (abs (e - a) / (1e-5 + 1e-5 * abs e))) 0.0 expected cpuValues
                    Expect.isLessThan worst 1.0 $"{name c}: largest difference from the naive reference, in units of 1e-5·(1 + |value|)"

        testCase "TorchCpuRandom draws torch.rand's float64 stream, bit for bit" <| fun () ->
            for seed in [ 0UL; 1UL; 7UL; 123456789012345UL; UInt64.MaxValue ] do
                use g = new torch.Generator(seed)
                use t = torch.rand(100_003L, dtype = torch.ScalarType.Float64, generator = g)
                let expected = t.data<float>().ToArray()
                let r = TorchCpuRandom(seed)
                let actual = Array.init expected.Length (fun _ -> r.NextDouble())
                Expect.sequenceEqual actual expected $"seed {seed}"

        testCase "TorchCpuRandom's block draws are its single draws, across twists and odd block sizes" <| fun () ->
            for seed in [ 3UL; 99UL ] do
                let one = TorchCpuRandom(seed)
                let expected = Array.init 50_000 (fun _ -> one.NextDouble())
                let blocks = TorchCpuRandom(seed)
                let actual = ResizeArray<float>()
                let sizes = [| 1; 7; 311; 312; 313; 624; 1000; 5 |]
                let mutable i = 0
                while actual.Count < expected.Length do
                    let buffer = Array.zeroCreate (min sizes[i % sizes.Length] (expected.Length - actual.Count))
                    blocks.NextDoubles(Span buffer)
                    actual.AddRange buffer
                    i <- i + 1
                Expect.sequenceEqual actual expected $"seed {seed}"

        testCase "DARE's CPU draws give the torch form's output at every drop rate, on long slices" <| fun () ->
            use g = new torch.Generator(17UL)
            use p = torch.randn([| 2_000_003L |], generator = g)
            use q = p + torch.randn([| 2_000_003L |], generator = g) * 0.01
            for drop in [ 0.0; 0.01; 0.3; 0.5; 0.9; 0.999; 0.999999 ] do
                let rule = DareRule(drop, 0.8)
                for seed in [ 0L; 5L; -3L ] do
                    let unit = SkillUnit("u", [| UnitSlice("w") |], UnitAggregation.Mean, "layer", "w", 2_000_003L)
                    let context = UnitFusionContext(unit, 0.5, 0.5, UnitCategory.Shared, seed)
                    let slices = [ SliceToFuse(unit, UnitSlice("w"), context, rule.LambdaFor context) ]
                    let cpuBits, _ = fuseWith true rule q p None slices
                    let torchBits, _ = fuseWith false rule q p None slices
                    let differing = Array.fold2 (fun n x y -> if x <> y then n + 1 else n) 0 cpuBits torchBits
                    Expect.equal differing 0 $"drop {drop}, seed {seed}: elements whose bits differ from the torch form"

        testCase "CpuSelection finds torch's k-th largest magnitude, sampled or not" <| fun () ->
            let rng = Random(9)
            for n in [ 1L; 2L; 100L; 4_096L; 4_097L; 8_192L; 65_536L; 65_537L; 300_001L; 2_000_000L ] do
                use g = new torch.Generator(uint64 n)
                use x = torch.randn([| n |], generator = g)
                // Repeated values too: a coarse grid.
                use y = (torch.randn([| n |], generator = g) * 4.0).round_()
                use d = (x - y).abs()
                for k in [ 1L; n; max 1L (n / 5L); int64 (rng.NextInt64(1L, n + 1L)) ] do
                    use v = d.kthvalue(n - k + 1L, 0L, false) |> fun struct (v, i) -> (i.Dispose(); v)
                    let expected = v.item<float32>()
                    let actual = CpuSelection.KthLargestAbsDifference(CpuTensors.Pointer x, CpuTensors.Pointer y, n, k)
                    Expect.equal actual expected $"n {n}, k {k}"

        testCase "CpuSelection on skewed, constant and clustered magnitudes, on one core or both" <| fun () ->
            let rng = Random(11)
            for n in [ 5_000L; 8_192L; 100_000L; 700_001L ] do
                use g = new torch.Generator(uint64 n + 17UL)
                use y = torch.zeros([| n |])
                let cases =
                    [ "log-uniform over 30 octaves", (torch.rand([| n |], generator = g) * -20.0).exp_()
                      "constant", torch.full([| n |], (0.25f).ToScalar())
                      "zeros", torch.zeros([| n |])
                      "two values", (torch.rand([| n |], generator = g).gt((0.7).ToScalar()).to_type(torch.ScalarType.Float32) * 3.0 + 1.0)
                      "a cluster and outliers", torch.where(torch.rand([| n |], generator = g).lt((0.001).ToScalar()), torch.randn([| n |], generator = g) * 1e6, 1.0f + torch.rand([| n |], generator = g) * 1e-6) ]
                for name, x in cases do
                    use x = x
                    use d = x.abs()
                    for k in [ 1L; n; max 1L (n / 5L); int64 (rng.NextInt64(1L, n + 1L)) ] do
                        use v = d.kthvalue(n - k + 1L, 0L, false) |> fun struct (v, i) -> (i.Dispose(); v)
                        let expected = v.item<float32>()
                        for onCores in [ false; true ] do
                            let actual = CpuSelection.KthLargestAbsDifference(CpuTensors.Pointer x, CpuTensors.Pointer y, n, k, onCores)
                            Expect.equal actual expected $"{name}, n {n}, k {k}, on both cores {onCores}"
    ]
