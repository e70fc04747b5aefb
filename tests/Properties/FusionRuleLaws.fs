/// Every shipped fusion rule against a naive float[] reference written here, plus the library's
/// FusionLaws on every rule. Cases come from FusionLaws.caseGen (random shapes, float32/float64).
module FusionRuleLaws

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Klf.SkillUnits
open Klf.Fusion
open Klf.Laws

let private config = PropertyConfig.config 100

type Case = FusionLaws.Case

let private ctx (c: Case) =
    let n = c.Shape |> Array.fold (*) 1L
    UnitFusionContext(SkillUnit("u", [| UnitSlice("w") |], UnitAggregation.Mean, "other", "w", n), c.PreviousScore, c.CurrentScore, c.Category, c.Seed)

/// Runs a rule on a case (CPU) and returns the output as doubles.
let private fuse (rule: IFusionRule) (c: Case) : float[] =
    use _s = torch.NewDisposeScope()
    let t (v: float[]) = torch.tensor(v, dtype = torch.ScalarType.Float64).to_type(c.Dtype).reshape(c.Shape)
    let out = rule.Fuse(FusionInputs(t c.Base, t c.Previous, t c.Current), ctx c)
    out.to_type(torch.ScalarType.Float64).flatten().data<float>().ToArray()

/// Arithmetic in the case's dtype: float32 cases round each operation to float32, as torch does.
let private r (c: Case) (x: float) = if c.Dtype = torch.ScalarType.Float32 then float (float32 x) else x

let private close (expected: float[]) (actual: float[]) =
    expected.Length = actual.Length
    && Array.forall2 (fun (e: float) (a: float) -> abs (e - a) <= 1e-5 + 1e-5 * abs e) expected actual

let private agrees name (expected: float[]) (actual: float[]) =
    if close expected actual then true
    else failwithf "%s: expected %A, got %A" name expected actual

let private interpolate (c: Case) lambda =
    if lambda = 0.0 then Array.copy c.Previous
    elif lambda = 1.0 then Array.copy c.Current
    else Array.map2 (fun p q -> p + lambda * (q - p)) c.Previous c.Current

/// Naive TIES: trim each task vector to its top ⌈k·n⌉ magnitudes (ties kept), elect signs by the sum,
/// average the agreeing non-zero entries.
let tiesReference (c: Case) (k: float) =
    let n = c.Base.Length
    let trim (tv: float[]) =
        let keep = min n (max 1 (int (ceil (k * float n - 1e-9))))
        let thr = (tv |> Array.map abs |> Array.sortDescending).[keep - 1]
        tv |> Array.map (fun v -> if abs v >= thr then v else 0.0)
    let tp = trim (Array.map2 (fun p b -> r c (p - b)) c.Previous c.Base)
    let tc = trim (Array.map2 (fun q b -> r c (q - b)) c.Current c.Base)
    Array.init n (fun i ->
        let s = float (sign (tp.[i] + tc.[i]))
        let agreeing = [ tp.[i]; tc.[i] ] |> List.filter (fun v -> v <> 0.0 && float (sign v) = s)
        let merged = if agreeing.IsEmpty then 0.0 else List.sum agreeing / float agreeing.Length
        c.Base.[i] + merged)

let private prop name body = testPropertyWithConfig config name (Prop.forAll (Arb.fromGen FusionLaws.caseGen) body)

let private lawTests (rule: IFusionRule) extra =
    testList rule.Name [ for name, run in FusionLaws.cases extra rule -> testCase name run ]

[<Tests>]
let tests =
    testList "fusion rules" [
        prop "kif-static = prev + λ(category)·(cur − prev), λ from the table" <| fun c ->
            let rule = KifStaticRule()
            let lambda = match c.Category with
                         | UnitCategory.Shared -> 0.3 | UnitCategory.PreviousOnly -> 0.0
                         | UnitCategory.CurrentOnly -> 1.0 | _ -> 0.5
            rule.LambdaFor(ctx c) = lambda && agrees "static" (interpolate c lambda) (fuse rule c)

        prop "kif-static with a custom table uses it" <| fun c ->
            let rule = KifStaticRule(shared = 0.6, previousOnly = 0.1, currentOnly = 0.9, neither = 0.25)
            let lambda = rule.LambdaOf c.Category
            agrees "static custom" (interpolate c lambda) (fuse rule c)

        prop "kif-adaptive: λ = exp(Ŝ/τ)/(exp(Ŝ/τ)+exp(Â/τ)) in (0,1), c_prev + c_cur = 1, fused = prev + λ(cur − prev)" <| fun c ->
            let rule = KifAdaptiveRule()
            let es, ea = exp (c.CurrentScore / 0.25), exp (c.PreviousScore / 0.25)
            let lambda = es / (es + ea)
            let w = rule.Weights(c.PreviousScore, c.CurrentScore)
            abs (w.Current - lambda) < 1e-12 && abs (w.Previous + w.Current - 1.0) < 1e-15
            && w.Current > 0.0 && w.Current < 1.0 && rule.LambdaFor(ctx c) = w.Current
            && agrees "adaptive" (Array.map2 (fun p q -> p + lambda * (q - p)) c.Previous c.Current) (fuse rule c)

        test "kif-adaptive is stable for extreme scores and equal scores give ½" {
            let rule = KifAdaptiveRule(0.01)
            let w = rule.Weights(0.0, 1000.0)
            Expect.equal (w.Previous + w.Current) 1.0 "sum"
            Expect.isTrue (Double.IsFinite w.Previous && w.Current = 1.0) "no overflow"
            Expect.equal (KifAdaptiveRule().Weights(0.4, 0.4)) (AdaptiveWeights(0.5, 0.5)) "equal scores"
        }

        prop "average = (prev + cur)/2" <| fun c ->
            agrees "average" (Array.map2 (fun p q -> (p + q) / 2.0) c.Previous c.Current) (fuse (AverageRule()) c)

        prop "task arithmetic = base + λ((prev − base) + (cur − base))" <| fun c ->
            let expected = Array.map3 (fun b p q -> b + 0.7 * ((p - b) + (q - b))) c.Base c.Previous c.Current
            agrees "task arithmetic" expected (fuse (TaskArithmeticRule(0.7)) c)

        prop "TIES (k = 0.2, λ = 1) = the naive trim / elect / disjoint mean" <| fun c ->
            agrees "ties" (tiesReference c 0.2) (fuse (TiesRule()) c)

        prop "TIES with k = 0.5 and λ = 0.5" <| fun c ->
            let half = tiesReference c 0.5 |> Array.mapi (fun i v -> c.Base.[i] + 0.5 * (v - c.Base.[i]))
            agrees "ties 0.5" half (fuse (TiesRule(0.5, 0.5)) c)

        prop "DARE = prev + mask⊙(cur − prev)/(1 − p), mask from the unit seed" <| fun c ->
            let rule = DareRule()
            let mask =
                use m = rule.KeepMask(c.Shape, c.Seed, torch.CPU)
                m.flatten().data<bool>().ToArray()
            let expected = Array.init mask.Length (fun i -> if mask.[i] then c.Previous.[i] + (c.Current.[i] - c.Previous.[i]) / 0.1 else c.Previous.[i])
            agrees "dare" expected (fuse rule c)

        prop "DARE with p below ½ (dropped positions drawn) = prev + mask⊙(cur − prev)/(1 − p)" <| fun c ->
            let rule = DareRule(0.3, 0.8)
            let mask =
                use m = rule.KeepMask(c.Shape, c.Seed, torch.CPU)
                m.flatten().data<bool>().ToArray()
            let expected = Array.init mask.Length (fun i -> if mask.[i] then c.Previous.[i] + (c.Current.[i] - c.Previous.[i]) * (0.8 / 0.7) else c.Previous.[i])
            agrees "dare 0.3" expected (fuse rule c)

        test "KthLargest (bracketed by a sample above 65,536 elements) equals kthvalue: sizes, k, ties, constant and skewed values" {
            let rng = Random(17)
            for n in [ 10; 65536; 65537; 100000; 300001 ] do
                for kind in [ "normal"; "ties"; "constant"; "skewed"; "sorted" ] do
                    use values =
                        match kind with
                        | "normal" -> torch.randn(int64 n).abs()
                        | "ties" -> torch.randint(0L, 5L, [| int64 n |]).to_type(torch.ScalarType.Float32)
                        | "constant" -> torch.ones(int64 n)
                        | "skewed" -> (let e = torch.randn(int64 n).exp() in e * e * e * e)
                        | _ -> torch.arange(int64 n).to_type(torch.ScalarType.Float32)
                    for k in [ 1L; 2L; int64 (n / 5); int64 (n / 2); int64 n - 1L; int64 n ] |> List.filter (fun k -> k >= 1L) |> List.distinct do
                        use fast = FusionKernels.KthLargest(values, k)
                        let struct (slow, idx) = values.kthvalue(int64 n - k + 1L, 0L, false)
                        use _s = slow
                        use _i = idx
                        Expect.equal (fast.item<float32>()) (slow.item<float32>()) $"{kind}, n {n}, k {k}"
            ignore rng
        }

        test "DARE: the same seed gives the same mask regardless of the global generator; keeps ≈ 1 − p" {
            let rule = DareRule(0.9)
            use a = rule.KeepMask([| 200L; 100L |], 42L, torch.CPU)
            torch.manual_seed 7L |> ignore
            use _noise = torch.rand(1000L)
            use b = rule.KeepMask([| 200L; 100L |], 42L, torch.CPU)
            use c = rule.KeepMask([| 200L; 100L |], 43L, torch.CPU)
            Expect.isTrue (a.eq(b).all().item<bool>()) "same seed, same mask"
            Expect.isFalse (a.eq(c).all().item<bool>()) "another seed, another mask"
            let kept = a.to_type(torch.ScalarType.Float64).mean().item<float>()
            Expect.floatClose { absolute = 0.01; relative = 0.0 } kept 0.1 "keep rate"
            // Pinned masks (libtorch's CPU generator): a seed gives these in every process, so a fusion
            // rerun elsewhere drops the same elements.
            Expect.equal (a.sum().item<int64>()) 1998L "seed 42, 200 × 100, p = 0.9: 1998 kept"
            use small = DareRule(0.5).KeepMask([| 32L |], 42L, torch.CPU)
            let bits = String.Join("", small.data<bool>().ToArray() |> Array.map (fun b -> if b then "1" else "0"))
            Expect.equal bits "11110110000100011111001001101101" "seed 42, 32 elements, p = 0.5"
            // p below ½ draws the dropped positions instead: the keep rate is still 1 − p.
            use dense = DareRule(0.3).KeepMask([| 200L; 100L |], 42L, torch.CPU)
            Expect.equal (dense.sum().item<int64>()) 13990L "seed 42, 200 × 100, p = 0.3: 13990 kept"
            Expect.floatClose { absolute = 0.01; relative = 0.0 } (float 13990 / 20000.0) 0.7 "keep rate 0.7"
        }

        prop "MagMax = base + the larger-magnitude task vector (ties: current)" <| fun c ->
            let expected =
                Array.init c.Base.Length (fun i ->
                    let tp, tc = r c (c.Previous.[i] - c.Base.[i]), r c (c.Current.[i] - c.Base.[i])
                    c.Base.[i] + (if abs tc >= abs tp then tc else tp))
            agrees "magmax" expected (fuse (MagMaxRule()) c)

        test "unit seeds are the documented SHA-256 values (the same in every process and on every platform)" {
            // Golden values computed outside .NET (Python's hashlib): the first 8 bytes, little-endian
            // signed, of SHA-256(seed as 8 little-endian bytes ++ UTF-8 unit id).
            let golden =
                [ 1L, "model.layers.0.self_attn.q_proj.weight", -572455532777360137L
                  1L, "a", -696468547582205522L
                  2L, "a", 4698737520274524177L
                  0L, "model.layers.3.mlp.down_proj.neuron16.5", -4102723386060144643L
                  -7L, "é", 6840328953798108735L ]
            for seed, id, expected in golden do
                Expect.equal (ModelFusion.UnitSeed(seed, id)) expected $"UnitSeed({seed}, {id})"
        }

        test "Categories.Classify" {
            Expect.equal (Categories.Classify([| true; true; false; false |], [| true; false; true; false |]))
                [| UnitCategory.Shared; UnitCategory.PreviousOnly; UnitCategory.CurrentOnly; UnitCategory.Neither |] "table"
        }

        testList "laws" [
            lawTests (KifStaticRule()) [ FusionLaws.Between; FusionLaws.RespectsCategories ]
            lawTests (KifAdaptiveRule()) [ FusionLaws.Between ]
            lawTests (AverageRule()) [ FusionLaws.Between ]
            lawTests (TaskArithmeticRule()) []
            lawTests (TiesRule()) []
            lawTests (DareRule()) []
            lawTests (MagMaxRule()) []
        ]
    ]
