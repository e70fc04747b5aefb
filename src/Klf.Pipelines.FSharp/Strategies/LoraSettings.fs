namespace Klf.Pipelines

open System
open Klf.Adapters
open Klf.Fusion
open Klf.Importance
open Klf.Kif
open Klf.Models
open Klf.SkillUnits

/// A LoRA adapter of a strategy: rank, α, dropout and target modules.
type LoraSettings =
    { Rank: int
      Alpha: float
      Dropout: float
      /// Module names (PEFT suffix matching); empty: q and v of the model's family.
      Targets: string list }

/// LoRA settings and their keys.
[<RequireQualifiedAccess>]
module LoraSettings =
    /// Rank r with the project's convention α = 2r, dropout 0.05, on q and v (KIF-LoRA's α = 16 at r = 8).
    let ofRank (r: int) : LoraSettings =
        let c = LoraConfig.ForRank r
        { Rank = r; Alpha = c.Alpha; Dropout = c.Dropout; Targets = [] }

    /// The LoRA configuration for a model (adapter name `name`).
    let config (model: ILanguageModel) (name: string) (s: LoraSettings) : LoraConfig =
        let targets =
            if not s.Targets.IsEmpty then Array.ofList s.Targets
            else LoraConfig.DefaultTargets model.Family
        LoraConfig(R = s.Rank, Alpha = s.Alpha, Dropout = s.Dropout, TargetModules = targets, AdapterName = name)

    /// The keys of a LoRA adapter.
    let keys : SettingKey list =
        [ { Key = "r"; Kind = SettingKind.Integer; Doc = "LoRA rank" }
          { Key = "alpha"; Kind = SettingKind.Number; Doc = "LoRA α (scaling α/r)" }
          { Key = "dropout"; Kind = SettingKind.Number; Doc = "LoRA dropout" }
          { Key = "targets"; Kind = SettingKind.Texts; Doc = "adapted modules (default q and v)" } ]

    /// `s` with the keys that are set; a rank change without α takes the convention's α (`LoraConfig.ForRank`).
    let read (settings: StrategySettings) (s: LoraSettings) : LoraSettings =
        let r = settings.Int("r", s.Rank)
        if r < 1 then settings.Fail("r", $"must be at least 1, got {r}")
        let alpha = settings.Float("alpha", (if settings.Has "r" && not (settings.Has "alpha") then (LoraConfig.ForRank r).Alpha else s.Alpha))
        let dropout = settings.Float("dropout", s.Dropout)
        if not (dropout >= 0.0 && dropout < 1.0) then settings.Fail("dropout", $"must lie in [0, 1), got {dropout}")
        { Rank = r; Alpha = alpha; Dropout = dropout; Targets = settings.Texts("targets", s.Targets) }

    /// `read` for a strategy that may have an adapter: None stays None, and LoRA keys are then an
    /// error saying which strategy takes them.
    let readOption (settings: StrategySettings) (preset: LoraSettings option) (loraStrategy: string) : LoraSettings option =
        match preset with
        | Some l -> Some(read settings l)
        | None ->
            for k in keys do
                if settings.Has k.Key then settings.Fail(k.Key, $"this strategy fine-tunes all weights; LoRA settings belong to {loraStrategy}")
            None
