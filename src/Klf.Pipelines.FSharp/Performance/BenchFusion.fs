namespace Klf.Pipelines

open System
open TorchSharp
open Klf.Models
open Klf.SkillUnits
open Klf.Importance
open Klf.Fusion

/// Fusion throughput against memory bandwidth: each rule's `ModelFusion.Apply` on a model's units,
/// in bytes of fused parameters per second, divided by the bytes per second of `copy_` of the same
/// tensors measured in the same process.
[<RequireQualifiedAccess>]
module BenchFusion =
    /// Measures every rule of `rules` on `model`'s units from `partitioner`: θ̄_{k−1} is the model plus
    /// 1 % noise, θ_k that plus another 1 %; scores are seeded random, categories from their top 20 %.
    /// With `withBase` the model as given is the separate base θ_0 of task vectors (KIF's
    /// `keep-baseline`); without it task vectors are taken against θ̄_{k−1} (the default, under which
    /// task arithmetic and MagMax give θ_k). Median of `repeats` fusions, each from the same θ_k
    /// (restored untimed). The model is left holding θ_k.
    let run (model: ILanguageModel) (partitioner: ISkillUnitPartitioner) (rules: IFusionRule list) (withBase: bool) (repeats: int) : FusionBench list =
        let map = partitioner.Partition model
        use baseline = ParameterSnapshot.TakeTrainable model
        let perturb (seed: uint64) =
            use _ng = torch.no_grad()
            use g = new torch.Generator(seed)
            for p in model.Module.parameters() do
                if p.requires_grad then
                    use noise = torch.randn(p.shape, generator = g) * 0.01
                    p.add_(noise) |> ignore
        perturb 2UL
        use previous = ParameterSnapshot.TakeTrainable model
        perturb 3UL
        use current = ParameterSnapshot.TakeTrainable model
        let rng = Random(5)
        let prevScores = ImportanceMath.MinMax(Array.init map.Count (fun _ -> rng.NextDouble()))
        let curScores = ImportanceMath.MinMax(Array.init map.Count (fun _ -> rng.NextDouble()))
        let categories = Categories.Classify(ImportanceMath.TopFraction(prevScores, 0.2), ImportanceMath.TopFraction(curScores, 0.2))
        let plan = FusionPlan(map, prevScores, curScores, categories)
        let live = model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
        let names = map.Units |> Seq.collect (fun u -> u.Slices) |> Seq.map (fun s -> s.Parameter) |> Seq.distinct |> Array.ofSeq
        let bytes = names |> Array.sumBy (fun n -> live[n].numel() * int64 live[n].ElementSize)
        let slices = map.Units |> Seq.sumBy (fun u -> u.Slices.Count)
        // copy_ of the same tensors into buffers of their own.
        let targets = names |> Array.map (fun n -> torch.empty_like(live[n]).DetachFromDisposeScope())
        let copyMs =
            use _ng = torch.no_grad()
            Measure.median (Measure.runs 3 (max 10 repeats) (fun () -> names |> Array.iteri (fun i n -> targets[i].copy_(live[n]) |> ignore)))
        for t in targets do t.Dispose()
        [ for rule in rules ->
            let fuse () =
                current.RestoreTo model
                ModelFusion.Apply(model, previous, plan, rule, 1L, (if withBase then baseline else null)).Elapsed.TotalMilliseconds
            fuse () |> ignore
            fuse () |> ignore
            let ms = Measure.median [ for _ in 1 .. repeats -> fuse () ]
            let perSecond (t: float) = float bytes / (t / 1000.0)
            { Rule = rule.Name
              Units = map.Partitioner
              Base = (if withBase then "pre-trained" else "previous")
              UnitCount = map.Count
              Slices = slices
              Bytes = bytes
              FuseMs = ms
              CopyMs = copyMs
              BytesPerSecond = perSecond ms
              CopyBytesPerSecond = perSecond copyMs
              Ratio = copyMs / ms
              TorchFuseMs = nan
              TorchRatio = nan
              KlfOverTorch = nan } ]
        |> fun results ->
            current.RestoreTo model
            results
