namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Models
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif

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

/// The strategies: constructors of the shipped ones, the registry, and strategy specs from configs.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Strategy =
    let private plain = StrategyRun.plain

    /// Sequential full fine-tuning: each task trains all weights, nothing protects earlier tasks.
    let seqFT : Strategy = { Name = "seqft"; Start = fun _ -> plain }

    /// One LoRA adapter trained through the whole sequence.
    let seqLoraWith (lora: LoraSettings) : Strategy =
        { Name = "seqlora"
          Start = fun model ->
            LoraAdapter.applyWith (LoraSettings.config model "default" lora) model |> ignore
            plain }

    /// One LoRA adapter of rank r (α = 2r, dropout 0.05, on q and v) trained through the whole sequence.
    let seqLora (r: int) : Strategy = seqLoraWith (LoraSettings.ofRank r)

    /// Adds a replay memory to a run: after each task its memory (`Replay.memory seed fraction`)
    /// is kept; each later task trains on its own examples followed by every earlier task's memory
    /// (the trainer's bucketed sampler mixes them into the batches).
    let withReplay (seed: int) (fraction: float) (run: StrategyRun) : StrategyRun =
        let memories = ResizeArray<Example[]>()
        { run with
            TrainExamples = fun t xs -> Array.append (run.TrainExamples t xs) (Array.concat memories)
            EndTask = fun t -> run.EndTask t; memories.Add(Replay.memory seed fraction t)
            SaveState = fun dir -> run.SaveState dir; Replay.save (Path.Combine(dir, Replay.StateFile)) (List.ofSeq memories)
            LoadState = fun dir ->
                run.LoadState dir
                memories.Clear()
                memories.AddRange(Replay.load (Path.Combine(dir, Replay.StateFile))) }

    /// A KIF strategy named `name` from its settings: the session of `KifSettings.toOptions`, a LoRA
    /// adapter with the orthogonality term when the settings have one, and the replay memory when
    /// `Memory` > 0.
    let kifWith (name: string) (settings: KifSettings) : Strategy =
        let options = KifSettings.toOptions settings
        { Name = name
          Start = fun model ->
            let lora = settings.Lora |> Option.map (fun l -> LoraAdapter.applyWith (LoraSettings.config model "default" l) model)
            let session = new KifSession(model, options)
            let run =
                { plain with
                    BeginTask = fun t ->
                        let hooks = session.BeginTask t.Name
                        match lora with
                        | Some l when settings.Orthogonality > 0.0 -> Orthogonality.AddTo(hooks, l, "default", settings.Orthogonality)
                        | _ -> hooks
                    EndTask = fun _ -> session.EndTask() |> ignore
                    SaveState = session.SaveState
                    LoadState = session.RestoreState
                    WriteOutputs = fun dir -> Kif.saveLayerImportance (Path.Combine(dir, Kif.LayerImportanceFile)) (Kif.importanceByLayer session)
                    Dispose = session.Dispose }
            if settings.Memory > 0.0 then withReplay settings.MemorySeed settings.Memory run else run }

    /// KIF with full fine-tuning and the reference settings (`KifSettings.reference`).
    let kif : Strategy = kifWith "kif" KifSettings.reference

    /// `kif-neuron` (`KifSettings.neuron`): neuron-16 and head units, per-module-type normalisation,
    /// λ = 1 for units important to neither distribution.
    let kifNeuron : Strategy = kifWith "kif-neuron" KifSettings.neuron

    /// KIF-LoRA (`KifSettings.lora r`): rank-1 units of a LoRA of rank r, second-order importance,
    /// the adaptive rule and the orthogonality term (λ_orth = 0.1).
    let kifLora (r: int) : Strategy = kifWith "kif-lora" (KifSettings.lora r)

    /// KIF (reference settings) with the replay memory; identification and fusion are unchanged.
    let kifReplay : Strategy = kifWith "kif-replay" KifSettings.replay

    /// File of a Recurrent-KIF run's merge reports (per task) in its folder and task states.
    [<Literal>]
    let MergesFile = "rkif-merges.json"

    let private mergesJson (merges: (string * RecurrentMergeReport list) seq) =
        JsonArray(
            [| for task, ms in merges ->
                let o = JsonObject()
                o["task"] <- JsonValue.Create task
                o["merges"] <- JsonArray(
                    [| for m in ms ->
                        let x = JsonObject()
                        x["round"] <- JsonValue.Create m.Round
                        x["inner-threshold"] <- JsonValue.Create m.InnerThreshold
                        x["outer-threshold"] <- JsonValue.Create m.OuterThreshold
                        x["both"] <- JsonValue.Create m.Both
                        x["inner-only"] <- JsonValue.Create m.InnerOnly
                        x["outer-only"] <- JsonValue.Create m.OuterOnly
                        x["neither"] <- JsonValue.Create m.Neither
                        x :> JsonNode |])
                o :> JsonNode |])

    let private readMerges (path: string) : (string * RecurrentMergeReport list) list =
        if not (File.Exists path) then raise (FileNotFoundException($"no Recurrent-KIF merge record at {path}", path))
        try
            [ for t in JsonNode.Parse(File.ReadAllText path).AsArray() ->
                t["task"].GetValue<string>(),
                [ for m in t["merges"].AsArray() ->
                    RecurrentMergeReport(m["round"].GetValue<int>(), m["inner-threshold"].GetValue<float>(), m["outer-threshold"].GetValue<float>(),
                                         m["both"].GetValue<int64>(), m["inner-only"].GetValue<int64>(), m["outer-only"].GetValue<int64>(), m["neither"].GetValue<int64>()) ] ]
        with
        | :? Text.Json.JsonException | :? InvalidOperationException | :? NullReferenceException as e ->
            raise (InvalidDataException $"{path}: not a Recurrent-KIF merge record ({e.Message})")

    /// A Recurrent-KIF strategy named `name` from its settings: task 1 trains plainly; from task 2 on,
    /// every Q steps on the task are followed by M steps on batches of the replay memory (2 % of each
    /// earlier task) and a merge by the masks of the inner and outer importance (`RecurrentKifSession`).
    /// Writes `rkif-merges.json` (thresholds and element counts per merge) into the run's folder.
    let recurrentKifWith (name: string) (settings: RecurrentKifSettings) : Strategy =
        let options = RecurrentKifSettings.toOptions settings
        options.Validate()
        { Name = name
          Start = fun model ->
            settings.Lora |> Option.iter (fun l -> LoraAdapter.applyWith (LoraSettings.config model "default" l) model |> ignore)
            let session = new RecurrentKifSession(model, options)
            let memories = ResizeArray<Example[]>()
            let merges = ResizeArray<string * RecurrentMergeReport list>()
            { plain with
                BeginTask = fun _ -> session.BeginTask()
                Interleave = fun _ ->
                    if memories.Count = 0 then None
                    else Some { Examples = Array.concat memories; Steps = fun seed encoded -> session.Interleave(encoded, settings.OuterBatch, seed) }
                EndTask = fun t ->
                    session.EndTask()
                    merges.Add((t.Name, List.ofSeq session.Merges))
                    memories.Add(Replay.memory settings.MemorySeed settings.Memory t)
                SaveState = fun dir ->
                    session.SaveState dir
                    Replay.save (Path.Combine(dir, Replay.StateFile)) (List.ofSeq memories)
                    Klf.Checkpoints.AtomicFile.WriteAllText(Path.Combine(dir, MergesFile), (mergesJson merges).ToJsonString())
                LoadState = fun dir ->
                    session.RestoreState dir
                    memories.Clear()
                    memories.AddRange(Replay.load (Path.Combine(dir, Replay.StateFile)))
                    merges.Clear()
                    merges.AddRange(readMerges (Path.Combine(dir, MergesFile)))
                WriteOutputs = fun dir ->
                    Klf.Checkpoints.AtomicFile.WriteAllText(Path.Combine(dir, MergesFile), (mergesJson merges).ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
                Dispose = session.Dispose } }

    /// Recurrent-KIF with full fine-tuning and the reference constants.
    let rkif : Strategy = recurrentKifWith "rkif" RecurrentKifSettings.full

    /// Recurrent-KIF on a LoRA of rank r (α = 4r, the authors' 32 at r = 8).
    let rkifLora (r: int) : Strategy = recurrentKifWith "rkif-lora" (RecurrentKifSettings.lora r)

    /// Name of the adapter IncLoRA and O-LoRA add for task k (0-based): "task{k}".
    let adapterName (k: int) : string = $"task{k}"

    /// Shared by IncLoRA and O-LoRA: at each task a new adapter named task0, task1, …; every adapter
    /// stays active, only the new one trains.
    let private incremental (name: string) (lora: LoraSettings) (lambda1: float option) : Strategy =
        { Name = name
          Start = fun model ->
            let mutable k = 0
            let countFile dir = Path.Combine(dir, "adapters.txt")
            { plain with
                SaveState = fun dir -> Klf.Checkpoints.AtomicFile.WriteAllText(countFile dir, string k)
                LoadState = fun dir ->
                    let path = countFile dir
                    let text = if File.Exists path then File.ReadAllText(path).Trim() else raise (FileNotFoundException($"{dir}: no {name} adapter count (adapters.txt)", path))
                    let n = match Int32.TryParse text with | true, v when v >= 0 -> v | _ -> raise (InvalidDataException $"{path}: expected an adapter count, found \"{text}\"")
                    for i in 0 .. n - 1 do
                        let l = LoraAdapter.applyWith (LoraSettings.config model (adapterName i) lora) model
                        l.SetTrainableAdapters(adapterName i)
                    k <- n
                BeginTask = fun _ ->
                    let current = adapterName k
                    let l = LoraAdapter.applyWith (LoraSettings.config model current lora) model
                    l.SetTrainableAdapters current
                    let previous = [ for i in 0 .. k - 1 -> adapterName i ]
                    k <- k + 1
                    let hooks = StepHooks()
                    match lambda1 with
                    | Some lam when not previous.IsEmpty -> hooks.ExtraLosses.Add(fun _ -> OLora.penalty lam l current previous)
                    | _ -> ()
                    hooks } }

    /// IncLoRA with an adapter of the given settings per task (task0, task1, …), earlier ones frozen but active.
    let incLoraWith (lora: LoraSettings) : Strategy = incremental "inclora" lora None

    /// IncLoRA with rank r (α = 2r, dropout 0.05, on q and v).
    let incLora (r: int) : Strategy = incLoraWith (LoraSettings.ofRank r)

    /// O-LoRA: IncLoRA plus the ExtraLoss λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ| (`OLora.penalty`).
    let oLoraWithSettings (lora: LoraSettings) (lambda1: float) : Strategy = incremental "olora" lora (Some lambda1)

    /// O-LoRA with rank r and λ1 (reference 0.5, `OLora.DefaultLambda`).
    let oLoraWith (r: int) (lambda1: float) : Strategy = oLoraWithSettings (LoraSettings.ofRank r) lambda1

    /// O-LoRA with rank r and λ1 = 0.5.
    let oLora (r: int) : Strategy = oLoraWith r OLora.DefaultLambda

    /// EWC with full fine-tuning: after each task the empirical diagonal Fisher over `samples`
    /// seeded training examples (batches of one) is added to the accumulated Fisher and θ* is set to
    /// the current weights; later tasks add the ExtraLoss (λ/2) · Σ F · (θ − θ*)² (see `Ewc`).
    let ewcWith (lambda: float) (samples: int) : Strategy =
        { Name = "ewc"
          Start = fun model ->
            let ewc = new Ewc(model, lambda, samples, 17)
            { plain with
                BeginTask = fun _ ->
                    let hooks = StepHooks()
                    if ewc.Fisher.Count > 0 then hooks.ExtraLosses.Add(fun _ -> ewc.Penalty())
                    hooks
                AfterFit = fun f -> ewc.Consolidate(f.Train, f.Options)
                SaveState = ewc.Save
                LoadState = ewc.Load
                Dispose = fun () -> (ewc :> IDisposable).Dispose() } }

    /// EWC with the project's choices λ = 5000 and 32 Fisher examples per task (no KIF reference fixes them).
    let ewc : Strategy = ewcWith Ewc.DefaultLambda Ewc.DefaultSamples

    /// Replay: full fine-tuning with a memory of `fraction` of each earlier task (≥ 1, label-balanced, seeded).
    let replayWith (seed: int) (fraction: float) : Strategy =
        { Name = "replay"; Start = fun _ -> withReplay seed fraction plain }

    /// Replay with the reference memory (2 %, seed 42).
    let replay : Strategy = replayWith Replay.DefaultSeed Replay.DefaultFraction

    /// MTL, the upper bound: full fine-tuning once on the union of every task's training examples
    /// with the step budget of the whole sequence (T × the per-task steps; the cheaper variant: one
    /// joint training at the last task, not one per prefix). Every row of
    /// the matrix holds the joint model's scores (a_{j,i} = a_{T,i} for i ≤ j), so AP is the
    /// upper bound, BWT and F.Ra are 0 by construction and FWT compares joint with single-task
    /// training; only AP (and FWT) are meaningful.
    let mtl : Strategy = { Name = "mtl"; Start = fun _ -> { plain with Joint = true } }

    let private loraOf (s: StrategySettings) = LoraSettings.read s (LoraSettings.ofRank 8)
    let private memoryOf (s: StrategySettings) =
        let f = s.Float("memory", Replay.DefaultFraction)
        if not (f > 0.0 && f <= 1.0) then s.Fail("memory", $"the memory fraction must lie in (0, 1], got {Setting.numberText f}")
        f, s.Int("memory-seed", Replay.DefaultSeed)

    let private shipped : StrategyDefinition list =
        let def name doc keys create = { Name = name; Doc = doc; Keys = keys; Create = create }
        [ def "seqft" "sequential full fine-tuning" [] (fun _ -> seqFT)
          def "seqlora" "one LoRA adapter through the sequence (r 8, α 16, q and v)" LoraSettings.keys (fun s -> seqLoraWith (loraOf s))
          def "kif" "reference KIF, full fine-tuning" (KifSettings.keysFor false) (fun s -> kifWith "kif" (KifSettings.read s KifSettings.reference))
          def "kif-neuron" "KIF with neuron-16 and head units, per-module-type normalisation, λ = 1 for neither (a project variant)" (KifSettings.keysFor false)
              (fun s -> kifWith "kif-neuron" (KifSettings.read s KifSettings.neuron))
          def "kif-lora" "reference KIF-LoRA (rank-1 units, r 8)" (KifSettings.keysFor true) (fun s -> kifWith "kif-lora" (KifSettings.read s (KifSettings.lora 8)))
          def "rkif" "Recurrent-KIF, full fine-tuning" (RecurrentKifSettings.keysFor false) (fun s -> recurrentKifWith "rkif" (RecurrentKifSettings.read s RecurrentKifSettings.full))
          def "rkif-lora" "Recurrent-KIF on a LoRA (r 8, α 32)" (RecurrentKifSettings.keysFor true) (fun s -> recurrentKifWith "rkif-lora" (RecurrentKifSettings.read s (RecurrentKifSettings.lora 8)))
          def "inclora" "a new LoRA adapter per task" LoraSettings.keys (fun s -> incLoraWith (loraOf s))
          def "olora" "O-LoRA (λ1 0.5)" (LoraSettings.keys @ [ { Key = "lambda1"; Kind = SettingKind.Number; Doc = "λ1 of the orthogonality penalty (0.5)" } ])
              (fun s -> oLoraWithSettings (loraOf s) (s.Float("lambda1", OLora.DefaultLambda)))
          def "ewc" "EWC (λ 5000 and 32 Fisher examples: project choices)"
              [ { Key = "lambda"; Kind = SettingKind.Number; Doc = "EWC strength λ (5000, a project choice)" }
                { Key = "samples"; Kind = SettingKind.Integer; Doc = "training examples of each Fisher estimate (32, a project choice)" } ]
              (fun s ->
                  let n = s.Int("samples", Ewc.DefaultSamples)
                  if n < 1 then s.Fail("samples", $"must be at least 1, got {n}")
                  ewcWith (s.Float("lambda", Ewc.DefaultLambda)) n)
          def "replay" "replay of 2 % of each earlier task" KifSettings.memoryKeys (fun s -> let f, seed = memoryOf s in replayWith seed f)
          def "kif-replay" "reference KIF with the replay memory" (KifSettings.keysFor false) (fun s -> kifWith "kif-replay" (KifSettings.read s KifSettings.replay))
          def "mtl" "joint training on every task (the upper bound)" [] (fun _ -> mtl) ]

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
