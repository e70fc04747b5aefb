namespace Klf.Pipelines

open System
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Adapters
open Klf.SkillUnits
open Klf.Kif
open TorchSharp

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
