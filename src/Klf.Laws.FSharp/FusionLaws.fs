namespace Klf.Laws

open System
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Klf.SkillUnits
open Klf.Fusion

/// Laws every fusion rule (IFusionRule) should obey, checked with FsCheck on random small tensors
/// and random unit contexts. One line tests a new rule:
///
///     FusionLaws.check myRule                                   // core laws; prints a summary, throws on a counterexample
///     FusionLaws.checkWith [ FusionLaws.Between ] myRule        // core laws plus opt-in laws
///     testList "my rule" [ for name, run in FusionLaws.cases [] myRule -> testCase name run ]   // Expecto
///
/// The seed is fixed and printed (FusionLaws.defaults.Seed), so a failure reproduces.
[<RequireQualifiedAccess>]
module FusionLaws =

    /// A law about a rule's Fuse.
    type Law =
        /// Fusing a model with itself (base = prev = cur) returns it (value-equal).
        | Identity
        /// The output has the inputs' shape, dtype and device.
        | Shape
        /// Base, prev and cur are bit-identical before and after Fuse.
        | InputsUnmodified
        /// Same inputs, context and seed give a bit-identical output.
        | Deterministic
        /// Finite inputs give a finite output.
        | Finite
        /// Opt-in: every output element lies between its prev and cur elements (interpolating rules).
        | Between
        /// Opt-in: a PreviousOnly unit gives exactly prev, a CurrentOnly unit exactly cur (bit-identical).
        | RespectsCategories

    /// The laws every rule must obey.
    let core = [ Identity; Shape; InputsUnmodified; Deterministic; Finite ]

    /// One random case: three value arrays of one shape and a unit context.
    type Case =
        { Shape: int64[]
          Dtype: torch.ScalarType
          Base: float[]
          Previous: float[]
          Current: float[]
          PreviousScore: float
          CurrentScore: float
          Category: UnitCategory
          Seed: int64 }

    /// How the laws are checked.
    type Settings =
        { /// Random cases per law.
          MaxTest: int
          /// FsCheck's seed (printed with the summary and in failures).
          Seed: uint64
          /// Where the tensors live.
          Device: torch.Device }

    /// 100 cases per law, seed 20261126, on the CPU.
    let defaults = { MaxTest = 100; Seed = 20261126UL; Device = torch.CPU }

    let private value =
        Gen.frequency [
            3, Gen.choose (-2000000, 2000000) |> Gen.map (fun i -> float i / 1000000.0)
            1, Gen.choose (-16, 16) |> Gen.map (fun i -> float i / 8.0) ]

    /// The generator of cases: 1–3 dimensions of 1–5, float32 (mostly) or float64, values in [-2, 2]
    /// (some exact and repeated, some with cur = prev or base = prev), scores in [0, 1].
    let caseGen : Gen<Case> =
        gen {
            let! rank = Gen.choose (1, 3)
            let! dims = Gen.arrayOfLength rank (Gen.choose (1, 5))
            let n = Array.fold (*) 1 dims
            let! dtype = Gen.frequency [ 3, Gen.constant torch.ScalarType.Float32; 1, Gen.constant torch.ScalarType.Float64 ]
            let round (a: float[]) = if dtype = torch.ScalarType.Float32 then a |> Array.map (fun x -> float (float32 x)) else a
            let! b = Gen.arrayOfLength n value
            let! p = Gen.arrayOfLength n value
            let! c = Gen.arrayOfLength n value
            let! shape = Gen.choose (0, 5)
            let p = if shape = 0 then Array.copy b else p
            let c = if shape = 1 then Array.copy p else c
            let! ps = Gen.choose (0, 1000)
            let! cs = Gen.choose (0, 1000)
            let! category = Gen.elements [ UnitCategory.Neither; UnitCategory.PreviousOnly; UnitCategory.CurrentOnly; UnitCategory.Shared ]
            let! hi = Gen.choose (Int32.MinValue, Int32.MaxValue)
            let! lo = Gen.choose (Int32.MinValue, Int32.MaxValue)
            return
                { Shape = dims |> Array.map int64; Dtype = dtype; Base = round b; Previous = round p; Current = round c
                  PreviousScore = float ps / 1000.0; CurrentScore = float cs / 1000.0; Category = category
                  Seed = (int64 hi <<< 32) ||| int64 (uint32 lo) }
        }

    let private tensorOf (device: torch.Device) (c: Case) (values: float[]) =
        torch.tensor(values, dtype = torch.ScalarType.Float64, device = device).to_type(c.Dtype).reshape(c.Shape)

    let private context (c: Case) (category: UnitCategory) =
        let n = c.Shape |> Array.fold (*) 1L
        let unit = SkillUnit("law-unit", [| UnitSlice("w") |], UnitAggregation.Mean, "other", "w", n)
        UnitFusionContext(unit, c.PreviousScore, c.CurrentScore, category, c.Seed)

    let private sameValues (a: torch.Tensor) (b: torch.Tensor) =
        a.shape = b.shape && a.eq(b).all().item<bool>()

    let private bitEqual (a: torch.Tensor) (b: torch.Tensor) =
        a.dtype = b.dtype && sameValues a b && sameValues (a.signbit()) (b.signbit())

    let private maxDiff (a: torch.Tensor) (b: torch.Tensor) =
        (a.to_type(torch.ScalarType.Float64) - b.to_type(torch.ScalarType.Float64)).abs().max().item<float>()

    /// Why the law fails for the case, or None when it holds. Tensors are freed before returning.
    let violation (settings: Settings) (rule: IFusionRule) (law: Law) (c: Case) : string option =
        use _scope = torch.NewDisposeScope()
        use _ng = torch.no_grad()
        let t = tensorOf settings.Device c
        let fuse (b, p, cu) category = rule.Fuse(FusionInputs(b, p, cu), context c category)
        let b, p, cu = t c.Base, t c.Previous, t c.Current
        match law with
        | Identity ->
            let x = t c.Previous
            let out = fuse (x.clone(), x.clone(), x.clone()) c.Category
            if sameValues (out.to_type(x.dtype)) x then None
            else Some $"self-fusion changed the values (max |diff| {maxDiff out x})"
        | Shape ->
            let out = fuse (b, p, cu) c.Category
            if out.shape <> p.shape then Some $"""shape [{String.Join(",", out.shape)}], expected [{String.Join(",", p.shape)}]"""
            elif out.dtype <> p.dtype then Some $"dtype {out.dtype}, expected {p.dtype}"
            elif out.device_type <> p.device_type || out.device_index <> p.device_index then Some $"device {out.device}, expected {p.device}"
            else None
        | InputsUnmodified ->
            let b0, p0, c0 = b.clone(), p.clone(), cu.clone()
            fuse (b, p, cu) c.Category |> ignore
            [ "base", b, b0; "prev", p, p0; "cur", cu, c0 ]
            |> List.tryPick (fun (name, now, before) -> if bitEqual now before then None else Some $"{name} was modified")
        | Deterministic ->
            let o1 = fuse (b, p, cu) c.Category
            let o2 = fuse (t c.Base, t c.Previous, t c.Current) c.Category
            if bitEqual o1 o2 then None else Some $"two calls differ (max |diff| {maxDiff o1 o2})"
        | Finite ->
            let out = fuse (b, p, cu) c.Category
            if out.isfinite().all().item<bool>() then None else Some "NaN or Inf in the output"
        | Between ->
            let out = fuse (b, p, cu) c.Category
            let lo, hi = torch.minimum(p, cu), torch.maximum(p, cu)
            let ok = out.ge(lo).logical_and(out.le(hi))
            if ok.all().item<bool>() then None
            else Some $"{ok.logical_not().sum().item<int64>()} elements outside [min(prev,cur), max(prev,cur)]"
        | RespectsCategories ->
            let op = fuse (b, p, cu) UnitCategory.PreviousOnly
            let oc = fuse (b, p, cu) UnitCategory.CurrentOnly
            if not (bitEqual op p) then Some $"PreviousOnly is not bit-identical to prev (max |diff| {maxDiff op p})"
            elif not (bitEqual oc cu) then Some $"CurrentOnly is not bit-identical to cur (max |diff| {maxDiff oc cu})"
            else None

    /// The FsCheck property of one law for a rule (fails with the reason and the case).
    let property (settings: Settings) (rule: IFusionRule) (law: Law) : Property =
        Prop.forAll (Arb.fromGen caseGen) (fun c ->
            match violation settings rule law c with
            | None -> ()
            | Some why -> failwithf "%s: law %A fails: %s" rule.Name law why)

    /// The outcome of checking one law.
    type Outcome = { Law: Law; Passed: bool; Message: string }

    /// Checks the core laws plus `extra` on `rule` with `settings`; returns one outcome per law (never throws on a failing law).
    let run (settings: Settings) (extra: Law list) (rule: IFusionRule) : Outcome list =
        let config =
            Config.QuickThrowOnFailure.WithMaxTest(settings.MaxTest).WithQuietOnSuccess(true)
                .WithReplay(Some { Rnd = Rnd(settings.Seed); Size = None })
        [ for law in List.distinct (core @ extra) ->
            try
                Check.One($"{rule.Name} {law}", config, property settings rule law)
                { Law = law; Passed = true; Message = $"passed {settings.MaxTest} cases" }
            with e -> { Law = law; Passed = false; Message = e.Message } ]

    /// Checks the core laws plus `extra`, prints a summary (one line per law, with the seed) and
    /// throws on the first counterexample's law (the message holds every failure).
    let checkOn (settings: Settings) (extra: Law list) (rule: IFusionRule) : unit =
        let outcomes = run settings extra rule
        printfn "fusion laws for %s (seed %d, %d cases each):" rule.Name settings.Seed settings.MaxTest
        for o in outcomes do printfn "  %-20s %s" (sprintf "%A" o.Law) (if o.Passed then "ok" else "FAILED")
        let failed = outcomes |> List.filter (fun o -> not o.Passed)
        if not failed.IsEmpty then
            let detail = failed |> List.map (fun o -> $"{o.Law}: {o.Message}") |> String.concat "\n"
            failwithf "fusion rule %s breaks %d law(s):\n%s" rule.Name failed.Length detail

    /// Checks the core laws plus `extra` with the default settings (see checkOn).
    let checkWith (extra: Law list) (rule: IFusionRule) : unit = checkOn defaults extra rule

    /// Checks the core laws with the default settings: prints a summary, throws on a counterexample.
    let check (rule: IFusionRule) : unit = checkWith [] rule

    /// One named test per law (core plus `extra`), for any test framework:
    /// `testList "rule" [ for name, run in FusionLaws.cases [] rule -> testCase name run ]` in Expecto.
    let cases (extra: Law list) (rule: IFusionRule) : (string * (unit -> unit)) list =
        [ for law in List.distinct (core @ extra) ->
            $"{rule.Name}: {law}",
            fun () ->
                let config =
                    Config.QuickThrowOnFailure.WithMaxTest(defaults.MaxTest).WithQuietOnSuccess(true)
                        .WithReplay(Some { Rnd = Rnd(defaults.Seed); Size = None })
                Check.One($"{rule.Name} {law}", config, property defaults rule law) ]
