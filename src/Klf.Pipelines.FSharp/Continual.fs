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

/// A second stream of training steps for a task (Recurrent-KIF's memory steps): its examples, and
/// the interleaved steps to run once they are encoded (given the task's training seed).
type Interleaving =
    { Examples: Example[]
      Steps: int -> LmExample[] -> InterleavedSteps }

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
      WriteOutputs: string -> unit
      /// Interleaved steps on a second stream during a task's training (None: plain training).
      Interleave: TaskData -> Interleaving option
      /// Keep the weights of the lowest validation loss at the end of each task: Some true / Some
      /// false, or None for the run's default (`RunControl.BestValidation`).
      BestValidation: bool option }

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
          WriteOutputs = ignore
          Interleave = (fun _ -> None)
          BestValidation = None }

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

