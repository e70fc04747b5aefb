namespace Klf.Pipelines

open System
open Klf.Models
open Klf.SkillUnits
open Klf.Fusion

/// Fusion for F# pipelines: curried, data-last wrappers over the fusion rules, ParameterSnapshot
/// and ModelFusion.
[<RequireQualifiedAccess>]
module Fusion =
    /// The names `rule` knows, each with the reference defaults.
    let ruleNames = [ "kif-static"; "kif-adaptive"; "average"; "task-arithmetic"; "ties"; "dare"; "magmax" ]

    /// A shipped rule by name, with its reference defaults (unknown names throw ArgumentException).
    let rule (name: string) : IFusionRule =
        match name.Trim().ToLowerInvariant() with
        | "kif-static" -> KifStaticRule()
        | "kif-adaptive" -> KifAdaptiveRule()
        | "average" -> AverageRule()
        | "task-arithmetic" -> TaskArithmeticRule()
        | "ties" -> TiesRule()
        | "dare" -> DareRule()
        | "magmax" -> MagMaxRule()
        | other -> raise (ArgumentException($"""unknown fusion rule "{other}" (known: {String.Join(", ", ruleNames)})"""))

    /// Detached copies of the model's trainable parameters (the caller disposes the snapshot).
    let snapshot (model: ILanguageModel) : ParameterSnapshot = ParameterSnapshot.TakeTrainable model

    /// Categories from the two importance classifications (arrays aligned with the unit map).
    let categories (importantPrevious: bool[]) (importantCurrent: bool[]) : UnitCategory[] =
        Categories.Classify(importantPrevious, importantCurrent)

    /// Fuses `model` (θ_k, written in place) with `previous` (θ̄_{k−1}, also the task-vector base)
    /// unit by unit; throws UnsafeFusionException, leaving the model untouched, on NaN/Inf.
    let apply (rule: IFusionRule) (seed: int64) (map: SkillUnitMap) (previousScores: float[]) (currentScores: float[])
              (categories: UnitCategory[]) (previous: ParameterSnapshot) (model: ILanguageModel) : FusionReport =
        ModelFusion.Apply(model, previous, null, map, previousScores, currentScores, categories, rule, seed)

    /// As `apply`, with a separate base (the pre-trained model) for task-vector rules.
    let applyWithBase (baseline: ParameterSnapshot) (rule: IFusionRule) (seed: int64) (map: SkillUnitMap) (previousScores: float[])
                      (currentScores: float[]) (categories: UnitCategory[]) (previous: ParameterSnapshot) (model: ILanguageModel) : FusionReport =
        ModelFusion.Apply(model, previous, baseline, map, previousScores, currentScores, categories, rule, seed)
