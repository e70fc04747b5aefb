namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Training
open Klf.Training.Regularizers

/// A strategy known by name: the settings it accepts and how to build it from them. Register your
/// own with `Strategy.register`; it then runs through `Experiment.execute` and `klf run --config`
/// like the shipped ones.
type StrategyDefinition =
    { Name: string
      /// One line for listings.
      Doc: string
      /// The keys of its settings (`label` and `best-validation` are accepted by every strategy).
      Keys: SettingKey list
      /// Builds the strategy from checked settings; report a bad value with `settings.Fail`.
      Create: StrategySettings -> Strategy }

/// The strategy registry: the shipped strategies by name (built by the family modules `Plain`,
/// `KifStrategy`, `RecurrentKifStrategy`, `IncrementalLora`, `Replay`, `Regularizers`), your own
/// (`register`), and strategy specs from configs and command lines.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Strategy =
    let private loraOf (s: StrategySettings) = LoraSettings.read s (LoraSettings.ofRank 8)
    let private memoryOf (s: StrategySettings) =
        let f = s.Float("memory", Replay.DefaultFraction)
        if not (f > 0.0 && f <= 1.0) then s.Fail("memory", $"the memory fraction must lie in (0, 1], got {Setting.numberText f}")
        f, s.Int("memory-seed", Replay.DefaultSeed)

    let private shipped : StrategyDefinition list =
        let def name doc keys create = { Name = name; Doc = doc; Keys = keys; Create = create }
        [ def "seqft" "sequential full fine-tuning" [] (fun _ -> Plain.seqFT)
          def "seqlora" "one LoRA adapter through the sequence (r 8, α 16, q and v)" LoraSettings.keys (fun s -> Plain.seqLoraWith (loraOf s))
          def "kif" "reference KIF, full fine-tuning" (KifSettings.keysFor false) (fun s -> KifStrategy.kifWith "kif" (KifSettings.read s KifSettings.reference))
          def "kif-neuron" "KIF with neuron-16 and head units, per-module-type normalisation, λ = 1 for neither (a project variant)" (KifSettings.keysFor false)
              (fun s -> KifStrategy.kifWith "kif-neuron" (KifSettings.read s KifSettings.neuron))
          def "kif-lora" "reference KIF-LoRA (rank-1 units, r 8)" (KifSettings.keysFor true) (fun s -> KifStrategy.kifWith "kif-lora" (KifSettings.read s (KifSettings.lora 8)))
          def "rkif" "Recurrent-KIF, full fine-tuning" (RecurrentKifSettings.keysFor false) (fun s -> RecurrentKifStrategy.recurrentKifWith "rkif" (RecurrentKifSettings.read s RecurrentKifSettings.full))
          def "rkif-lora" "Recurrent-KIF on a LoRA (r 8, α 32)" (RecurrentKifSettings.keysFor true) (fun s -> RecurrentKifStrategy.recurrentKifWith "rkif-lora" (RecurrentKifSettings.read s (RecurrentKifSettings.lora 8)))
          def "inclora" "a new LoRA adapter per task" LoraSettings.keys (fun s -> IncrementalLora.incLoraWith (loraOf s))
          def "olora" "O-LoRA (λ1 0.5)" (LoraSettings.keys @ [ { Key = "lambda1"; Kind = SettingKind.Number; Doc = "λ1 of the orthogonality penalty (0.5)" } ])
              (fun s -> IncrementalLora.oLoraWithSettings (loraOf s) (s.Float("lambda1", OLoraPenalty.DefaultLambda)))
          def "ewc" "EWC (λ 5000 and 32 Fisher examples: project choices)"
              [ { Key = "lambda"; Kind = SettingKind.Number; Doc = "EWC strength λ (5000, a project choice)" }
                { Key = "samples"; Kind = SettingKind.Integer; Doc = "training examples of each Fisher estimate (32, a project choice)" } ]
              (fun s ->
                  let n = s.Int("samples", ElasticWeightConsolidation.DefaultSamples)
                  if n < 1 then s.Fail("samples", $"must be at least 1, got {n}")
                  Regularizers.ewcWith (s.Float("lambda", ElasticWeightConsolidation.DefaultLambda)) n)
          def "replay" "replay of 2 % of each earlier task" KifSettings.memoryKeys (fun s -> let f, seed = memoryOf s in Replay.replayWith seed f)
          def "kif-replay" "reference KIF with the replay memory" (KifSettings.keysFor false) (fun s -> KifStrategy.kifWith "kif-replay" (KifSettings.read s KifSettings.replay))
          def "mtl" "joint training on every task (the upper bound)" [] (fun _ -> Plain.mtl) ]

    let private registry = Collections.Generic.List<StrategyDefinition>(shipped)

    /// Adds a strategy definition (or replaces a registered one of the same name that is not shipped).
    /// Names are compared without case; replacing a shipped strategy is an error.
    let register (definition: StrategyDefinition) : unit =
        lock registry (fun () ->
            if String.IsNullOrWhiteSpace definition.Name then invalidArg "definition" "a strategy needs a name"
            if shipped |> List.exists (fun d -> String.Equals(d.Name, definition.Name, StringComparison.OrdinalIgnoreCase)) then
                invalidArg "definition" $"strategy \"{definition.Name}\" is shipped with Klf; register yours under another name"
            match Seq.tryFindIndex (fun (d: StrategyDefinition) -> String.Equals(d.Name, definition.Name, StringComparison.OrdinalIgnoreCase)) registry with
            | Some i -> registry[i] <- definition
            | None -> registry.Add definition)

    /// Registers a strategy that takes no settings.
    let registerPlain (strategy: Strategy) (doc: string) : unit =
        register { Name = strategy.Name; Doc = doc; Keys = []; Create = fun _ -> strategy }

    /// Every registered definition, shipped ones first.
    let definitions () : StrategyDefinition list = lock registry (fun () -> List.ofSeq registry)

    /// The names of the registered strategies, shipped ones first.
    let names () : string list = definitions () |> List.map (fun d -> d.Name)

    /// The definition of a name; an unknown name lists the known ones.
    let definition (name: string) : StrategyDefinition =
        match definitions () |> List.tryFind (fun d -> String.Equals(d.Name, name, StringComparison.OrdinalIgnoreCase)) with
        | Some d -> d
        | None ->
            let known = String.Join(", ", names ())
            invalidArg "name" $"unknown strategy \"{name}\" (known: {known})"

    /// The strategy of a spec: built from its settings, named by its label, with `best-validation` applied.
    /// `source` names where the spec was written in errors.
    let ofSpecIn (source: string) (spec: StrategySpec) : Strategy =
        let d = definition spec.Name
        let own = spec.Settings |> List.filter (fun (k, _) -> k <> "label" && k <> "best-validation")
        let strategy =
            try d.Create(StrategySettings(source, d.Name, own))
            with :? ArgumentException as e -> raise (InvalidDataException $"{source}: strategy {d.Name}: {e.Message}")
        let best = StrategySettings(source, d.Name, spec.Settings).BoolOption "best-validation"
        { Name = spec.Label
          Start = fun model ->
            let run = strategy.Start model
            match best with
            | Some b -> { run with BestValidation = Some b }
            | None -> run }

    /// The strategy of a spec (see `ofSpecIn`).
    let ofSpec (spec: StrategySpec) : Strategy = ofSpecIn "strategy" spec

    /// A strategy by name with its defaults; unknown names list the known ones.
    let byName (name: string) : Strategy =
        let d = definition name
        ofSpec (StrategySpec.named d.Name)

    /// The shipped strategies with their defaults (LoRA rank 8).
    let all : Strategy list = shipped |> List.map (fun d -> ofSpec (StrategySpec.named d.Name))

    /// The specs one written strategy stands for: `name` with `settings` (sweeps, i.e. lists where a
    /// key takes one value, expand into one spec per combination), checked against the strategy's keys
    /// and built once, so unknown keys and bad values fail here, naming `source`, the strategy and the key.
    let specs (source: string) (name: string) (settings: (string * Setting) list) : StrategySpec list =
        let d =
            try definition name
            with :? ArgumentException as e -> raise (InvalidDataException $"{source}: {e.Message}")
        let fail key what = InvalidDataException $"{source}: strategy {d.Name}: {key}: {what}" :> exn
        let given = StrategySettings(source, d.Name, settings)
        let label = if given.Has "label" then Some(given.Text("label", "")) else None
        [ for combo, swept in StrategySpec.expand fail (d.Keys @ StrategySpec.commonKeys) settings ->
            let spec = { Name = d.Name; Label = StrategySpec.label d.Name label combo swept; Settings = combo }
            ofSpecIn source spec |> ignore
            spec ]

    /// The specs of one entry of a config's `strategies`: a name, or an object `{name, key: value, …}`.
    let specsOfJson (source: string) (node: JsonNode) : StrategySpec list =
        match node with
        | :? JsonObject as o ->
            let name =
                match o["name"] with
                | :? JsonValue as v when v.GetValueKind() = Text.Json.JsonValueKind.String -> v.GetValue<string>()
                | _ -> raise (InvalidDataException $"{source}: a strategy written as an object needs a name")
            specs source name [ for KeyValue(k, v) in o do if k <> "name" then yield k, Setting.ofJson $"{source}: strategy {name}: {k}" v ]
        | :? JsonValue as v when v.GetValueKind() = Text.Json.JsonValueKind.String ->
            let name, settings = Setting.parseStrategy source (v.GetValue<string>())
            specs source name settings
        | _ -> raise (InvalidDataException $"{source}: a strategy is a name or an object {{name, settings…}}")

    /// The specs of a command-line list: `seqft,kif(top=0.3),kif(gamma=[0.5,0.9]),mtl`.
    let specsOfText (source: string) (text: string) : StrategySpec list =
        [ for part in Setting.splitTop ',' text do
            let name, settings = Setting.parseStrategy source part
            yield! specs source name settings ]

    /// Checks that labels are distinct (also as folder names); the error names both.
    let checkLabels (source: string) (specs: StrategySpec list) : unit =
        let seen = Collections.Generic.Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
        for s in specs do
            let folder = StrategySpec.folderName s.Label
            match seen.TryGetValue folder with
            | true, other -> raise (InvalidDataException $"{source}: strategies \"{other}\" and \"{s.Label}\" would share a label or run folder; give one a label")
            | _ -> seen[folder] <- s.Label
