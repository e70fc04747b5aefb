/// KIF's constants as values: min-max pinned to its formula, per-group normalisation with its
/// single-unit rule, the accumulation on the scale of Ŝ, the fusion-rule registry, strategy settings
/// (parsing, sweeps, labels, errors naming the key), and Recurrent-KIF's kernels against naive
/// references written here.
module KifSettingsLaws

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Klf.Importance
open Klf.SkillUnits
open Klf.Fusion
open Klf.Kif
open Klf.Pipelines

let private config = PropertyConfig.config 200

let private finite (xs: NormalFloat[]) = xs |> Array.map (fun x -> x.Get % 1e6)

/// Naive min-max: (x − min) / (max − min), zeros when constant.
let private naiveMinMax (xs: float[]) =
    if xs.Length = 0 then [||]
    else
        let lo, hi = Array.min xs, Array.max xs
        if hi = lo then Array.zeroCreate xs.Length else xs |> Array.map (fun x -> (x - lo) / (hi - lo))

let private close (a: float[]) (b: float[]) = Array.forall2 (fun (x: float) y -> abs (x - y) <= 1e-12) a b

/// A map of units in the given groups (module types), one whole-tensor unit each.
let private mapOf (groups: string[]) =
    SkillUnitMap("hand", [| for i, g in Array.indexed groups -> SkillUnit($"u{i}", [| UnitSlice($"p{i}") |], UnitAggregation.Mean, "layer", g, 1L) |])

/// Naive per-group normalisation with the project's rule: a group whose scores are all equal is
/// placed on the global scale.
let private naivePerGroup (xs: float[]) (groups: string[]) =
    let global' = naiveMinMax xs
    let out = Array.zeroCreate xs.Length
    for g in Array.distinct groups do
        let idx = [| for i in 0 .. xs.Length - 1 do if groups[i] = g then yield i |]
        let vs = idx |> Array.map (fun i -> xs[i])
        if Array.max vs = Array.min vs then for i in idx do out[i] <- global'[i]
        else
            let n = naiveMinMax vs
            idx |> Array.iteri (fun k i -> out[i] <- n[k])
    out

/// numpy's linear quantile on doubles.
let private naiveQuantile (xs: float[]) (q: float) =
    let v = Array.sort xs
    let h = float (v.Length - 1) * q
    let lo = int (floor h)
    if lo >= v.Length - 1 then v[v.Length - 1] else v[lo] + (h - float lo) * (v[lo + 1] - v[lo])

let private settingsError (f: unit -> 'a) =
    try f () |> ignore; "" with :? InvalidDataException as e -> e.Message

[<Tests>]
let tests =
    testList "kif settings laws" [
        testPropertyWithConfig config "MinMax equals (x − min)/(max − min) value by value (1e-12)" <| fun (xs: NormalFloat[]) ->
            let v = finite xs
            close (ImportanceMath.MinMax v) (naiveMinMax v)

        testPropertyWithConfig config "per-group min-max: each varying group on its own scale, constant and single-unit groups on the global scale" <| fun (xs: NormalFloat[]) (labels: byte[]) ->
            let v = finite xs
            let groups = Array.init v.Length (fun i -> if i < labels.Length then $"g{labels[i] % 4uy}" else "g9")
            close (ImportanceMath.MinMaxPerGroup(v, groups)) (naivePerGroup v groups)

        test "a single-unit group (tied embedding, final norm) is not forced to 0: it keeps its global standing" {
            let scores = [| 0.0; 1.0; 3.0; 4.0; 2.0 |]
            let groups = [| "q"; "q"; "k"; "k"; "embed" |]
            let n = ImportanceMath.MinMaxPerGroup(scores, groups)
            Expect.equal n [| 0.0; 1.0; 0.0; 1.0; 0.5 |] "q and k on their own; the embedding at (2 − 0)/(4 − 0)"
            let top = ImportanceMath.MinMaxPerGroup([| 0.0; 1.0; 9.0 |], [| "a"; "a"; "head" |])
            Expect.equal top[2] 1.0 "the largest unit of the model, alone in its group, is at 1"
        }

        testPropertyWithConfig config "the accumulation Â uses Ŝ's normalisation: Normalise(γ·Â + (1−γ)·Ŝ) per scope; Global is the old minmax" <| fun (xs: NormalFloat[]) (ys: NormalFloat[]) (labels: byte[]) (g: byte) ->
            let n = min xs.Length ys.Length
            let a, s = (finite xs)[.. n - 1], (finite ys)[.. n - 1]
            let gamma = float (g % 11uy) / 10.0
            let groups = Array.init n (fun i -> if i < labels.Length then $"t{labels[i] % 3uy}" else "t")
            let map = mapOf groups
            let mix = Array.map2 (fun x y -> gamma * x + (1.0 - gamma) * y) a s
            close (ImportanceMath.Accumulate(map, a, s, gamma, NormalisationScope.ModuleType)) (naivePerGroup mix groups)
            && close (ImportanceMath.Accumulate(map, a, s, gamma, NormalisationScope.Global)) (ImportanceMath.Accumulate(a, s, gamma))
            && close (ImportanceMath.Accumulate(a, s, gamma)) (naiveMinMax mix)

        test "the fusion-rule registry: names, aliases, parameters over defaults, clear errors, user rules" {
            let r = FusionRules.Create("static", dict [ "neither", 1.0 ] |> Collections.Generic.Dictionary) :?> KifStaticRule
            Expect.equal (r.Shared, r.PreviousOnly, r.CurrentOnly, r.Neither) (0.3, 0.0, 1.0, 1.0) "alias and one parameter over the defaults"
            Expect.equal (FusionRules.Create("adaptive", dict [ "tau", 0.5 ] |> Collections.Generic.Dictionary) :?> KifAdaptiveRule).Temperature 0.5 "τ"
            let bad = try FusionRules.Create("kif-static", dict [ "sharde", 0.5 ] |> Collections.Generic.Dictionary) |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains bad "sharde" "names the parameter"
            Expect.stringContains bad "shared" "lists the rule's parameters"
            let unknown = try FusionRules.Create "nope" |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains unknown "kif-static" "lists the known rules"
            Expect.throwsT<ArgumentException> (fun () -> Fusion.register "kif-static" "mine" [] (fun _ -> AverageRule() :> IFusionRule)) "a shipped rule cannot be replaced"
            Fusion.register "laws-half" "λ = c everywhere" [ "c", 0.5, "λ" ] (fun p -> KifStaticRule(p["c"], p["c"], p["c"], p["c"]) :> IFusionRule)
            let mine = Fusion.ruleWith "laws-half" [ "c", 0.25 ] :?> KifStaticRule
            Expect.equal mine.Neither 0.25 "a registered F# rule builds with its parameters"
            Expect.contains (Fusion.ruleNames ()) "laws-half" "and is listed"
        }

        test "strategies on the command line: name(key=value,…), dotted keys, lists as sweeps with readable labels" {
            let name, settings = Setting.parseStrategy "t" "kif(top=0.3,lambda.shared=0.5,lambda.neither=1,rule=ties)"
            Expect.equal name "kif" "name"
            Expect.equal settings [ "top", Setting.Num 0.3; "lambda", Setting.Table [ "shared", Setting.Num 0.5; "neither", Setting.Num 1.0 ]; "rule", Setting.Str "ties" ] "settings"
            let specs = Strategy.specsOfText "--strategies" "seqft,kif(top=[0.1,0.2,0.3,0.5]),kif(gamma=[0.5,0.9],lambda.neither=1),mtl"
            Expect.equal [ for s in specs -> s.Label ]
                [ "seqft"; "kif(top=0.1)"; "kif(top=0.2)"; "kif(top=0.3)"; "kif(top=0.5)"
                  "kif(gamma=0.5,lambda.neither=1)"; "kif(gamma=0.9,lambda.neither=1)"; "mtl" ] "one spec per value, labelled by its settings"
            let swept = Strategy.specsOfText "t" "kif(label=wide,top=[0.3,0.5])"
            Expect.equal [ for s in swept -> s.Label ] [ "wide(top=0.3)"; "wide(top=0.5)" ] "a label plus the swept values"
            let folders = specs |> List.map (fun s -> StrategySpec.folderName s.Label)
            Expect.equal folders[1] "kif-top-0.1" "folder names"
            Expect.equal (List.distinct folders).Length folders.Length "distinct folders"
        }

        test "strategies in a config: objects with settings and sweeps; YAML text is read by kind; unknown keys and bad values name the file and the key" {
            let json = JsonNode.Parse """[ "seqft", {"name": "kif", "top": "0.3", "lambda": {"shared": 0.5}}, {"name": "kif", "gamma": [0.5, 0.7, 0.9]}, {"name": "rkif-lora", "r": 4, "coefficients": {"both": [0.5, 0.5]}} ]"""
            let specs = [ for x in json.AsArray() do yield! Strategy.specsOfJson "exp.yaml" x ]
            Expect.equal [ for s in specs -> s.Label ]
                [ "seqft"; "kif(top=0.3,lambda.shared=0.5)"; "kif(gamma=0.5)"; "kif(gamma=0.7)"; "kif(gamma=0.9)"; "rkif-lora(r=4,coefficients.both=[0.5,0.5])" ] "labels"
            Expect.equal (specs[1].Settings |> List.head) ("top", Setting.Num 0.3) "a YAML-style \"0.3\" is a number for a number key"
            Expect.equal ((StrategySpec.toJson specs[1]).ToJsonString()) """{"name":"kif","top":0.3,"lambda":{"shared":0.5}}""" "written back as JSON"
            let e1 = settingsError (fun () -> Strategy.specsOfJson "exp.yaml" (JsonNode.Parse """{"name": "kif", "topp": 0.3}"""))
            for part in [ "exp.yaml"; "kif"; "topp"; "known:" ] do Expect.stringContains e1 part $"unknown key: {part}"
            let e2 = settingsError (fun () -> Strategy.specsOfJson "exp.yaml" (JsonNode.Parse """{"name": "kif", "top": 2}"""))
            for part in [ "exp.yaml"; "top"; "[0, 1]" ] do Expect.stringContains e2 part $"bad value: {part}"
            let e3 = settingsError (fun () -> Strategy.specsOfJson "exp.yaml" (JsonNode.Parse """{"name": "kif", "rule": {"name": "ties", "keepp": 0.1}}"""))
            Expect.stringContains e3 "keepp" "a rule parameter the rule lacks"
            let e4 = settingsError (fun () -> Strategy.specsOfJson "exp.yaml" (JsonNode.Parse """{"name": "kif", "r": 4}"""))
            Expect.stringContains e4 "r: unknown setting" "LoRA keys belong to LoRA strategies"
            let e5 = settingsError (fun () -> Strategy.specsOfJson "exp.yaml" (JsonNode.Parse """"kiff" """))
            Expect.stringContains e5 "unknown strategy" "unknown strategy"
            let e6 = settingsError (fun () -> Strategy.checkLabels "exp.yaml" [ StrategySpec.named "kif"; { StrategySpec.named "seqft" with Label = "kif" } ])
            Expect.stringContains e6 "share a label" "duplicate labels"
        }

        test "KIF presets are values of the settings, equal to the C# reference options" {
            let o = KifSettings.toOptions KifSettings.reference
            let r = KifOptions.FullFineTuning()
            Expect.equal (o.Partitioner.Name, o.TopFraction, o.Gamma, o.Normalisation, o.Importance) (r.Partitioner.Name, r.TopFraction, r.Gamma, r.Normalisation, r.Importance) "reference = FullFineTuning()"
            Expect.isFalse o.Importance.SkipLastStep "the last step counts (reference gate)"
            Expect.isTrue o.Importance.SkipFirstStep "the first step is skipped"
            let n = KifSettings.toOptions KifSettings.neuron
            Expect.equal (n.Rule :?> KifStaticRule).Neither 1.0 "kif-neuron: λ = 1 for neither"
            let l = KifSettings.toOptions (KifSettings.lora 8)
            Expect.equal (l.Partitioner.Name, l.Importance.Order, (l.Rule :?> KifAdaptiveRule).Temperature) ("lora-rank1", ImportanceOrder.Second, 0.25) "kif-lora"
            let t = KifSettings.read (StrategySettings("t", "kif", [ "lambda", Setting.Table [ "neither", Setting.Num 1.0 ]; "top", Setting.Num 0.3 ])) KifSettings.reference
            Expect.equal (t.Rule, t.RuleParameters, t.Top) ("kif-static", [ "neither", 1.0 ], 0.3) "settings over the preset"
        }

        testPropertyWithConfig config "GlobalQuantile over several tensors equals numpy's linear quantile of their concatenation" <| fun (a: NormalFloat[]) (b: NormalFloat[]) (qb: byte) ->
            let xa, xb = finite a |> Array.map float32, finite b |> Array.map float32
            (xa.Length + xb.Length = 0) ||
                let q = float qb / 255.0
                use ta = torch.tensor(xa)
                use tb = torch.tensor(xb)
                let got = RecurrentMerge.GlobalQuantile([ ta; tb ], q)
                let want = naiveQuantile (Array.append xa xb |> Array.map float) q
                abs (got - want) <= 1e-6 * (abs want + 1.0)

        testPropertyWithConfig config "Recurrent-KIF merge, element by element: anchor + c_in·(inner − anchor) + c_out·(current − inner) by the mask table (1e-6)" <| fun (seedValue: int) (table: bool) ->
            let rng = Random seedValue
            let n = rng.Next(1, 40)
            let arr () = Array.init n (fun _ -> float32 (rng.NextDouble() * 4.0 - 2.0))
            let scores () = Array.init n (fun _ -> float32 (rng.NextDouble()))
            let anchor, inner, current, sIn, sOut = arr (), arr (), arr (), scores (), scores ()
            let tIn, tOut = naiveQuantile (Array.map float sIn) 0.8, naiveQuantile (Array.map float sOut) 0.8
            let t = if table then RecurrentMergeTable.Reference else RecurrentMergeTable(MergeCoefficients(0.3, 0.2), MergeCoefficients(0.1, 0.9), MergeCoefficients(0.7, 0.0), MergeCoefficients(0.0, 0.6))
            use _s = torch.NewDisposeScope()
            let tt (x: float32[]) = torch.tensor(x)
            let merged = RecurrentMerge.Merge(tt anchor, tt inner, tt current, tt sIn, tt sOut, tIn, tOut, t).data<float32>().ToArray()
            Array.init n (fun i ->
                let c = t.For(sIn[i] > float32 tIn, sOut[i] > float32 tOut)
                let want = float anchor[i] + c.Inner * float (inner[i] - anchor[i]) + c.Outer * float (current[i] - inner[i])
                abs (float merged[i] - want) <= 1e-5 * (abs want + 1.0))
            |> Array.forall id

        test "the reference table, cell by cell, and masks at the global quantile flag exactly the elements above it" {
            let t = RecurrentMergeTable.Reference
            Expect.equal [ t.For(true, true); t.For(false, false); t.For(true, false); t.For(false, true) ]
                [ MergeCoefficients(0.4, 0.6); MergeCoefficients(0.5, 0.5); MergeCoefficients(1.0, 0.0); MergeCoefficients(0.0, 1.0) ] "(1,1) (0,0) (1,0) (0,1)"
            use a = torch.arange(0.0f, 50.0f).reshape(5L, 10L)
            use b = torch.arange(50.0f, 100.0f)
            let thr = RecurrentMerge.TopThreshold([ a; b ], 0.2)
            Expect.floatClose Accuracy.high thr 79.2 "the 0.8 quantile of 0..99 is 79.2"
            use cells = RecurrentMerge.Cells(b, b, thr, 1000.0)
            Expect.equal (cells.gt(torch.tensor(0L)).sum().item<int64>()) 20L "20 of the 100 elements (all in b) are above it"
        }
    ]
