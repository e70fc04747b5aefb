// A fusion rule and a strategy written in F#, registered, checked against the fusion laws and run
// next to reference KIF through the same `klf run --config` path the command line takes (in this
// process, so the registrations are seen). Make the package feed first (scripts/pack.sh), then:
//   dotnet fsi src/Klf.Scripts/experiments/custom-strategy.fsx [klf run flags, e.g. --seeds 1,2,3 --out DIR]
// The experiment is custom-strategy.yaml beside this script (the embedded default's model and stream).
// From the local feed scripts/pack.sh writes, found through the repository's NuGet.config; a script
// elsewhere adds it with #i "nuget: /absolute/path/to/artifacts/nuget".
#r "nuget: Klf.Cli"
#r "nuget: Klf.Laws"

open System.IO
open Klf.Fusion
open Klf.Pipelines
open Klf.Laws

Klf.Native.TorchNative.EnsureLoaded()

/// λ = Ŝᵖ / (Ŝᵖ + Âᵖ) (0.5 when both are 0): the unit moves towards the new task as far as the new
/// task's importance outweighs the earlier tasks', without KIF's hard top-20 % categories.
type RatioRule(power: float) =
    member _.Lambda(c: UnitFusionContext) =
        let s, a = c.CurrentScore ** power, c.PreviousScore ** power
        if s + a = 0.0 then 0.5 else s / (s + a)
    interface IFusionRule with
        member _.Name = "kif-ratio"
        member this.LambdaFor c = this.Lambda c
        // A fresh tensor of the inputs' shape, dtype and device; the inputs are untouched.
        member this.Fuse(inputs, c) = FusionKernels.Interpolate(inputs.Previous, inputs.Current, this.Lambda c)

// Registered rules can be named in configs (`rule: {name: kif-ratio, power: 2}`), in --strategies
// and in `klf fuse --rule kif-ratio --param power=2`.
Fusion.register "kif-ratio" "λ = Ŝ^p / (Ŝ^p + Â^p)" [ "power", 1.0, "exponent p" ] (fun p -> RatioRule(p["power"]) :> IFusionRule)
FusionLaws.checkWith [ FusionLaws.Between ] (RatioRule 2.0)

// A strategy: reference KIF whose units important to neither distribution keep the new weights,
// with every KIF setting still open to the config (e.g. {name: kif-keep-new, top: 0.3}).
Strategy.register
    { Name = "kif-keep-new"
      Doc = "reference KIF with λ = 1 for units important to neither"
      Keys = KifSettings.keysFor false
      Create = fun settings ->
        let s = KifSettings.read settings KifSettings.reference
        KifStrategy.kifWith "kif-keep-new" { s with RuleParameters = s.RuleParameters @ [ "neither", 1.0 ] } }

let config = Path.Combine(__SOURCE_DIRECTORY__, "custom-strategy.yaml")
let extra = fsi.CommandLineArgs |> Array.skip 1
let code = Klf.Cli.Program.main (Array.append [| "run"; "--config"; config |] extra)
if code <> 0 then exit code
