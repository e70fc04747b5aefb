// A new fusion rule written in F#, checked against the library's fusion laws in one line.
// Make the package feed first (scripts/pack.sh), then run:
//   dotnet fsi src/Klf.Scripts/experiments/custom-fusion-rule.fsx
// From the local feed scripts/pack.sh writes, found through the repository's NuGet.config; a script
// elsewhere adds it with #i "nuget: /absolute/path/to/artifacts/nuget".
#r "nuget: Klf.Pipelines"
#r "nuget: Klf.Laws"

open TorchSharp
open Klf.Fusion
open Klf.Pipelines
open Klf.Laws

Klf.Native.TorchNative.EnsureLoaded()

/// KIF's adaptive rule with λ clipped to [lo, hi]: never fully keeps or fully replaces a unit, and
/// PreviousOnly / CurrentOnly units still get exactly the old / new values (λ = 0 / 1, bit-identical).
type ClippedAdaptiveRule(lo: float, hi: float, temperature: float) =
    let adaptive = KifAdaptiveRule(temperature)
    member _.Lambda(context: UnitFusionContext) =
        match context.Category with
        | UnitCategory.PreviousOnly -> 0.0
        | UnitCategory.CurrentOnly -> 1.0
        | _ -> adaptive.LambdaFor context |> max lo |> min hi
    interface IFusionRule with
        member _.Name = $"kif-adaptive-clipped[{lo},{hi}]"
        member this.LambdaFor context = this.Lambda context
        // A fresh tensor of the inputs' shape, dtype and device; inputs untouched (the caller disposes it).
        member this.Fuse(inputs, context) = FusionKernels.Interpolate(inputs.Previous, inputs.Current, this.Lambda context)

let rule = ClippedAdaptiveRule(0.2, 0.8, 0.25)

// The one line: the core laws plus the two opt-in laws this rule promises. Prints a summary and
// throws with a counterexample if a law fails.
FusionLaws.checkWith [ FusionLaws.Between; FusionLaws.RespectsCategories ] rule

// The same laws can show what a rule does NOT promise: task arithmetic leaves [prev, cur].
let outcome = FusionLaws.run FusionLaws.defaults [ FusionLaws.Between ] (TaskArithmeticRule())
for o in outcome do printfn "task-arithmetic %-20s %s" (sprintf "%A" o.Law) (if o.Passed then "ok" else "fails (as expected for Between)")
