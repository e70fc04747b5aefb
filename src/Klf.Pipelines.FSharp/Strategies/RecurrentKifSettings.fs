namespace Klf.Pipelines

open System
open Klf.Adapters
open Klf.Fusion
open Klf.Importance
open Klf.Kif
open Klf.Models
open Klf.SkillUnits

/// Every constant of Recurrent-KIF as one value (`RecurrentKifStrategy.recurrentKifWith`); presets `full` and `lora`.
type RecurrentKifSettings =
    { Order: ImportanceOrder
      Beta1: float
      Beta2: float
      SkipFirst: bool
      SkipLast: bool
      /// Fraction of elements in each mask.
      Top: float
      /// Q and M.
      InnerSteps: int
      OuterSteps: int
      /// (c_in, c_out) for (both, neither, inner only, outer only).
      Both: float * float
      Neither: float * float
      InnerOnly: float * float
      OuterOnly: float * float
      ResetInner: bool
      OuterAcrossTasks: bool
      /// Examples per memory batch (0: the training batch size).
      OuterBatch: int
      /// The replay memory (2 % of each earlier task, seed 42).
      Memory: float
      MemorySeed: int
      /// LoRA adapter (rkif-lora); None: full fine-tuning.
      Lora: LoraSettings option }

/// The Recurrent-KIF presets and keys.
[<RequireQualifiedAccess>]
module RecurrentKifSettings =
    /// Recurrent-KIF with full fine-tuning, reference constants: Q = 8, M = 4, top 20 %, the table
    /// (1,1)→(0.4,0.6), (0,0)→(0.5,0.5), (1,0)→(1,0), (0,1)→(0,1), first-order importance (the
    /// authors' code), inner reset after each merge, outer over the merges of a task, 2 % memory.
    let full : RecurrentKifSettings =
        { Order = ImportanceOrder.First
          Beta1 = 0.85
          Beta2 = 0.85
          SkipFirst = true
          SkipLast = false
          Top = 0.2
          InnerSteps = 8
          OuterSteps = 4
          Both = (0.4, 0.6)
          Neither = (0.5, 0.5)
          InnerOnly = (1.0, 0.0)
          OuterOnly = (0.0, 1.0)
          ResetInner = true
          OuterAcrossTasks = false
          OuterBatch = 0
          Memory = Replay.DefaultFraction
          MemorySeed = Replay.DefaultSeed
          Lora = None }

    /// Recurrent-KIF on a LoRA of rank r with the authors' α = 32 (at r = 8: α = 4r), dropout 0.05, q and v.
    let lora (r: int) : RecurrentKifSettings =
        { full with Lora = Some { LoraSettings.ofRank r with Alpha = float (4 * r) } }

    /// The keys a Recurrent-KIF strategy accepts (besides `label` and `best-validation`); `lora` adds the adapter's.
    let keysFor (lora: bool) : SettingKey list =
        KifSettings.importanceKeys
        @ [ { Key = "inner-steps"; Kind = SettingKind.Integer; Doc = "Q: current-task steps per round (8)" }
            { Key = "outer-steps"; Kind = SettingKind.Integer; Doc = "M: memory steps per round (4)" }
            { Key = "coefficients"; Kind = SettingKind.Table [ for k in [ "both"; "neither"; "inner-only"; "outer-only" ] -> { Key = k; Kind = SettingKind.Numbers; Doc = $"[c_in, c_out] of {k} elements" } ]; Doc = "the merge table" }
            { Key = "reset-inner"; Kind = SettingKind.Flag; Doc = "reset the inner importance after each merge (true)" }
            { Key = "outer-across-tasks"; Kind = SettingKind.Flag; Doc = "keep the outer importance from task to task (false, as the reference)" }
            { Key = "outer-batch"; Kind = SettingKind.Integer; Doc = "examples per memory batch (0: the training batch)" } ]
        @ KifSettings.memoryKeys @ (if lora then LoraSettings.keys else [])

    /// The session options of the settings.
    let toOptions (s: RecurrentKifSettings) : RecurrentKifOptions =
        let c (a, b) = MergeCoefficients(a, b)
        RecurrentKifOptions(
            Importance = KifSettings.importance s.Order s.Beta1 s.Beta2 s.SkipFirst s.SkipLast,
            TopFraction = s.Top,
            InnerSteps = s.InnerSteps,
            OuterSteps = s.OuterSteps,
            Table = RecurrentMergeTable(c s.Both, c s.Neither, c s.InnerOnly, c s.OuterOnly),
            ResetInnerAfterMerge = s.ResetInner,
            OuterAcrossTasks = s.OuterAcrossTasks)

    /// `preset` with every key of `settings` applied, values checked.
    let read (settings: StrategySettings) (preset: RecurrentKifSettings) : RecurrentKifSettings =
        let f = KifSettings.checkedFloat settings
        let positive key fallback =
            let v = settings.Int(key, fallback)
            if v < 1 then settings.Fail(key, $"must be at least 1, got {v}")
            v
        let table = settings.Table "coefficients"
        let pair key (fallback: float * float) =
            match table.Numbers(key, [ fst fallback; snd fallback ]) with
            | [ a; b ] -> a, b
            | xs -> table.Fail(key, $"needs [c_in, c_out], got {xs.Length} numbers")
        let lora = LoraSettings.readOption settings preset.Lora "rkif-lora"
        let outerBatch = settings.Int("outer-batch", preset.OuterBatch)
        if outerBatch < 0 then settings.Fail("outer-batch", $"must be at least 0, got {outerBatch}")
        { Order = KifSettings.readOrder settings preset.Order
          Beta1 = f "beta1" preset.Beta1 (fun x -> x > 0.0 && x < 1.0) "β1 must lie in (0, 1)"
          Beta2 = f "beta2" preset.Beta2 (fun x -> x > 0.0 && x < 1.0) "β2 must lie in (0, 1)"
          SkipFirst = settings.Bool("skip-first", preset.SkipFirst)
          SkipLast = settings.Bool("skip-last", preset.SkipLast)
          Top = f "top" preset.Top (fun x -> x >= 0.0 && x <= 1.0) "the top fraction must lie in [0, 1]"
          InnerSteps = positive "inner-steps" preset.InnerSteps
          OuterSteps = positive "outer-steps" preset.OuterSteps
          Both = pair "both" preset.Both
          Neither = pair "neither" preset.Neither
          InnerOnly = pair "inner-only" preset.InnerOnly
          OuterOnly = pair "outer-only" preset.OuterOnly
          ResetInner = settings.Bool("reset-inner", preset.ResetInner)
          OuterAcrossTasks = settings.Bool("outer-across-tasks", preset.OuterAcrossTasks)
          OuterBatch = outerBatch
          Memory = f "memory" preset.Memory (fun x -> x > 0.0 && x <= 1.0) "Recurrent-KIF needs a memory: the fraction must lie in (0, 1]"
          MemorySeed = settings.Int("memory-seed", preset.MemorySeed)
          Lora = lora }
