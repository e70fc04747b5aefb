namespace Klf.Pipelines

open System
open Klf.Adapters
open Klf.Fusion
open Klf.Importance
open Klf.Kif
open Klf.Models
open Klf.SkillUnits
open Klf.Training
open Klf.Training.Regularizers

/// Every constant of KIF as one value, from which a strategy is built (`KifStrategy.kifWith`). The
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
