/// A small but real decoder-only language model for tests: token embeddings, a causal running-mean
/// context, gated blocks with q_proj / v_proj in a ModuleList, a ModuleList of plain Linear
/// "mixers", out_proj and an untied lm_head; real shifted cross-entropy. Every Linear is invoked
/// through `call` so forward hooks (LoRA) run.
module TinyLm

open System.Text.Json.Nodes
open TorchSharp
open TorchSharp.Modules
type Tensor = TorchSharp.torch.Tensor
type ScalarType = TorchSharp.torch.ScalarType
open Klf.Models

type TinyBlock(dim: int64) as this =
    inherit torch.nn.Module<Tensor, Tensor>("TinyBlock")
    let q_proj = torch.nn.Linear(dim, dim)
    let v_proj = torch.nn.Linear(dim, dim)
    do
        this.register_module("q_proj", q_proj)
        this.register_module("v_proj", v_proj)
    override _.RegisterComponents() = ()
    override _.forward(h: Tensor) =
        use q = q_proj.call(h)
        use v = v_proj.call(h)
        use g = torch.sigmoid(v)
        use t = torch.tanh(q)
        use u = t * g
        h + u

type TinyLm(vocab: int, dim: int, layers: int) as this =
    inherit torch.nn.Module("TinyLm")
    let embed_tokens = torch.nn.Embedding(int64 vocab, int64 dim)
    let blocks = new ModuleList<TinyBlock>([| for _ in 1 .. layers -> new TinyBlock(int64 dim) |])
    let mixers = new ModuleList<Linear>([| torch.nn.Linear(int64 dim, int64 dim) |])
    let out_proj = torch.nn.Linear(int64 dim, int64 dim)
    let lm_head = torch.nn.Linear(int64 dim, int64 vocab, hasBias = false)
    do
        this.register_module("embed_tokens", embed_tokens)
        this.register_module("layers", blocks)
        this.register_module("mixers", mixers)
        this.register_module("out_proj", out_proj)
        this.register_module("lm_head", lm_head)

    override _.RegisterComponents() = ()

    /// Logits (B, T, V) float32 for ids (B, T) int64; caller owns the result.
    member _.Logits(ids: Tensor) : Tensor =
        use scope = torch.NewDisposeScope()
        let h0 = embed_tokens.call(ids)                                     // (B, T, D)
        let t = ids.shape.[1]
        let counts = torch.arange(1L, t + 1L, dtype = ScalarType.Float32, device = h0.device).view(1L, t, 1L)
        let mutable h = h0 + h0.cumsum(1L) / counts                         // causal context
        for b in blocks do h <- b.call(h)
        for m in mixers do h <- h + torch.tanh(m.call(h))
        h <- torch.tanh(out_proj.call(h))
        scope.MoveToOuter(lm_head.call(h))                                  // (B, T, V)

    interface ILanguageModel with
        member _.Family = ModelFamily.DecoderOnly
        member this.Module = this :> torch.nn.Module
        member _.ModelType = "tiny"
        member _.ConfigJson() = JsonObject(dict [ "model_type", JsonValue.Create("tiny") :> JsonNode; "vocab_size", JsonValue.Create(vocab); "hidden_size", JsonValue.Create(dim) ])
        member _.PadTokenId = 0
        member _.EosTokenId = 2
        member _.TiedAliases = readOnlyDict []
        member this.ComputeLoss(batch: LmBatch) =
            use scope = torch.NewDisposeScope()
            let logits = this.Logits(batch.InputIds)
            let t = logits.shape.[1]
            let v = logits.shape.[2]
            let pred = logits.narrow(1L, 0L, t - 1L).reshape(-1L, v)
            let gold = batch.Labels.narrow(1L, 1L, t - 1L).reshape(-1L)
            scope.MoveToOuter(torch.nn.functional.cross_entropy(pred, gold, ignore_index = -100L))
        member this.GenerateGreedy(prompts, options) =
            let wasTraining = this.training
            this.eval()
            try
                use _ng = torch.no_grad()
                let eos = defaultArg (Option.ofObj options.EosTokenIds) [| 2 |]
                [| for p in prompts ->
                    let out = ResizeArray<int>()
                    let mutable seq = Array.copy p
                    let mutable stop = false
                    while not stop && out.Count < options.MaxNewTokens do
                        use scope = torch.NewDisposeScope()
                        let ids = torch.tensor(seq |> Array.map int64, device = this.Device).reshape(1L, int64 seq.Length)
                        let logits = this.Logits(ids)
                        let next = logits.select(1L, int64 seq.Length - 1L).argmax(-1L).item<int64>() |> int
                        if Array.contains next eos then stop <- true
                        else
                            out.Add next
                            seq <- Array.append seq [| next |]
                    out.ToArray() |] 
            finally
                this.train(wasTraining)

    member this.Device = (this.parameters() |> Seq.head).device

/// A TinyLm with weights from `seed` (vocab 32, dim 32, two blocks unless given).
let create (seed: int64) =
    torch.manual_seed(seed) |> ignore
    new TinyLm(32, 32, 2)

/// The trainable parameters of a model, by name.
let trainable (m: ILanguageModel) =
    m.Module.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, p) -> n, p :> Tensor) |> Array.ofSeq

/// Float copies of every trainable parameter, by name (to compare weights bit for bit).
let copyTrainable (m: ILanguageModel) =
    trainable m |> Array.map (fun (n, p) -> n, p.detach().cpu().flatten().data<float32>().ToArray()) |> Map.ofArray

/// Batches of 4, seed 7, no warm-up, no weight decay: `steps` steps at learning rate `lr`.
let plainOptions (steps: int) (lr: float) =
    Klf.Training.TrainerOptions(BatchSize = 4, MaxSteps = steps, Seed = 7, Optimizer = Klf.Training.OptimizerOptions(LearningRate = lr, WarmupSteps = 0, WeightDecay = 0.0))
