/// ModelFusion.Apply on tiny LLaMA models: categories honoured bit for bit, parameters written in
/// place (same objects), NaN refused with the model untouched, the report.
module FusionTests

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.SkillUnits
open Klf.Fusion

let private llama (seed: int64) =
    torch.manual_seed seed |> ignore
    LanguageModels.FromPreset "llama-tiny"

/// One whole-tensor unit per trainable parameter (what the full fine-tuning partitioner will produce).
let wholeTensorMap (model: ILanguageModel) =
    let units =
        [| for struct (name, p) in model.Module.named_parameters() do
            if p.requires_grad then
                let layer = if name.StartsWith "model.layers." then String.Join(".", name.Split('.') |> Array.take 3) else "other"
                SkillUnit(name, [| UnitSlice(name) |], UnitAggregation.Mean, layer, name.Split('.') |> Array.rev |> Array.item 1, p.numel()) |]
    SkillUnitMap("test-whole", units)

/// Disposes the model's module at the end of a `use`.
let private owned (model: ILanguageModel) = { new IDisposable with member _.Dispose() = model.Dispose() }

let private parameters (model: ILanguageModel) =
    model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq

/// The raw bits of a float32 tensor (NaN-safe, -0 ≠ +0).
let private bits (t: torch.Tensor) =
    t.contiguous().data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits

let private perturb (model: ILanguageModel) (seed: int64) =
    use _ng = torch.no_grad()
    use g = new torch.Generator(uint64 seed)
    for p in model.Module.parameters() do
        use noise = torch.randn(p.shape, generator = g) * 0.01
        p.add_(noise) |> ignore

let private categoriesFor (map: SkillUnitMap) =
    Array.init map.Count (fun i -> [| UnitCategory.PreviousOnly; UnitCategory.CurrentOnly; UnitCategory.Shared; UnitCategory.Neither |].[i % 4])

let private scores (map: SkillUnitMap) (k: int) = Array.init map.Count (fun i -> float ((i * k) % 11) / 10.0)

[<Tests>]
let tests =
    testSequenced <| testList "fusion" [
        test "static rule on llama-tiny: PreviousOnly = old, CurrentOnly = new (bit-identical), same Parameter objects, report" {
            let m = llama 1L
            use _model = owned m
            use previous = ParameterSnapshot.TakeTrainable m
            perturb m 2L
            use current = ParameterSnapshot.TakeTrainable m
            let map = wholeTensorMap m
            let cats = categoriesFor map
            let before = parameters m
            let report = ModelFusion.Apply(m, previous, FusionPlan(map, scores map 3, scores map 7, cats), KifStaticRule(), 5L)
            let after = parameters m
            for KeyValue (n, p) in before do Expect.isTrue (Object.ReferenceEquals(p, after.[n])) $"same Parameter object: {n}"
            for i in 0 .. map.Count - 1 do
                let id = map.Units.[i].Id
                let live = after.[id]
                match cats.[i] with
                | UnitCategory.PreviousOnly -> Expect.equal (bits live) (bits previous.[id]) $"old unit kept: {id}"
                | UnitCategory.CurrentOnly -> Expect.equal (bits live) (bits current.[id]) $"new unit taken: {id}"
                | c ->
                    let lambda = if c = UnitCategory.Shared then 0.3 else 0.5
                    use expected = previous.[id] + (current.[id] - previous.[id]) * lambda
                    Expect.isTrue (live.allclose(expected, 1e-6, 1e-7)) $"interpolated: {id}"
            Expect.equal report.Units.Count map.Count "one report per unit"
            Expect.equal report.Rule "kif-static" "rule"
            for i in 0 .. map.Count - 1 do
                let u = report.Units.[i]
                Expect.equal u.UnitId map.Units.[i].Id "order"
                Expect.equal u.Category cats.[i] "category"
                Expect.equal u.Lambda (KifStaticRule().LambdaOf cats.[i]) "λ"
            Expect.equal (report.PreviousOnly + report.CurrentOnly + report.Shared + report.Neither) map.Count "counts"
            Expect.equal report.CurrentOnly (cats |> Array.filter ((=) UnitCategory.CurrentOnly) |> Array.length) "current-only count"
            Expect.equal report.ElementCount (map.Units |> Seq.sumBy (fun u -> u.ElementCount)) "elements"
            for KeyValue (_, p) in after do Expect.isTrue p.requires_grad "still trainable"
        }

        test "in place or through temporaries, Apply writes exactly what each slice's Fuse gives: whole, neuron and head units, every rule, with and without a base" {
            let reference (m: ILanguageModel) (previous: ParameterSnapshot) (basis: ParameterSnapshot option) (plan: FusionPlan) (rule: IFusionRule) seed =
                // Slice by slice from the untouched values, as the rule defines it.
                let live = parameters m
                use _ng = torch.no_grad()
                [ for i in 0 .. plan.Map.Count - 1 do
                    let unit = plan.Map.Units[i]
                    let ctx = UnitFusionContext(unit, plan.PreviousScores[i], plan.CurrentScores[i], plan.Categories[i], ModelFusion.UnitSeed(seed, unit.Id))
                    for slice in unit.Slices do
                        use cur = slice.View(live[slice.Parameter])
                        use prev = slice.View(previous[slice.Parameter])
                        use b = match basis with Some s -> slice.View(s[slice.Parameter]) | None -> prev.alias()
                        let inputs = FusionInputs((if basis.IsSome then b else prev), prev, cur)
                        use fused = rule.Fuse(inputs, ctx)
                        yield slice.ToString(), bits fused ]
            let rules : IFusionRule list = [ KifStaticRule(); KifStaticRule(0.25, 0.0, 1.0, 0.75); KifAdaptiveRule(); AverageRule(); TaskArithmeticRule(); TaskArithmeticRule(0.6); MagMaxRule(0.8); TiesRule(); DareRule() ]
            let partitioners : ISkillUnitPartitioner list = [ FullFineTuningPartitioner(); NeuronPartitioner(16); NeuronPartitioner(1); AttentionHeadPartitioner() ]
            for partitioner in partitioners do
                for withBase in [ false; true ] do
                    for rule in rules do
                        let m = llama 21L
                        use _model = owned m
                        use baseSnap = ParameterSnapshot.TakeTrainable m
                        perturb m 22L
                        use previous = ParameterSnapshot.TakeTrainable m
                        perturb m 23L
                        use current = ParameterSnapshot.TakeTrainable m
                        let map = partitioner.Partition m
                        let rng = Random(5)
                        let cats = Array.init map.Count (fun _ -> [| UnitCategory.PreviousOnly; UnitCategory.CurrentOnly; UnitCategory.Shared; UnitCategory.Neither |].[rng.Next 4])
                        let plan = FusionPlan(map, scores map 3, scores map 7, cats)
                        let basis = if withBase then Some baseSnap else None
                        let expected = reference m previous basis plan rule 4L
                        ModelFusion.Apply(m, previous, plan, rule, 4L, (match basis with Some b -> b | None -> null)) |> ignore
                        let live = parameters m
                        let byName = map.Units |> Seq.collect (fun u -> u.Slices) |> Seq.map (fun s -> s.ToString(), s) |> Map.ofSeq
                        for name, want in expected do
                            let slice = byName[name]
                            use got = slice.View(live[slice.Parameter])
                            if bits got <> want then failtestf "%s, %s, base %b: %s differs from the rule's Fuse" rule.Name partitioner.Name withBase name
        }

        test "in-place fusion refuses values whose interpolation would overflow, and keeps negative zeros of untouched units" {
            let m = llama 31L
            use _model = owned m
            let map = NeuronPartitioner(16).Partition m
            let victim = map.Units |> Seq.find (fun u -> u.Slices.Count > 1)
            let slice = victim.Slices[0]
            use previous = ParameterSnapshot.TakeTrainable m
            do
                use _ng = torch.no_grad()
                use v = slice.View((parameters m)[slice.Parameter])
                v.fill_(3.0e38) |> ignore
            let before = parameters m |> Map.map (fun _ p -> bits p)
            let plan = FusionPlan(map, scores map 3, scores map 7, Array.create map.Count UnitCategory.Neither)
            let ex = Expect.throwsC (fun () -> ModelFusion.Apply(m, previous, plan, KifStaticRule(), 1L) |> ignore) id
            Expect.isTrue (ex :? UnsafeFusionException) $"refused: {ex.Message}"
            Expect.stringContains ex.Message "overflow" "says why"
            for KeyValue (n, b) in parameters m |> Map.map (fun _ p -> bits p) do Expect.equal b before[n] $"untouched: {n}"
            // Negative zeros on either side: units taking θ_k (λ 1) and units taking θ̄_{k−1} (λ 0) give
            // exactly those bits, also where units of both kinds share a tensor (neuron blocks).
            let negativeZero (m: ILanguageModel) =
                use _ng = torch.no_grad()
                for p in m.Module.parameters() do p.zero_().neg_() |> ignore
            for zerosBefore in [ false; true ] do
                let m2 = llama 32L
                use _model2 = owned m2
                if zerosBefore then negativeZero m2
                use prev2 = ParameterSnapshot.TakeTrainable m2
                if zerosBefore then perturb m2 33L else negativeZero m2
                let cur2 = parameters m2 |> Map.map (fun _ p -> p.clone())
                let map2 = NeuronPartitioner(1).Partition m2
                let cats2 = Array.init map2.Count (fun i -> if i % 2 = 0 then UnitCategory.CurrentOnly else UnitCategory.PreviousOnly)
                ModelFusion.Apply(m2, prev2, FusionPlan(map2, scores map2 3, scores map2 7, cats2), KifStaticRule(), 1L) |> ignore
                let after2 = parameters m2
                for i in 0 .. map2.Count - 1 do
                    for sl in map2.Units[i].Slices do
                        use got = sl.View(after2[sl.Parameter])
                        use want = sl.View(if i % 2 = 0 then cur2[sl.Parameter] else prev2[sl.Parameter])
                        let side = if zerosBefore then "before" else "after"
                        Expect.equal (bits got) (bits want) $"{sl} ({cats2[i]}, negative zeros {side})"
                for KeyValue (_, t) in cur2 do t.Dispose()
        }

        test "a NaN in the current model: Apply throws naming unit and rule, and the model stays bit-identical" {
            let m = llama 3L
            use _model = owned m
            use previous = ParameterSnapshot.TakeTrainable m
            perturb m 4L
            let map = wholeTensorMap m
            let cats = Array.create map.Count UnitCategory.Shared
            let victim = map.Units.[map.Count - 1].Id // the last unit: every other unit is fused before the check fails
            do
                use _ng = torch.no_grad()
                (parameters m).[victim].view(-1L).[3L] <- torch.tensor(Single.NaN)
            let before = parameters m |> Map.map (fun _ p -> bits p)
            try
                ModelFusion.Apply(m, previous, FusionPlan(map, scores map 1, scores map 2, cats), KifStaticRule(), 1L) |> ignore
                failtest "Apply accepted a NaN"
            with :? UnsafeFusionException as ex ->
                Expect.stringContains ex.Message victim "names the unit"
                Expect.stringContains ex.Message "kif-static" "names the rule"
                Expect.equal ex.UnitId victim "unit id"
            let after = parameters m |> Map.map (fun _ p -> bits p)
            for KeyValue (n, b) in before do Expect.equal after.[n] b $"untouched: {n}"
        }

        test "fusing a model with itself is the identity for every rule" {
            let m = llama 5L
            use _model = owned m
            use snap = ParameterSnapshot.TakeTrainable m
            let map = wholeTensorMap m
            let before = parameters m |> Map.map (fun _ p -> p.clone())
            let rules : IFusionRule list = [ KifStaticRule(); KifAdaptiveRule(); AverageRule(); TaskArithmeticRule(); TiesRule(); DareRule(); MagMaxRule() ]
            for rule in rules do
                ModelFusion.Apply(m, snap, FusionPlan(map, scores map 3, scores map 5, categoriesFor map), rule, 9L, snap) |> ignore
                for KeyValue (n, p) in parameters m do Expect.isTrue (p.eq(before.[n]).all().item<bool>()) $"{rule.Name}: {n}"
            for KeyValue (_, t) in before do t.Dispose()
        }

        test "a baseline snapshot is the reference of task vectors; DARE is reproducible from the seed" {
            let m = llama 6L
            use _model = owned m
            use baseline = ParameterSnapshot.TakeTrainable m
            perturb m 7L
            use previous = ParameterSnapshot.TakeTrainable m
            perturb m 8L
            use current = ParameterSnapshot.TakeTrainable m
            let map = wholeTensorMap m
            let cats = categoriesFor map
            let id = map.Units.[0].Id
            ModelFusion.Apply(m, previous, FusionPlan(map, scores map 1, scores map 2, cats), TaskArithmeticRule(), 1L, baseline) |> ignore
            use expected = previous.[id] + current.[id] - baseline.[id]
            Expect.isTrue ((parameters m).[id].allclose(expected, 1e-5, 1e-6)) "base + τ_prev + τ_cur"
            let runDare () =
                use _ng = torch.no_grad()
                for KeyValue (n, p) in parameters m do p.copy_(current.[n]) |> ignore
                ModelFusion.Apply(m, previous, FusionPlan(map, scores map 1, scores map 2, cats), DareRule(), 42L) |> ignore
                parameters m |> Map.map (fun _ p -> bits p)
            Expect.equal (runDare ()) (runDare ()) "same seed, same fused model"
        }

        test "Apply and snapshots leave no tensor alive: every rule, and a refused fusion" {
            let m = llama 11L
            use _model = owned m
            use previous = ParameterSnapshot.TakeTrainable m
            perturb m 12L
            let map = wholeTensorMap m
            let rules : IFusionRule list = [ KifStaticRule(); KifAdaptiveRule(); AverageRule(); TaskArithmeticRule(); TiesRule(); DareRule(); MagMaxRule() ]
            let run (rule: IFusionRule) = ModelFusion.Apply(m, previous, FusionPlan(map, scores map 1, scores map 2, categoriesFor map), rule, 3L) |> ignore
            rules |> List.iter run // warm-up
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            let live0 = live ()
            rules |> List.iter run
            (ParameterSnapshot.TakeTrainable m).Dispose()
            Expect.equal (live ()) live0 "no tensor left alive by Apply or a disposed snapshot"
            do
                use _ng = torch.no_grad()
                use nan = torch.tensor(Single.NaN)
                (parameters m).[map.Units.[1].Id].view(-1L).[0L] <- nan
            let live1 = live ()
            Expect.throwsT<UnsafeFusionException> (fun () -> run (KifStaticRule(neither = 0.4, previousOnly = 0.4))) "refused"
            Expect.equal (live ()) live1 "no tensor left alive by a refused fusion"
        }
    
        test "DARE's vector draws give torch's gap floors where the quotient lies on or next to an integer" {
            // u = 1 − (1 − q)^k and its neighbours in ulps: quotients on an integer, where only the
            // fallback to torch's scalar form keeps the floor; plus ordinary uniforms.
            let rng = Random(4)
            for q in [ 0.5; 0.1; 0.25; 1e-3; 0.9 ] do
                let logFail = Math.Log(1.0 - q)
                let uniforms =
                    [| for k in 0 .. 60 do
                         let u = 1.0 - Math.Pow(1.0 - q, float k)
                         if u >= 0.0 && u < 1.0 then
                             yield u
                             for step in 1 .. 3 do
                                 let mutable up, down = u, u
                                 for _ in 1 .. step do
                                     up <- Math.BitIncrement up
                                     down <- Math.BitDecrement down
                                 if up < 1.0 then yield up
                                 if down >= 0.0 then yield down
                       for _ in 1 .. 1001 -> float (rng.NextInt64(1L <<< 53)) / float (1L <<< 53) |]
                let floors = Array.zeroCreate uniforms.Length
                GeometricPositions.Floors(ReadOnlySpan uniforms, Span floors, logFail)
                use u = torch.tensor(uniforms, dtype = torch.ScalarType.Float64)
                use tail = 1.0 - u
                use expected = (tail.log() / logFail).floor_()
                let differing = Array.zip floors (expected.data<float>().ToArray()) |> Array.filter (fun (a, b) -> a <> b)
                Expect.isEmpty differing $"q = {q}: floors that differ from torch's"
        }
    ]
