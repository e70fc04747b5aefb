namespace Klf.Pipelines

open System
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif
open TorchSharp

/// What a strategy sees right after the trainer fitted a task: the task, the encoded examples it
/// trained on (after `TrainExamples`) and the trainer options of the task.
type FittedTask =
    { Task: TaskData
      Train: LmExample[]
      Options: TrainerOptions }

/// A strategy running on one model: the hooks of each task of the default loop.
/// Build runs with `{ StrategyRun.plain with ... }` so that new optional hooks keep their defaults.
type StrategyRun =
    { /// Hooks for training this task (the trainer runs them).
      BeginTask: TaskData -> StepHooks
      /// Called after training the task, before evaluation (KIF fuses here).
      EndTask: TaskData -> unit
      /// Frees what the strategy holds.
      Dispose: unit -> unit
      /// The examples the current task trains on, from its own training examples (before
      /// encoding); identity by default. Replay appends its memory here.
      TrainExamples: TaskData -> Example[] -> Example[]
      /// Called after the trainer fitted a task, before `EndTask` (EWC estimates its Fisher here).
      AfterFit: FittedTask -> unit
      /// Joint training (MTL): `Continual.runWith` trains once, at the last task, on the union of
      /// every task's training examples, and fills every row of the matrix with that model's scores.
      Joint: bool
      /// Writes what the strategy carries between tasks (importance, memory, Fisher, adapter count)
      /// into a folder, between tasks. The runner saves the model's parameters itself.
      SaveState: string -> unit
      /// Restores a folder written by `SaveState` into a freshly started run, before the runner loads
      /// the model's parameters (so it may first rebuild structure, e.g. add adapters).
      LoadState: string -> unit
      /// Writes the strategy's own outputs into the run's folder once the last task is done (KIF:
      /// `importance-layers.json`, the importance per layer for the report).
      WriteOutputs: string -> unit }

    /// The default loop without hooks (identity data, no joint training).
    static member plain : StrategyRun =
        { BeginTask = (fun _ -> StepHooks())
          EndTask = ignore
          Dispose = ignore
          TrainExamples = (fun _ xs -> xs)
          AfterFit = ignore
          Joint = false
          SaveState = ignore
          LoadState = ignore
          WriteOutputs = ignore }

/// A continual-learning strategy: the default training loop plus hooks. `Start` prepares a fresh
/// model (e.g. adds LoRA) and returns the per-task hooks.
type Strategy = { Name: string; Start: ILanguageModel -> StrategyRun }

/// The replay memory of the Replay and KIF + replay baselines.
[<RequireQualifiedAccess>]
module Replay =
    /// Reference memory size: 2 % of each earlier task's training set.
    [<Literal>]
    let DefaultFraction = 0.02

    /// Reference seed of the memory sampling (fixed, independent of the training seed).
    [<Literal>]
    let DefaultSeed = 42

    /// Memory size for a training set of n examples: round(fraction · n) (halves away from zero),
    /// at least 1 when n ≥ 1.
    let size (fraction: float) (n: int) : int =
        if n <= 0 then 0 else max 1 (int (Math.Round(fraction * float n, MidpointRounding.AwayFromZero)))

    /// The memory of one task: `size fraction |Train|` training examples, label-balanced (the
    /// examples are grouped by their trimmed output; labels take turns, in a seeded order, each
    /// contributing its seeded-shuffled examples, so label counts differ by at most one while a
    /// label has examples left) and seeded: the same seed and task give the same memory. The
    /// random stream derives from the seed and the task name (`Task.streamSeed ... "replay"`).
    let memory (seed: int) (fraction: float) (task: TaskData) : Example[] =
        let n = size fraction task.Train.Length
        if n = 0 then [||]
        else
            let rng = Random(Task.streamSeed seed task.Name "replay")
            let groups =
                task.Train
                |> Array.groupBy (fun e -> e.Output.Trim())
                |> Array.sortBy fst
                |> Array.map (fun (_, xs) -> let a = Array.copy xs in rng.Shuffle a; a)
            rng.Shuffle groups
            let picked = ResizeArray<Example>(n)
            let mutable k = 0
            while picked.Count < n do
                for g in groups do
                    if picked.Count < n && k < g.Length then picked.Add g[k]
                k <- k + 1
            picked.ToArray()

    /// File name of the saved memories in a run's task state.
    [<Literal>]
    let StateFile = "replay-memory.json"

    /// Writes the memories (one array per earlier task, in order) as JSON, atomically.
    let save (path: string) (memories: Example[] list) : unit =
        let arr = Text.Json.Nodes.JsonArray()
        for m in memories do
            let task = Text.Json.Nodes.JsonArray()
            for e in m do
                let o = Text.Json.Nodes.JsonObject()
                o["id"] <- Text.Json.Nodes.JsonValue.Create e.Id
                o["input"] <- Text.Json.Nodes.JsonValue.Create e.Input
                o["output"] <- Text.Json.Nodes.JsonValue.Create e.Output
                task.Add o
            arr.Add task
        Klf.Checkpoints.AtomicFile.WriteAllText(path, arr.ToJsonString())

    /// Reads memories written by `save`; a missing or malformed file is an error naming it.
    let load (path: string) : Example[] list =
        if not (IO.File.Exists path) then raise (IO.FileNotFoundException($"no replay memory at {path}", path))
        try
            let arr = Text.Json.Nodes.JsonNode.Parse(IO.File.ReadAllText path).AsArray()
            [ for task in arr ->
                [| for e in task.AsArray() ->
                    { Id = e["id"].GetValue<string>(); Input = e["input"].GetValue<string>(); Output = e["output"].GetValue<string>() } |] ]
        with
        | :? Text.Json.JsonException
        | :? InvalidOperationException
        | :? NullReferenceException as e -> raise (IO.InvalidDataException($"{path}: not a replay memory file ({e.Message})"))

/// The O-LoRA orthogonality penalty.
[<RequireQualifiedAccess>]
module OLora =
    /// Reference λ1 of O-LoRA.
    [<Literal>]
    let DefaultLambda = 0.5

    /// λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ| (sum of the absolute values of the r_prev × r_cur
    /// entries) over every module carrying the `current` adapter, against each adapter of
    /// `previous` on the same module. A differentiable scalar (gradients reach A_cur); the caller
    /// owns it (inside a step, the step's dispose scope frees it). Zero when `previous` is empty.
    let penalty (lambda: float) (lora: LoraModel) (current: string) (previous: string list) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        let mutable total : torch.Tensor = null
        for m in lora.ModulesOf current do
            let aCur = m.LoraA current
            for prev in previous do
                if m.HasAdapter prev then
                    let term = (m.LoraA(prev).matmul(aCur.t())).abs().sum()
                    total <- if isNull total then term else total.add term
        let result =
            if isNull total then torch.zeros([||], dtype = torch.float32)
            else total.mul(Scalar.op_Implicit lambda)
        result.MoveToOuterDisposeScope()

/// Elastic weight consolidation: a diagonal empirical Fisher accumulated over tasks and the
/// quadratic penalty (λ/2) · Σ F · (θ − θ*)² towards the parameters θ* after the latest task.
/// Owns its Fisher and anchor tensors (dispose it).
type Ewc(model: ILanguageModel, lambda: float, samples: int, seed: int) =
    let fisher = Collections.Generic.Dictionary<string, torch.Tensor>()
    let anchor = Collections.Generic.Dictionary<string, torch.Tensor>()

    /// Reference λ (EWC strength) used by `Strategy.ewc`.
    static member DefaultLambda = 5000.0

    /// Reference number of training examples sampled for the Fisher estimate.
    static member DefaultSamples = 32

    /// λ.
    member _.Lambda = lambda

    /// The accumulated diagonal Fisher by parameter name (owned by this object).
    member _.Fisher : Collections.Generic.IReadOnlyDictionary<string, torch.Tensor> = fisher

    /// θ* by parameter name: the parameters after the latest consolidated task (owned by this object).
    member _.Anchor : Collections.Generic.IReadOnlyDictionary<string, torch.Tensor> = anchor

    /// Estimates the empirical Fisher of the trainable parameters at the current θ from
    /// min(samples, |train|) seeded training examples, one example per batch (eval mode, no
    /// dropout): F_task = (1/N) Σ_n (∂ℓ_n/∂θ)², ℓ_n the example's mean answer-token loss; adds it
    /// to the accumulated Fisher and sets θ* to the current parameters.
    member _.Consolidate(train: LmExample[], options: TrainerOptions) =
        let trainable = model.Module.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Array.ofSeq
        let n = min samples train.Length
        if n > 0 && trainable.Length > 0 then
            let idx = Array.init train.Length id
            Random(seed + fisher.Count * 7919 + train.Length).Shuffle idx
            let layout = BatchLayout.For(model, options.MaxLength, options.MaxTargetLength, options.Truncation)
            let device = Trainer.DeviceOf model
            let acc = trainable |> Array.map (fun struct (_, p) -> torch.zeros_like(p).detach())
            model.Module.eval()
            let mutable used = 0
            for i in idx[.. n - 1] do
                use scope = torch.NewDisposeScope()
                model.Module.zero_grad()
                use batch = Batching.Build([| train[i] |], layout, device)
                if batch.LabelTokenCount > 0L then
                    let loss = model.ComputeLoss batch
                    loss.backward()
                    used <- used + 1
                    use _ng = torch.no_grad()
                    trainable |> Array.iteri (fun k struct (_, p) ->
                        let g = p.grad
                        if not (isNull g) then acc[k].add_(g.square()) |> ignore)
            model.Module.zero_grad()
            use _ng = torch.no_grad()
            trainable |> Array.iteri (fun k struct (name, p) ->
                if used > 0 then acc[k].div_(Scalar.op_Implicit (float used)) |> ignore
                match fisher.TryGetValue name with
                | true, f -> f.add_(acc[k]) |> ignore; acc[k].Dispose()
                | _ -> fisher[name] <- acc[k]
                match anchor.TryGetValue name with
                | true, a -> a.Dispose()
                | _ -> ()
                anchor[name] <- p.detach().clone())

    /// (λ/2) · Σ F · (θ − θ*)² over the consolidated parameters, as a differentiable scalar the
    /// caller owns; zero before the first consolidation.
    member _.Penalty() : torch.Tensor =
        use scope = torch.NewDisposeScope()
        let mutable total : torch.Tensor = null
        for struct (name, p) in model.Module.named_parameters() do
            match fisher.TryGetValue name with
            | true, f ->
                let term = f.mul((p - anchor[name]).square()).sum()
                total <- if isNull total then term else total.add term
            | _ -> ()
        let result = if isNull total then torch.zeros([||], dtype = torch.float32) else total.mul(Scalar.op_Implicit (lambda / 2.0))
        result.MoveToOuterDisposeScope()

    /// Writes the accumulated Fisher and θ* to `dir/ewc.safetensors` (keys `fisher.<name>` and
    /// `anchor.<name>`), atomically; nothing is written before the first consolidation.
    member _.Save(dir: string) =
        if fisher.Count > 0 then
            let tensors =
                [ for KeyValue(k, v) in fisher -> Collections.Generic.KeyValuePair("fisher." + k, v)
                  for KeyValue(k, v) in anchor -> Collections.Generic.KeyValuePair("anchor." + k, v) ]
            Klf.Checkpoints.SafeTensors.Save(IO.Path.Combine(dir, "ewc.safetensors"), tensors)

    /// Restores what `Save` wrote (no file = nothing consolidated yet), placing the tensors on the
    /// model's device; the names must be parameters of the model, else an error names the file.
    member _.Load(dir: string) =
        let path = IO.Path.Combine(dir, "ewc.safetensors")
        if IO.File.Exists path then
            let names = model.Module.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
            let device = Trainer.DeviceOf model
            let loaded = Klf.Checkpoints.SafeTensors.Load path
            for KeyValue(k, v) in loaded do
                let target, name =
                    if k.StartsWith "fisher." then fisher, k.Substring 7
                    elif k.StartsWith "anchor." then anchor, k.Substring 7
                    else raise (IO.InvalidDataException $"{path}: unexpected key {k}")
                if not (names.Contains name) then raise (IO.InvalidDataException $"{path}: {name} is not a parameter of the model")
                let placed = v.``to``(device)
                if not (Object.ReferenceEquals(placed, v)) then v.Dispose()
                placed.DetachFromDisposeScope() |> ignore
                target[name] <- placed

    interface IDisposable with
        member _.Dispose() =
            for t in fisher.Values do t.Dispose()
            for t in anchor.Values do t.Dispose()
            fisher.Clear()
            anchor.Clear()

/// The strategies available, selectable by name.
[<RequireQualifiedAccess>]
module Strategy =
    let private plain = StrategyRun.plain

    let private loraTargets (model: ILanguageModel) =
        if model.Family = ModelFamily.DecoderOnly then [| "q_proj"; "v_proj" |] else [| "q"; "v" |]

    let private loraConfig (r: int) (model: ILanguageModel) (name: string) =
        LoraConfig(R = r, Alpha = float (2 * r), Dropout = 0.05, TargetModules = loraTargets model, AdapterName = name)

    /// Sequential full fine-tuning: each task trains all weights, nothing protects earlier tasks.
    let seqFT : Strategy = { Name = "seqft"; Start = fun _ -> plain }

    /// One LoRA adapter (rank r, on q and v) trained through the whole sequence.
    let seqLora (r: int) : Strategy =
        { Name = "seqlora"
          Start = fun model ->
            LoraAdapter.applyWith (LoraConfig(R = r, Alpha = float (2 * r), Dropout = 0.05, TargetModules = loraTargets model)) model |> ignore
            plain }

    /// KIF with full fine-tuning: whole-tensor units, first-order importance, the static rule.
    let kifWith (options: KifOptions) : Strategy =
        { Name = "kif"
          Start = fun model ->
            let session = new KifSession(model, options)
            { plain with
                BeginTask = fun t -> session.BeginTask t.Name
                EndTask = fun _ -> session.EndTask() |> ignore
                SaveState = session.SaveState
                LoadState = session.RestoreState
                WriteOutputs = fun dir -> Kif.saveLayerImportance (IO.Path.Combine(dir, Kif.LayerImportanceFile)) (Kif.importanceByLayer session)
                Dispose = session.Dispose } }

    /// KIF with full fine-tuning and the reference settings.
    let kif : Strategy = kifWith (KifOptions.FullFineTuning())

    /// KIF with feed-forward neuron blocks of 16 and attention heads as units, per-module-type
    /// normalisation and λ = 1 for units important to neither distribution (`KifOptions.NeuronBlocks`).
    let kifNeuron : Strategy = { kifWith (KifOptions.NeuronBlocks()) with Name = "kif-neuron" }

    /// KIF-LoRA: rank-1 units of a LoRA of rank r, second-order importance, the adaptive rule and
    /// the orthogonality term (λ_orth = 0.1).
    let kifLora (r: int) : Strategy =
        { Name = "kif-lora"
          Start = fun model ->
            let lora = LoraAdapter.applyWith (LoraConfig(R = r, Alpha = float (2 * r), Dropout = 0.05, TargetModules = loraTargets model)) model
            let session = new KifSession(model, KifOptions.Lora())
            { plain with
                BeginTask = fun t -> Orthogonality.AddTo(session.BeginTask t.Name, lora, "default")
                EndTask = fun _ -> session.EndTask() |> ignore
                SaveState = session.SaveState
                LoadState = session.RestoreState
                WriteOutputs = fun dir -> Kif.saveLayerImportance (IO.Path.Combine(dir, Kif.LayerImportanceFile)) (Kif.importanceByLayer session)
                Dispose = session.Dispose } }

    /// Name of the adapter IncLoRA and O-LoRA add for task k (0-based): "task{k}".
    let adapterName (k: int) : string = $"task{k}"

    /// Shared by IncLoRA and O-LoRA: at each task a new adapter (rank r, α = 2r, dropout 0.05,
    /// on q and v) named task0, task1, …; every adapter stays active, only the new one trains.
    let private incremental (name: string) (r: int) (lambda1: float option) : Strategy =
        { Name = name
          Start = fun model ->
            let mutable k = 0
            let countFile dir = IO.Path.Combine(dir, "adapters.txt")
            { plain with
                SaveState = fun dir -> Klf.Checkpoints.AtomicFile.WriteAllText(countFile dir, string k)
                LoadState = fun dir ->
                    let path = countFile dir
                    let text = if IO.File.Exists path then IO.File.ReadAllText(path).Trim() else raise (IO.FileNotFoundException($"{dir}: no {name} adapter count (adapters.txt)", path))
                    let n = match Int32.TryParse text with | true, v when v >= 0 -> v | _ -> raise (IO.InvalidDataException $"{path}: expected an adapter count, found \"{text}\"")
                    for i in 0 .. n - 1 do
                        let lora = LoraAdapter.applyWith (loraConfig r model (adapterName i)) model
                        lora.SetTrainableAdapters(adapterName i)
                    k <- n
                BeginTask = fun _ ->
                    let current = adapterName k
                    let lora = LoraAdapter.applyWith (loraConfig r model current) model
                    lora.SetTrainableAdapters current
                    let previous = [ for i in 0 .. k - 1 -> adapterName i ]
                    k <- k + 1
                    let hooks = StepHooks()
                    match lambda1 with
                    | Some l when not previous.IsEmpty -> hooks.ExtraLosses.Add(fun _ -> OLora.penalty l lora current previous)
                    | _ -> ()
                    hooks } }

    /// IncLoRA: a new LoRA adapter of rank r per task (task0, task1, …), earlier ones frozen but active.
    let incLora (r: int) : Strategy = incremental "inclora" r None

    /// O-LoRA: IncLoRA plus the ExtraLoss λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ| (`OLora.penalty`)
    /// against all earlier tasks' A of the same module (reference λ1 = 0.5, `OLora.DefaultLambda`).
    let oLoraWith (r: int) (lambda1: float) : Strategy = incremental "olora" r (Some lambda1)

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

    /// EWC with λ = 5000 (the value of many CL-for-LM papers) and 32 Fisher samples per task.
    let ewc : Strategy = ewcWith Ewc.DefaultLambda Ewc.DefaultSamples

    /// Adds a replay memory to a run: after each task its memory (`Replay.memory seed fraction`)
    /// is kept; each later task trains on its own examples followed by every earlier task's memory
    /// (the trainer's bucketed sampler mixes them into the batches).
    let withReplay (seed: int) (fraction: float) (run: StrategyRun) : StrategyRun =
        let memories = ResizeArray<Example[]>()
        { run with
            TrainExamples = fun t xs -> Array.append (run.TrainExamples t xs) (Array.concat memories)
            EndTask = fun t -> run.EndTask t; memories.Add(Replay.memory seed fraction t)
            SaveState = fun dir -> run.SaveState dir; Replay.save (IO.Path.Combine(dir, Replay.StateFile)) (List.ofSeq memories)
            LoadState = fun dir ->
                run.LoadState dir
                memories.Clear()
                memories.AddRange(Replay.load (IO.Path.Combine(dir, Replay.StateFile))) }

    /// Replay: full fine-tuning with a memory of 2 % of each earlier task (≥ 1, label-balanced, seed 42).
    let replayWith (seed: int) (fraction: float) : Strategy =
        { Name = "replay"; Start = fun _ -> withReplay seed fraction plain }

    /// Replay with the reference memory (2 %, seed 42).
    let replay : Strategy = replayWith Replay.DefaultSeed Replay.DefaultFraction

    /// KIF (full fine-tuning, reference settings) with the replay memory; identification and
    /// fusion are unchanged.
    let kifReplay : Strategy =
        { Name = "kif-replay"; Start = fun model -> withReplay Replay.DefaultSeed Replay.DefaultFraction (kif.Start model) }

    /// MTL, the upper bound: full fine-tuning once on the union of every task's training examples
    /// with the step budget of the whole sequence (T × the per-task steps; the cheaper variant: one
    /// joint training at the last task, not one per prefix). Every row of
    /// the matrix holds the joint model's scores (a_{j,i} = a_{T,i} for i ≤ j), so AP is the
    /// upper bound, BWT and F.Ra are 0 by construction and FWT compares joint with single-task
    /// training; only AP (and FWT) are meaningful.
    let mtl : Strategy = { Name = "mtl"; Start = fun _ -> { plain with Joint = true } }

    /// Every strategy by name (LoRA rank 8).
    let all : Strategy list = [ seqFT; seqLora 8; kif; kifNeuron; kifLora 8; incLora 8; oLora 8; ewc; replay; kifReplay; mtl ]

    /// Names of the strategies.
    let names = all |> List.map (fun s -> s.Name)

    /// A strategy by name; unknown names list the known ones.
    let byName (name: string) : Strategy =
        match all |> List.tryFind (fun s -> String.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase)) with
        | Some s -> s
        | None ->
            let known = String.Join(", ", names)
            invalidArg "name" $"unknown strategy \"{name}\" (known: {known})"
