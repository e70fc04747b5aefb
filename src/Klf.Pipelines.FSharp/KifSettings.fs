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
            elif model.Family = ModelFamily.DecoderOnly then [| "q_proj"; "v_proj" |]
            else [| "q"; "v" |]
        LoraConfig(R = s.Rank, Alpha = s.Alpha, Dropout = s.Dropout, TargetModules = targets, AdapterName = name)

    /// The keys of a LoRA adapter.
    let keys : SettingKey list =
        [ { Key = "r"; Kind = SettingKind.Integer; Doc = "LoRA rank" }
          { Key = "alpha"; Kind = SettingKind.Number; Doc = "LoRA α (scaling α/r)" }
          { Key = "dropout"; Kind = SettingKind.Number; Doc = "LoRA dropout" }
          { Key = "targets"; Kind = SettingKind.Texts; Doc = "adapted modules (default q and v)" } ]

    /// `s` with the keys that are set; a rank change without α keeps α = 2r.
    let read (settings: StrategySettings) (s: LoraSettings) : LoraSettings =
        let r = settings.Int("r", s.Rank)
        if r < 1 then settings.Fail("r", $"must be at least 1, got {r}")
        let alpha = settings.Float("alpha", (if settings.Has "r" && not (settings.Has "alpha") then float (2 * r) else s.Alpha))
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

/// Every constant of KIF as one value, from which a strategy is built (`Strategy.kifWith`). The
/// presets `reference`, `neuron` and `lora` are named values of it; a config changes any field.
type KifSettings =
    { /// Skill-unit partitioner (`SkillUnitPartitioners` names: full, lora-matrix, lora-rank1, head, neuron, neuron-B).
      Units: string
      /// First order |w·g| or second order |w·g − ½(w·g)²|.
      Order: ImportanceOrder
      Beta1: float
      Beta2: float
      /// Skip optimizer step 0 (the reference: true).
      SkipFirst: bool
      /// Skip the last step (the reference: false).
      SkipLast: bool
      Normalisation: NormalisationScope
      /// Fraction of units important per distribution.
      Top: float
      /// γ of the accumulation.
      Gamma: float
      /// A fusion rule of `FusionRules`, with parameters (λ table, τ, …) over its defaults.
      Rule: string
      RuleParameters: (string * float) list
      /// Keep the pre-trained weights as the base of task vectors.
      KeepBaseline: bool
      /// Seed of stochastic rules.
      Seed: int64
      /// LoRA adapter (KIF-LoRA); None: full fine-tuning.
      Lora: LoraSettings option
      /// λ_orth of the orthogonality term on the adapter (0: none).
      Orthogonality: float
      /// Replay memory fraction of each earlier task (0: none) and its seed.
      Memory: float
      MemorySeed: int }

/// The KIF presets, the keys a KIF strategy accepts, and the conversion to `KifOptions`.
[<RequireQualifiedAccess>]
module KifSettings =
    /// Reference KIF for full fine-tuning: whole-tensor units, first-order importance (β 0.85, the
    /// first step skipped, the last counted), global min-max, top 20 %, γ 0.7, the static rule 0.3 / 0 / 1 / 0.5.
    let reference : KifSettings =
        { Units = FullFineTuningPartitioner.PartitionerName
          Order = ImportanceOrder.First
          Beta1 = 0.85
          Beta2 = 0.85
          SkipFirst = true
          SkipLast = false
          Normalisation = NormalisationScope.Global
          Top = 0.2
          Gamma = 0.7
          Rule = "kif-static"
          RuleParameters = []
          KeepBaseline = false
          Seed = 0L
          Lora = None
          Orthogonality = 0.0
          Memory = 0.0
          MemorySeed = Replay.DefaultSeed }

    /// `kif-neuron`, a variant of this project: neuron-16 and head units, per-module-type
    /// normalisation, λ = 1 for units important to neither (see `KifOptions.NeuronBlocks`).
    let neuron : KifSettings =
        { reference with Units = "neuron-16"; Normalisation = NormalisationScope.ModuleType; RuleParameters = [ "neither", 1.0 ] }

    /// Reference KIF-LoRA: a LoRA of rank r (α = 2r, dropout 0.05, q and v), rank-1 units, second-order
    /// importance, the adaptive rule (τ = 0.25) and the orthogonality term (λ_orth = 0.1).
    let lora (r: int) : KifSettings =
        { reference with
            Units = LoraRank1Partitioner.PartitionerName
            Order = ImportanceOrder.Second
            Rule = "kif-adaptive"
            Lora = Some(LoraSettings.ofRank r)
            Orthogonality = Orthogonality.DefaultLambda }

    /// Reference KIF with the replay memory (2 % of each earlier task, seed 42).
    let replay : KifSettings = { reference with Memory = Replay.DefaultFraction }

    let private orders = [ "first", ImportanceOrder.First; "second", ImportanceOrder.Second ]
    let private scopes = [ "global", NormalisationScope.Global; "layer", NormalisationScope.Layer; "module-type", NormalisationScope.ModuleType ]

    /// The name of a normalisation scope in settings.
    let scopeName (s: NormalisationScope) = scopes |> List.find (snd >> (=) s) |> fst

    /// The name of an importance order in settings.
    let orderName (o: ImportanceOrder) = orders |> List.find (snd >> (=) o) |> fst

    /// Reads `order` (first | second).
    let readOrder (settings: StrategySettings) (fallback: ImportanceOrder) =
        let t = settings.Text("order", orderName fallback)
        match orders |> List.tryFind (fst >> (=) t) with
        | Some(_, o) -> o
        | None -> settings.Fail("order", $"\"{t}\" is not first or second")

    /// A number setting that must pass `check`; otherwise the error says `what` and the value.
    let checkedFloat (settings: StrategySettings) (key: string) (fallback: float) (check: float -> bool) (what: string) : float =
        let v = settings.Float(key, fallback)
        if not (check v) then settings.Fail(key, $"{what}, got {Setting.numberText v}")
        v

    /// The importance keys shared by KIF and Recurrent-KIF.
    let importanceKeys : SettingKey list =
        [ { Key = "order"; Kind = SettingKind.Text; Doc = "importance order: first |w·g| or second |w·g − ½(w·g)²|" }
          { Key = "beta1"; Kind = SettingKind.Number; Doc = "EMA factor of the sensitivity (0.85)" }
          { Key = "beta2"; Kind = SettingKind.Number; Doc = "EMA factor of the uncertainty (0.85)" }
          { Key = "skip-first"; Kind = SettingKind.Flag; Doc = "skip optimizer step 0 in the importance (true, as the reference)" }
          { Key = "skip-last"; Kind = SettingKind.Flag; Doc = "skip the last step in the importance (false, as the reference)" }
          { Key = "top"; Kind = SettingKind.Number; Doc = "fraction counted important (0.2)" } ]

    /// The replay keys.
    let memoryKeys : SettingKey list =
        [ { Key = "memory"; Kind = SettingKind.Number; Doc = "replay memory: fraction of each earlier task's training set (0: none)" }
          { Key = "memory-seed"; Kind = SettingKind.Integer; Doc = "seed of the memory sampling (42)" } ]

    /// The keys a KIF strategy accepts (besides `label` and `best-validation`); `lora` adds the
    /// adapter's keys and the orthogonality term.
    let keysFor (lora: bool) : SettingKey list =
        [ { Key = "units"; Kind = SettingKind.Text; Doc = "skill-unit partitioner (full, lora-matrix, lora-rank1, head, neuron, neuron-B)" } ]
        @ importanceKeys
        @ [ { Key = "normalisation"; Kind = SettingKind.Text; Doc = "min-max groups: global, layer or module-type" }
            { Key = "gamma"; Kind = SettingKind.Number; Doc = "γ of the accumulation (0.7)" }
            { Key = "rule"; Kind = SettingKind.Rule; Doc = "fusion rule: a name, or {name, parameter: value, …}" }
            { Key = "lambda"; Kind = SettingKind.Table [ for k in [ "shared"; "previous-only"; "current-only"; "neither" ] -> { Key = k; Kind = SettingKind.Number; Doc = $"λ of {k} units" } ]; Doc = "the static rule's λ table (sets rule kif-static)" }
            { Key = "tau"; Kind = SettingKind.Number; Doc = "τ of the adaptive rule (sets rule kif-adaptive)" }
            { Key = "keep-baseline"; Kind = SettingKind.Flag; Doc = "keep the pre-trained weights as the base of task vectors" }
            { Key = "seed"; Kind = SettingKind.Integer; Doc = "seed of stochastic rules (DARE)" } ]
        @ memoryKeys
        @ (if lora then { Key = "orthogonality"; Kind = SettingKind.Number; Doc = "λ_orth of the orthogonality term on the adapter (0.1; 0: none)" } :: LoraSettings.keys else [])

    /// `ImportanceOptions` from the settings.
    let importance (order: ImportanceOrder) (beta1: float) (beta2: float) (skipFirst: bool) (skipLast: bool) =
        ImportanceOptions(Order = order, Beta1 = beta1, Beta2 = beta2, SkipFirstStep = skipFirst, SkipLastStep = skipLast)

    /// The fusion rule the settings name, built through the rule registry.
    let rule (s: KifSettings) : IFusionRule =
        FusionRules.Create(s.Rule, dict s.RuleParameters |> Collections.Generic.Dictionary)

    /// The session options of the settings.
    let toOptions (s: KifSettings) : KifOptions =
        KifOptions(
            Partitioner = SkillUnitPartitioners.ByName s.Units,
            Importance = importance s.Order s.Beta1 s.Beta2 s.SkipFirst s.SkipLast,
            Normalisation = s.Normalisation,
            TopFraction = s.Top,
            Gamma = s.Gamma,
            Rule = rule s,
            KeepBaseline = s.KeepBaseline,
            Seed = s.Seed)

    /// `preset` with every key of `settings` applied; values are checked (range, known names, the
    /// rule and its parameters), each error naming the source, the strategy and the key.
    let read (settings: StrategySettings) (preset: KifSettings) : KifSettings =
        let f = checkedFloat settings
        let units = settings.Text("units", preset.Units)
        (try SkillUnitPartitioners.ByName units |> ignore with :? ArgumentException as e -> settings.Fail("units", e.Message))
        let normalisation =
            let t = settings.Text("normalisation", scopeName preset.Normalisation)
            match scopes |> List.tryFind (fst >> (=) t) with
            | Some(_, s) -> s
            | None -> settings.Fail("normalisation", $"\"{t}\" is not global, layer or module-type")
        let ruleName, ruleParams =
            let given = [ for k in [ "rule"; "lambda"; "tau" ] do if settings.Has k then yield k ]
            if given.Length > 1 then
                let both = String.Join(" and ", given)
                settings.Fail(given[1], $"give one of rule, lambda and tau, not {both}")
            if settings.Has "lambda" then
                let t = settings.Table "lambda"
                "kif-static", [ for k, _ in t.Values -> k, t.Float(k, 0.0) ]
            elif settings.Has "tau" then "kif-adaptive", [ "tau", f "tau" 0.25 (fun x -> x > 0.0) "τ must be positive" ]
            elif settings.Has "rule" then
                match settings.Values |> List.find (fst >> (=) "rule") |> snd with
                | Setting.Str name -> name, []
                | Setting.Table kvs ->
                    let t = settings.Table "rule"
                    let name = t.Text("name", "")
                    if name = "" then settings.Fail("rule", "a rule table needs a name")
                    name, [ for k, _ in kvs do if k <> "name" then yield k, t.Float(k, 0.0) ]
                | v -> settings.Fail("rule", $"\"{Setting.text v}\" is not a rule")
            else preset.Rule, preset.RuleParameters
        (try FusionRules.Create(ruleName, dict ruleParams |> Collections.Generic.Dictionary) |> ignore
         with :? ArgumentException as e -> settings.Fail((if settings.Has "lambda" then "lambda" elif settings.Has "tau" then "tau" else "rule"), e.Message))
        let lora = LoraSettings.readOption settings preset.Lora "kif-lora"
        let orthogonality = f "orthogonality" preset.Orthogonality (fun x -> x >= 0.0) "must be at least 0"
        if orthogonality > 0.0 && lora.IsNone then settings.Fail("orthogonality", "needs a LoRA adapter (kif-lora)")
        { Units = units
          Order = readOrder settings preset.Order
          Beta1 = f "beta1" preset.Beta1 (fun x -> x > 0.0 && x < 1.0) "β1 must lie in (0, 1)"
          Beta2 = f "beta2" preset.Beta2 (fun x -> x > 0.0 && x < 1.0) "β2 must lie in (0, 1)"
          SkipFirst = settings.Bool("skip-first", preset.SkipFirst)
          SkipLast = settings.Bool("skip-last", preset.SkipLast)
          Normalisation = normalisation
          Top = f "top" preset.Top (fun x -> x >= 0.0 && x <= 1.0) "the top fraction must lie in [0, 1]"
          Gamma = f "gamma" preset.Gamma (fun x -> x >= 0.0 && x <= 1.0) "γ must lie in [0, 1]"
          Rule = ruleName
          RuleParameters = ruleParams
          KeepBaseline = settings.Bool("keep-baseline", preset.KeepBaseline)
          Seed = int64 (settings.Int("seed", int preset.Seed))
          Lora = lora
          Orthogonality = orthogonality
          Memory = f "memory" preset.Memory (fun x -> x >= 0.0 && x <= 1.0) "the memory fraction must lie in [0, 1]"
          MemorySeed = settings.Int("memory-seed", preset.MemorySeed) }

/// Every constant of Recurrent-KIF as one value (`Strategy.recurrentKifWith`); presets `full` and `lora`.
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
