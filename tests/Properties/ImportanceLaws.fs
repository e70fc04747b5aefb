/// Laws of importance tracking and score math, each checked against a naive reference written here.
module ImportanceLaws

open System
open Expecto
open FsCheck
open TorchSharp
open Klf.Training
open Klf.Importance
open Klf.SkillUnits

let private config = PropertyConfig.config 100

// ---------- naive references ----------

/// The EMA of the tracker on float32 arrays, element by element, in the reference update order.
let private naiveEma (order: ImportanceOrder) (b1: float) (b2: float) (i: float32[]) (u: float32[]) (w: float32[]) (g: float32[]) =
    let b1f, b2f = float32 b1, float32 b2
    let c1, c2 = float32 (1.0 - b1), float32 (1.0 - b2)
    for k in 0 .. w.Length - 1 do
        let wg = w.[k] * g.[k]
        let s = abs (if order = ImportanceOrder.Second then wg - 0.5f * (wg * wg) else wg)
        i.[k] <- b1f * i.[k] + c1 * s
        u.[k] <- b2f * u.[k] + c2 * abs (s - i.[k])

/// numpy's 'linear' quantile (q a fraction), written out from numpy's documentation and _lerp.
let private naivePercentile (xs: float[]) (q: float) =
    let v = Array.sort xs
    let h = float (v.Length - 1) * q
    let lo = int (floor h)
    if lo >= v.Length - 1 then v.[v.Length - 1]
    else
        let t = h - float lo
        let a, b = v.[lo], v.[lo + 1]
        if t >= 0.5 then b - (b - a) * (1.0 - t) else a + (b - a) * t

let private close (tol: float) (a: float32) (b: float32) (scale: float32) =
    float (abs (a - b)) <= tol * float (max (abs a) (abs b)) + tol * float scale

let private isNormalised (xs: float[]) =
    xs.Length = 0
    || (xs |> Array.forall (fun x -> x >= 0.0 && x <= 1.0)
        && (if Array.distinct xs |> Array.length = 1 then xs |> Array.forall ((=) 0.0)
            else Array.min xs = 0.0 && Array.max xs = 1.0))

let private finite (xs: float[]) = xs |> Array.map (fun x -> if Double.IsFinite x then x else 0.0)

// ---------- the tracker's tensor kernel against the naive EMA ----------

let private emaAgrees (dataSeed: int) (second: bool) (skipFirst: bool) (skipLast: bool) (betaPick: int) =
    let rng = Random(dataSeed)
    let steps = rng.Next(1, 10)
    let b1, b2 = if betaPick % 3 = 0 then 0.85, 0.85 else 0.05 + 0.9 * rng.NextDouble(), 0.05 + 0.9 * rng.NextDouble()
    let order = if second then ImportanceOrder.Second else ImportanceOrder.First
    let opts = ImportanceOptions(Order = order, Beta1 = b1, Beta2 = b2, SkipFirstStep = skipFirst, SkipLastStep = skipLast)
    let shapes = [| [| 3L; 4L |]; [| 5L |] |]
    let sizes = shapes |> Array.map (fun s -> int (Array.fold (*) 1L s))
    use scope = torch.NewDisposeScope()
    let ps = shapes |> Array.mapi (fun k s -> $"p{k}", torch.nn.Parameter(torch.zeros(s)))
    use tracker = new ImportanceTracker(opts)
    tracker.Track(ps |> Seq.map (fun (n, p) -> struct (n, p)))
    let refI = sizes |> Array.map (fun n -> Array.zeroCreate<float32> n)
    let refU = sizes |> Array.map (fun n -> Array.zeroCreate<float32> n)
    let mutable counted = 0
    for step in 0 .. steps - 1 do
        let data =
            [| for n in sizes ->
                Array.init n (fun _ -> float32 (rng.NextDouble() * 4.0 - 2.0)),
                Array.init n (fun _ -> float32 (rng.NextDouble() * 4.0 - 2.0)) |]
        for k in 0 .. ps.Length - 1 do
            let (_, p), (w, g) = ps.[k], data.[k]
            (use _ng = torch.no_grad()
             p.copy_(torch.tensor(w).reshape(shapes.[k])) |> ignore
             if not (isNull p.grad) then p.grad.zero_() |> ignore)
            (p * torch.tensor(g).reshape(shapes.[k])).sum().backward()     // grad = g exactly
        tracker.Update(StepContext(step, steps, 0.0, 0.0, 0.0, nan, [||]))
        let counts = not (skipFirst && step = 0) && not (skipLast && step = steps - 1)
        if counts then
            counted <- counted + 1
            for k in 0 .. ps.Length - 1 do naiveEma order b1 b2 refI.[k] refU.[k] (fst data.[k]) (snd data.[k])
    let scores = tracker.ElementScores()
    let agree =
        ps |> Array.mapi (fun k (name, _) ->
            let struct (si, su) = tracker.Buffers(name)
            let ti, tu = si.data<float32>().ToArray(), su.data<float32>().ToArray()
            let ts = scores.[name].data<float32>().ToArray()
            let scaleI, scaleU = Array.max (Array.map abs refI.[k]), Array.max (Array.map abs refU.[k])
            let refS = Array.map2 (*) refI.[k] refU.[k]
            let scaleS = Array.max (Array.map abs refS)
            Array.forall2 (fun a b -> close 1e-6 a b scaleI) ti refI.[k]
            && Array.forall2 (fun a b -> close 1e-6 a b scaleU) tu refU.[k]
            && Array.forall2 (fun a b -> close 1e-6 a b scaleS) ts refS)
        |> Array.forall id
    for t in scores.Values do t.Dispose()
    agree && tracker.StepsCounted = counted && tracker.StepsSeen = steps

/// Ī and Ū after `steps` updates of parameters of `sizes` (sizes across the vector width, the
/// parallel split and tails), with the CPU kernel on or off: their float32 bits.
let private trackedBits (cpu: bool) (order: ImportanceOrder) (b1: float) (b2: float) (sizes: int64 list) (seed: uint64) =
    let before = Klf.Fusion.CpuTensors.Enabled
    Klf.Fusion.CpuTensors.Enabled <- cpu
    try
        use scope = torch.NewDisposeScope()
        use g = new torch.Generator(seed)
        let ps = sizes |> List.mapi (fun k n -> $"p{k}", torch.nn.Parameter(torch.zeros([| n |])))
        use tracker = new ImportanceTracker(ImportanceOptions(Order = order, Beta1 = b1, Beta2 = b2, SkipFirstStep = false, SkipLastStep = false))
        tracker.Track(ps |> Seq.map (fun (n, p) -> struct (n, p)))
        for step in 0 .. 3 do
            for _, p in ps do
                (use _ng = torch.no_grad()
                 p.copy_(torch.randn(p.shape, generator = g) * 3.0) |> ignore)
                p.grad <- torch.randn(p.shape, generator = g) * 2.0
            tracker.Update(StepContext(step, 4, 0.0, 0.0, 0.0, nan, [||]))
        [ for name, _ in ps do
            let struct (si, su) = tracker.Buffers(name)
            yield si.data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits
            yield su.data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits ]
    finally Klf.Fusion.CpuTensors.Enabled <- before

[<Tests>]
let tests =
    testList "importance laws" [
        testCase "the CPU kernel gives the torch form's bits (orders, small and large lerp weights)" <| fun () ->
            let sizes = [ 1L; 7L; 8L; 9L; 1000L; 65_536L; 65_537L; 300_001L ]
            for order in [ ImportanceOrder.First; ImportanceOrder.Second ] do
                for b1, b2 in [ 0.85, 0.85; 0.3, 0.9; 0.5, 0.6 ] do
                    let on = trackedBits true order b1 b2 sizes 5UL
                    let off = trackedBits false order b1 b2 sizes 5UL
                    List.iteri2 (fun k (a: int[]) (b: int[]) ->
                        let differing = Array.fold2 (fun n x y -> if x <> y then n + 1 else n) 0 a b
                        Expect.equal differing 0 $"{order}, β {b1}/{b2}, buffer {k}: elements whose bits differ") on off
        testPropertyWithConfig config "tracker EMA = naive float[] EMA (orders, betas, skips) within 1e-6 relative to scale" <| fun (dataSeed: int) (second: bool) (skipFirst: bool) (skipLast: bool) (betaPick: NonNegativeInt) ->
            emaAgrees dataSeed second skipFirst skipLast betaPick.Get

        test "Reset zeroes buffers and counters" {
            use scope = torch.NewDisposeScope()
            let p = torch.nn.Parameter(torch.ones(4L))
            use tracker = new ImportanceTracker(ImportanceOptions(SkipFirstStep = false, SkipLastStep = false))
            tracker.Track([ struct ("p", p) ])
            (p * torch.full(4L, 0.5f)).sum().backward()
            tracker.Update(StepContext(0, 3, 0.0, 0.0, 0.0, nan, [||]))
            let struct (i, _) = tracker.Buffers "p"
            Expect.isGreaterThan (i.sum().ToDouble()) 0.0 "scored"
            tracker.Reset()
            let struct (i, u) = tracker.Buffers "p"
            Expect.equal (i.abs().sum().ToDouble() + u.abs().sum().ToDouble()) 0.0 "zero"
            Expect.equal (tracker.StepsCounted, tracker.StepsSeen) (0, 0) "counters"
        }

        test "Attach uses the configured hook list; Detach and Dispose remove the hook; a second Attach throws" {
            let none : struct (string * TorchSharp.Modules.Parameter) seq = Seq.empty
            for point in [ ImportanceHookPoint.AfterOptimizerStep; ImportanceHookPoint.AfterClip ] do
                let hooks = StepHooks()
                let tracker = new ImportanceTracker(ImportanceOptions(HookPoint = point))
                tracker.Attach(hooks, none)
                let counts () = hooks.AfterClip.Count, hooks.AfterOptimizerStep.Count
                Expect.equal (counts ()) (if point = ImportanceHookPoint.AfterClip then (1, 0) else (0, 1)) $"{point}"
                Expect.throwsT<InvalidOperationException> (fun () -> tracker.Attach(hooks, none)) "attached twice"
                tracker.Detach()
                Expect.equal (counts ()) (0, 0) "detached"
                tracker.Attach(hooks, none)
                tracker.Dispose()
                Expect.equal (counts ()) (0, 0) "disposed"
        }

        test "Counts: the default skips step 0 only (the reference gate 0 < step < total); SkipLastStep needs TotalSteps > 0" {
            let d = ImportanceOptions()
            Expect.equal [ for s in 0 .. 4 -> d.Counts(s, 5) ] [ false; true; true; true; true ] "default: first skipped, last counted"
            let o = ImportanceOptions(SkipLastStep = true)
            Expect.equal [ for s in 0 .. 4 -> o.Counts(s, 5) ] [ false; true; true; true; false ] "both skips, 5 steps"
            Expect.equal [ for s in 0 .. 4 -> o.Counts(s, 0) ] [ false; true; true; true; true ] "unknown total: last not skipped"
            Expect.equal [ for s in 0 .. 2 -> ImportanceOptions(SkipFirstStep = false, SkipLastStep = false).Counts(s, 3) ] [ true; true; true ] "no skips"
        }

        testPropertyWithConfig config "MinMax: in [0,1], min 0 and max 1 unless constant (then all 0)" <| fun (xs: NormalFloat[]) ->
            xs |> Array.map (fun x -> x.Get) |> finite |> ImportanceMath.MinMax |> isNormalised

        testPropertyWithConfig config "MinMax is invariant to scaling by a positive constant (1e-12)" <| fun (xs: NormalFloat[]) (PositiveInt k) ->
            let xs = xs |> Array.map (fun x -> x.Get) |> finite |> Array.map (fun x -> x % 1e6)
            let c = float k / 7.0
            let a = ImportanceMath.MinMax xs
            let b = ImportanceMath.MinMax(xs |> Array.map ((*) c))
            Array.forall2 (fun x y -> abs (x - y) <= 1e-12) a b

        testPropertyWithConfig config "MinMaxPerGroup: a varying group normalised on its own, a constant (e.g. single-unit) group on the global scale" <| fun (pairs: (NormalFloat * byte)[]) ->
            let xs = pairs |> Array.map (fun (x, _) -> x.Get) |> finite
            let gs = pairs |> Array.map (fun (_, g) -> string (g % 4uy))
            let r = ImportanceMath.MinMaxPerGroup(xs, gs)
            let global' = ImportanceMath.MinMax xs
            gs |> Array.distinct |> Array.forall (fun g ->
                let idx = [| for i in 0 .. gs.Length - 1 do if gs.[i] = g then i |]
                let rg = idx |> Array.map (fun i -> r.[i])
                let own = idx |> Array.map (fun i -> xs.[i])
                if Array.max own = Array.min own then rg = (idx |> Array.map (fun i -> global'.[i]))
                else isNormalised rg && rg = ImportanceMath.MinMax own)

        testPropertyWithConfig config "Normalise by Layer / ModuleType = per-group min-max over the unit labels" <| fun (pairs: (NormalFloat * byte * byte)[]) ->
            let units =
                pairs |> Array.mapi (fun i (_, l, m) ->
                    SkillUnit($"u{i}", [| UnitSlice($"u{i}") |], UnitAggregation.Mean, $"layer{l % 3uy}", $"type{m % 2uy}", 1L))
            let map = SkillUnitMap("hand", units)
            let xs = pairs |> Array.map (fun (x, _, _) -> x.Get) |> finite
            ImportanceMath.Normalise(map, xs) = ImportanceMath.MinMax xs
            && ImportanceMath.Normalise(map, xs, NormalisationScope.Layer) = ImportanceMath.MinMaxPerGroup(xs, units |> Array.map (fun u -> u.Layer))
            && ImportanceMath.Normalise(map, xs, NormalisationScope.ModuleType) = ImportanceMath.MinMaxPerGroup(xs, units |> Array.map (fun u -> u.ModuleType))

        testPropertyWithConfig config "Percentile = naive numpy-linear reference" <| fun (NonEmptyArray (xs: NormalFloat[])) (q: byte) ->
            let xs = xs |> Array.map (fun x -> x.Get)
            let q = float q / 255.0
            ImportanceMath.Percentile(xs, q) = naivePercentile xs q

        test "Percentile matches hand-computed numpy values" {
            // np.percentile(x, 100 q), default method 'linear'
            for xs, q, expected in [ [| 1.0; 2.0; 3.0; 4.0 |], 0.8, 3.4
                                     [| 1.0; 2.0; 3.0; 4.0 |], 0.5, 2.5
                                     [| 1.0; 2.0; 3.0; 4.0; 5.0 |], 0.8, 4.2
                                     [| 10.0; 0.0; 5.0 |], 0.25, 2.5
                                     [| -3.5; 2.0; 0.0; 8.0 |], 0.9, 6.2
                                     [| 7.0 |], 0.3, 7.0
                                     [| 3.0; 1.0; 2.0 |], 0.0, 1.0
                                     [| 3.0; 1.0; 2.0 |], 1.0, 3.0 ] do
                Expect.floatClose { absolute = 1e-12; relative = 1e-12 } (ImportanceMath.Percentile(xs, q)) expected $"{xs} q={q}"
        }

        testPropertyWithConfig config "TopFraction flags exactly the scores strictly above the naive percentile" <| fun (xs: NormalFloat[]) (f: byte) ->
            let xs = xs |> Array.map (fun x -> x.Get)
            let f = float f / 255.0
            let flags = ImportanceMath.TopFraction(xs, f)
            if xs.Length = 0 then flags.Length = 0
            else
                let t = naivePercentile xs (1.0 - f)
                flags = (xs |> Array.map (fun x -> x > t))

        testPropertyWithConfig config "TopFraction 0.2 on n distinct scores flags exactly ceil((n-1)/5)" <| fun (xs: NormalFloat[]) ->
            let xs = xs |> Array.map (fun x -> x.Get) |> Array.distinct
            let n = xs.Length
            let flagged = ImportanceMath.TopFraction(xs) |> Array.filter id |> Array.length
            flagged = (if n = 0 then 0 else (n - 1 + 4) / 5)
            && flagged = (if n = 0 then 0 else n - 1 - int (floor (float (n - 1) * 0.8)))

        test "TopFraction 0.2 on 0..n-1 flags ceil((n-1)/5) for every n up to 2000" {
            for n in 1 .. 2000 do
                let flagged = ImportanceMath.TopFraction(Array.init n float) |> Array.filter id |> Array.length
                Expect.equal flagged ((n - 1 + 4) / 5) $"n = {n}"
        }

        testPropertyWithConfig config "Accumulate stays in [0,1] (min 0 / max 1 unless constant) and equals MinMax(g·prev + (1-g)·cur)" <| fun (pairs: (NormalFloat * NormalFloat)[]) (g: byte) ->
            let prev = pairs |> Array.map (fun (a, _) -> a.Get) |> finite |> ImportanceMath.MinMax
            let cur = pairs |> Array.map (fun (_, b) -> b.Get) |> finite |> ImportanceMath.MinMax
            let gamma = float g / 255.0
            let acc = ImportanceMath.Accumulate(prev, cur, gamma)
            isNormalised acc && acc = ImportanceMath.MinMax(Array.map2 (fun p c -> gamma * p + (1.0 - gamma) * c) prev cur)
    ]
