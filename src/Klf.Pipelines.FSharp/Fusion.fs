namespace Klf.Pipelines

open System
open Klf.Models
open Klf.SkillUnits
open Klf.Fusion

/// Fusion for F# pipelines: curried, data-last wrappers over the fusion rules, ParameterSnapshot
/// and ModelFusion.
[<RequireQualifiedAccess>]
module Fusion =
    /// The names of the registered rules (`FusionRules`; the shipped ones first).
    let ruleNames () : string list = List.ofSeq FusionRules.Names

    /// A registered rule by name or alias (`static`, `adaptive`), with its defaults; unknown names
    /// throw ArgumentException listing the known ones.
    let rule (name: string) : IFusionRule = FusionRules.Create name

    /// A registered rule with parameters over its defaults, e.g. `ruleWith "kif-static" [ "neither", 1.0 ]`.
    let ruleWith (name: string) (parameters: (string * float) list) : IFusionRule =
        FusionRules.Create(name, dict parameters |> Collections.Generic.Dictionary)

    /// Registers a rule written in F# under `name`, with its parameters (name, default, description)
    /// and a builder from their values; it can then be named in configs, KIF settings and `klf fuse`.
    let register (name: string) (description: string) (parameters: (string * float * string) list)
                 (create: Map<string, float> -> IFusionRule) : unit =
        let ps = [| for n, d, doc in parameters -> FusionRuleParameter(n, d, doc) |]
        FusionRules.Register(FusionRuleDefinition(name, description, ps, Func<_, _>(fun values -> create (values |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq))))

    /// Detached copies of the model's trainable parameters (the caller disposes the snapshot).
    let snapshot (model: ILanguageModel) : ParameterSnapshot = ParameterSnapshot.TakeTrainable model

    /// Categories from the two importance classifications (arrays aligned with the unit map).
    let categories (importantPrevious: bool[]) (importantCurrent: bool[]) : UnitCategory[] =
        Categories.Classify(importantPrevious, importantCurrent)

    /// Fuses `model` (θ_k, written in place) with `previous` (θ̄_{k−1}, also the task-vector base)
    /// unit by unit as `plan` says (`FusionPlan(map, previousScores, currentScores, categories)`);
    /// throws UnsafeFusionException, leaving the model untouched, on NaN/Inf.
    let apply (rule: IFusionRule) (seed: int64) (plan: FusionPlan) (previous: ParameterSnapshot) (model: ILanguageModel) : FusionReport =
        ModelFusion.Apply(model, previous, plan, rule, seed)

    /// As `apply`, with a separate base (the pre-trained model) for task-vector rules.
    let applyWithBase (baseline: ParameterSnapshot) (rule: IFusionRule) (seed: int64) (plan: FusionPlan)
                      (previous: ParameterSnapshot) (model: ILanguageModel) : FusionReport =
        ModelFusion.Apply(model, previous, plan, rule, seed, baseline)
