/// `klf bench-fusion`: fusion throughput (elements fused per second) of the KIF rules on a preset,
/// with one whole-tensor unit per trainable parameter. Prints, never asserts.
module Klf.Cli.BenchFusion

open System
open TorchSharp
open Klf.Models
open Klf.SkillUnits
open Klf.Fusion
open Klf.Training
open Klf.Cli.Cli

let private preset = opt<string> "--preset" "Model preset to fuse." (Some "llama-5m")
let private rules = opt<string> "--rules" "Comma-separated rules: kif-static, kif-adaptive, average, task-arithmetic, ties, dare, magmax." (Some "kif-static,kif-adaptive")
let private repeats = opt<int> "--repeats" "Measured fusions per rule." (Some 5)
let private threads = opt<int> "--threads" "Torch intra-op threads (0: torch's default)." (Some 0)

let cmd =
    command "bench-fusion" "Measure fusion throughput (elements/s of ModelFusion.Apply) of a model preset with whole-tensor units." [ preset; rules; repeats; threads; Klf.Cli.Common.deviceOption ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        if pr.GetValue threads > 0 then torch.set_num_threads (pr.GetValue threads)
        let rules = (pr.GetValue rules).Split(',', StringSplitOptions.RemoveEmptyEntries) |> Array.map Klf.Pipelines.Fusion.rule
        Trainer.Seed 1L
        let model = LanguageModels.FromPreset(pr.GetValue preset, Nullable(), Klf.Cli.Common.device (pr.GetValue Klf.Cli.Common.deviceOption))
        try
            let units =
                [| for struct (name, p) in model.Module.named_parameters() do
                    if p.requires_grad then SkillUnit(name, [| UnitSlice(name) |], UnitAggregation.Mean, "other", "tensor", p.numel()) |]
            let map = SkillUnitMap("bench-whole", units)
            use previous = ParameterSnapshot.TakeTrainable model
            do
                use _ng = torch.no_grad()
                for p in model.Module.parameters() do
                    use noise = torch.randn_like(p) * 0.01
                    p.add_(noise) |> ignore
            use current = ParameterSnapshot.TakeTrainable model
            let rng = Random(3)
            let prevScores = Array.init map.Count (fun _ -> rng.NextDouble())
            let curScores = Array.init map.Count (fun _ -> rng.NextDouble())
            let cats = Categories.Classify(prevScores |> Array.map (fun s -> s > 0.8), curScores |> Array.map (fun s -> s > 0.8))
            let restore () =
                use _ng = torch.no_grad()
                for u in units do model.Module.get_parameter(u.Id).copy_(current.[u.Id]) |> ignore
            printfn "model      %s (%s), %d units, %d elements, %d threads, device %O" (pr.GetValue preset) model.ModelType map.Count previous.ElementCount (torch.get_num_threads ()) (Trainer.DeviceOf model)
            for rule in rules do
                restore ()
                ModelFusion.Apply(model, previous, FusionPlan(map, prevScores, curScores, cats), rule, 1L) |> ignore // warm-up
                let runs =
                    [ for _ in 1 .. pr.GetValue repeats ->
                        restore ()
                        ModelFusion.Apply(model, previous, FusionPlan(map, prevScores, curScores, cats), rule, 1L) ]
                let secs = runs |> List.sumBy (fun r -> r.Elapsed.TotalSeconds)
                let elems = runs |> List.sumBy (fun r -> r.ElementCount)
                printfn "%-16s %8.1f ms per fusion   %.3g elements/s" rule.Name (1000.0 * secs / float runs.Length) (float elems / secs)
            0
        finally model.Dispose())
