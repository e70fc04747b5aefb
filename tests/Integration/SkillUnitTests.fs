/// Skill units on real tiny models: the LoRA orthogonality regulariser against a naive
/// computation and inside training, unit ids across adapter save/load, head units under GQA.
module SkillUnitTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Klf.Models
open Klf.Models.Llama
open Klf.Models.T5
open Klf.Adapters
open Klf.Training
open Klf.SkillUnits
open Klf.Training.Regularizers

let private llama (preset: string) (seed: int64) : ILanguageModel =
    torch.manual_seed seed |> ignore
    LlamaForCausalLM.Create(LlamaConfig.Preset preset) :> ILanguageModel

let private t5 (preset: string) (seed: int64) : ILanguageModel =
    torch.manual_seed seed |> ignore
    T5ForConditionalGeneration.Create(T5Config.Preset preset) :> ILanguageModel

let private loraCfg (adapter: string) (targets: string[]) =
    LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = targets, AdapterName = adapter)

let private randomizeB (lora: LoraModel) (adapter: string) (seed: int64) =
    torch.manual_seed seed |> ignore
    use _ng = torch.no_grad()
    for w in lora.ModulesOf adapter do w.LoraB(adapter).normal_(0.0, 0.3) |> ignore

let private floats (t: torch.Tensor) =
    use c = t.detach().cpu().contiguous()
    c.data<float32>().ToArray()

/// Naive ‖G − I‖_F with G = P Pᵀ (rows = true) or Pᵀ P (rows = false), P given as rows × cols floats.
let private naiveDeviation (p: float32[]) (rows: int) (cols: int) (gramOfRows: bool) =
    let at i j = float p.[i * cols + j]
    let n = if gramOfRows then rows else cols
    let mutable sq = 0.0
    for i in 0 .. n - 1 do
        for j in 0 .. n - 1 do
            let g =
                if gramOfRows then Seq.sum (seq { for k in 0 .. cols - 1 -> at i k * at j k })
                else Seq.sum (seq { for k in 0 .. rows - 1 -> at k i * at k j })
            let d = g - (if i = j then 1.0 else 0.0)
            sq <- sq + d * d
    sqrt sq

let private meanADeviation (lora: LoraModel) =
    Orthogonality.Deviations(lora, "default") |> Seq.filter (fun struct (n, _) -> n.Contains ".lora_A.") |> Seq.averageBy (fun struct (_, d) -> d)

/// Naive coverage count: every trainable element in exactly one unit, no frozen element in any.
let private coversExactlyOnce (m: ILanguageModel) (map: SkillUnitMap) =
    let counts = Dictionary<string, int[] * int64[] * bool>()
    for struct (n, p) in m.Module.named_parameters() do
        counts.[n] <- (Array.zeroCreate (int (p.numel())), p.shape, p.requires_grad)
    for u in map.Units do
        for s in u.Slices do
            let c, shape, _ = counts.[s.Parameter]
            for i in 0 .. c.Length - 1 do
                let inside =
                    s.IsWhole
                    || (let stride = shape.[s.Dim + 1 ..] |> Array.fold (*) 1L
                        let coord = (int64 i / stride) % shape.[s.Dim]
                        coord >= s.Start && coord < s.Start + s.Length)
                if inside then c.[i] <- c.[i] + 1
    counts |> Seq.forall (fun (KeyValue (_, (c, _, trainable))) -> c |> Array.forall ((=) (if trainable then 1 else 0)))

let private ids (map: SkillUnitMap) = map.Units |> Seq.map (fun u -> u.Id) |> List.ofSeq

[<Tests>]
let tests =
    testSequenced <| testList "skill units" [
        test "orthogonality loss equals a naive computation over the trainable adapter only" {
            let m = llama "llama-tiny" 1L
            try
                Lora.Apply(m.Module, loraCfg "old" [| "q_proj"; "v_proj" |]) |> ignore
                let lora = Lora.Apply(m.Module, loraCfg "default" [| "q_proj"; "k_proj"; "v_proj" |])
                lora.SetTrainableAdapters [| "default" |]
                randomizeB lora "default" 2L
                randomizeB lora "old" 3L
                let naive =
                    [ for w in lora.ModulesOf "default" do
                        let a, b = w.LoraA "default", w.LoraB "default"
                        yield naiveDeviation (floats a) (int a.shape.[0]) (int a.shape.[1]) true
                        yield naiveDeviation (floats b) (int b.shape.[0]) (int b.shape.[1]) false ]
                    |> List.average
                use loss = Orthogonality.Loss(lora, "default", 0.1)
                Expect.equal loss.shape.Length 0 "a scalar"
                Expect.floatClose { absolute = 1e-7; relative = 1e-5 } (loss.ToDouble()) (0.1 * naive) "λ · mean ‖PPᵀ − I‖_F"
                use loss2 = Orthogonality.Loss(lora, "default", 0.5)
                Expect.floatClose { absolute = 1e-7; relative = 1e-5 } (loss2.ToDouble()) (0.5 * naive) "λ scales"
                loss.backward()
                for w in lora.ModulesOf "default" do Expect.isNotNull (w.LoraA("default").grad) "gradient reaches A"
                for w in lora.ModulesOf "old" do Expect.isNull (w.LoraB("old").grad) "frozen adapter untouched"
            finally m.Dispose()
        }

        test "adding the orthogonality term to training reduces ‖AAᵀ − I‖" {
            let run (withTerm: bool) =
                let m = llama "llama-tiny" 1L
                try
                    let lora = Lora.Apply(m.Module, loraCfg "default" [| "q_proj"; "v_proj" |])
                    let before = meanADeviation lora
                    use runner = new StepRunner(m, OptimizerOptions(LearningRate = 1e-2))
                    let hooks = StepHooks()
                    if withTerm then Orthogonality.AddTo(hooks, lora, "default") |> ignore
                    use batch = Batching.Build(LmContract.examples 5 8, BatchLayout.For(m, 64), Trainer.DeviceOf m)
                    let first = runner.Step([| batch |], hooks) // creates AdamW's state
                    let live0 = torch.Tensor.TotalCount
                    let metrics = first :: [ for _ in 2 .. 15 -> runner.Step([| batch |], hooks) ]
                    let grown = torch.Tensor.TotalCount - live0
                    before, meanADeviation lora, metrics, grown
                finally m.Dispose()
            let before, after, metrics, grown = run true
            let _, plain, _, _ = run false
            printfn "orthogonality: mean ‖AAᵀ−I‖ %.4f -> %.4f with the term, %.4f without (15 steps)" before after plain
            Expect.isLessThan after (0.8 * before) "the term pulls A toward orthonormal rows"
            Expect.isLessThan after plain "and more than training without it"
            Expect.isTrue (metrics |> List.forall (fun s -> s.ExtraLoss > 0.0)) "the extra loss is reported each step"
            Expect.isLessThanOrEqual grown 0L "no tensors left behind by the hook"
        }

        for family, create, targets, taskType in
            [ "llama", llama "llama-tiny", [| "q_proj"; "v_proj" |], "CAUSAL_LM"
              "t5", t5 "t5-tiny", [| "q"; "v" |], "SEQ_2_SEQ_LM" ] do
            test $"unit ids survive adapter save and load ({family})" {
                let m1, m2 = create 1L, create 2L
                let dir = IO.Path.Combine(IO.Path.GetTempPath(), "klf-units-" + Guid.NewGuid().ToString("N"))
                try
                    let lora = Lora.Apply(m1.Module, loraCfg "default" targets)
                    randomizeB lora "default" 4L
                    let before = [ for n in [ "lora-rank1"; "lora-matrix"; "full"; "head" ] -> SkillUnitPartitioners.ByName(n).Partition m1 ]
                    lora.SaveAdapter(dir, "default", taskType, m1.ModelType)
                    Lora.LoadAdapter(m2.Module, dir) |> ignore
                    let after = [ for n in [ "lora-rank1"; "lora-matrix"; "full"; "head" ] -> SkillUnitPartitioners.ByName(n).Partition m2 ]
                    for b, a in List.zip before after do
                        Expect.equal (ids a) (ids b) $"{b.Partitioner}: ids"
                        Expect.equal a.Fingerprint b.Fingerprint $"{b.Partitioner}: fingerprint"
                    let rank1 = before.Head
                    Expect.equal rank1.Count (4 * targets.Length * (if family = "t5" then 6 else 2)) "r units per adapted module"
                    let first = if family = "t5" then "encoder.block.0.layer.0.SelfAttention.q" else "model.layers.0.self_attn.q_proj"
                    Expect.equal rank1.Units.[1].Id $"{first}.lora.default.r1" "id scheme"
                    Expect.equal (String.Join(" ", rank1.Units.[1].Slices))
                        $"{first}.lora_A.default.weight[d0:1:1] {first}.lora_B.default.weight[d1:1:1]" "row r of A, column r of B"
                finally
                    m1.Dispose()
                    m2.Dispose()
                    if IO.Directory.Exists dir then IO.Directory.Delete(dir, true)
            }

        test "head partition of the GQA preset covers every element exactly once" {
            let m = llama "llama-tiny-gqa" 1L
            try
                let map = AttentionHeadPartitioner().Partition m
                Expect.isTrue (coversExactlyOnce m map) "exact cover"
                let heads = map.Units |> Seq.filter (fun u -> u.ModuleType = "self_attn.head") |> Seq.length
                let kv = map.Units |> Seq.filter (fun u -> u.ModuleType = "self_attn.kv_head") |> Seq.length
                Expect.equal (heads, kv) (2 * 4, 2 * 2) "4 query heads and 2 kv heads per layer"
                Expect.equal map.Count (8 + 4 + 2 * 5 + 3) "plus whole mlp/norm tensors, embeddings, final norm, head"
                let h3 = map.Units.[map.IndexOf "model.layers.0.self_attn.head3"]
                Expect.equal (String.Join(" ", h3.Slices))
                    "model.layers.0.self_attn.q_proj.weight[d0:48:16] model.layers.0.self_attn.o_proj.weight[d1:48:16]" "q rows, o columns"
                let kv1 = map.Units.[map.IndexOf "model.layers.1.self_attn.kv_head1"]
                Expect.equal (String.Join(" ", kv1.Slices))
                    "model.layers.1.self_attn.k_proj.weight[d0:16:16] model.layers.1.self_attn.v_proj.weight[d0:16:16]" "k and v rows"
                // Unit scores of a constant score tensor are that constant; no tensor is left behind.
                let scores = Dictionary<string, torch.Tensor>()
                for struct (n, p) in m.Module.named_parameters() do scores.[n] <- torch.full(p.shape, (0.25f).ToScalar())
                let live0 = torch.Tensor.TotalCount
                let s = UnitScores.Compute(map, m, scores)
                Expect.equal (torch.Tensor.TotalCount - live0) 0L "no live tensors added"
                Expect.all s (fun x -> abs (x - 0.25) < 1e-12) "mean of a constant"
                for t in scores.Values do t.Dispose()
            finally m.Dispose()
        }

        test "head partition of T5 covers exactly once and gives each head its relative-bias column" {
            let m = t5 "t5-tiny" 1L
            try
                let map = AttentionHeadPartitioner().Partition m
                Expect.isTrue (coversExactlyOnce m map) "exact cover"
                let h2 = map.Units.[map.IndexOf "encoder.block.0.layer.0.SelfAttention.head2"]
                Expect.contains (h2.Slices |> Seq.map string) "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight[d1:2:1]" "bias column"
                Expect.equal h2.ModuleType "SelfAttention.head" "module type"
                Expect.isGreaterThanOrEqual (map.IndexOf "decoder.block.1.layer.1.EncDecAttention.head3") 0 "cross-attention heads"
            finally m.Dispose()
        }

        test "neuron partition: a unit is a neuron's gate and up rows and down column (LLaMA), wi rows and wo column (T5)" {
            let m = llama "llama-tiny" 1L
            try
                let width = (m.Module.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "model.layers.0.mlp.gate_proj.weight" then Some p.shape[0] else None))
                let map = NeuronPartitioner().Partition m
                Expect.isTrue (coversExactlyOnce m map) "exact cover"
                let layers = (m.ConfigJson()["num_hidden_layers"]).GetValue<int>()
                let neurons = map.Units |> Seq.filter (fun u -> u.ModuleType = "mlp.neuron") |> Seq.length
                Expect.equal neurons (layers * int width) "one unit per neuron per layer"
                let u = map.Units.[map.IndexOf "model.layers.1.mlp.neuron5"]
                Expect.equal (String.Join(" ", u.Slices))
                    "model.layers.1.mlp.gate_proj.weight[d0:5:1] model.layers.1.mlp.up_proj.weight[d0:5:1] model.layers.1.mlp.down_proj.weight[d1:5:1]" "rows in, column out"
                Expect.equal u.Layer "model.layers.1" "layer label"
                let blocks = NeuronPartitioner(7).Partition m
                Expect.isTrue (coversExactlyOnce m blocks) "blocks cover exactly once"
                let last = blocks.Units |> Seq.filter (fun u -> u.Id.StartsWith "model.layers.0.mlp.neuron") |> Seq.last
                Expect.equal (last.Slices.[0].Length) (if width % 7L = 0L then 7L else width % 7L) "the last block holds the rest"
                Expect.isGreaterThanOrEqual (blocks.IndexOf "model.layers.0.self_attn.head0") 0 "attention split per head"
            finally m.Dispose()
            let t = t5 "t5-tiny" 1L
            try
                let map = NeuronPartitioner().Partition t
                Expect.isTrue (coversExactlyOnce t map) "T5 exact cover"
                let u = map.Units.[map.IndexOf "encoder.block.0.layer.1.DenseReluDense.neuron0"]
                Expect.equal u.ModuleType "DenseReluDense.neuron" "module type"
                Expect.isTrue (u.Slices |> Seq.exists (fun s -> s.Parameter.EndsWith ".wo.weight" && s.Dim = 1)) "wo column"
            finally t.Dispose()
        }

        test "BERT: every partition covers every trainable element exactly once; heads are query/key/value rows and an output column, neurons intermediate rows and an output column" {
            let m = SentenceEncoderKit.tiny 1L
            try
                for name in [ "full"; "head"; "neuron"; "neuron-16" ] do
                    Expect.isTrue (coversExactlyOnce m (SkillUnitPartitioners.ByName(name).Partition m)) $"{name}: exact cover"
                let full = FullFineTuningPartitioner().Partition m
                Expect.equal full.Count (m.Module.parameters() |> Seq.length) "full: one unit per tensor"
                Expect.equal full.Units.[full.IndexOf "embeddings.word_embeddings.weight"].Layer "embeddings" "embeddings outside the layers"
                let q = full.Units.[full.IndexOf "encoder.layer.1.attention.self.query.weight"]
                Expect.equal (q.Layer, q.ModuleType) ("encoder.layer.1", "attention.self.query") "layer and module type from the name"
                let heads = AttentionHeadPartitioner().Partition m
                let h1 = heads.Units.[heads.IndexOf "encoder.layer.0.attention.head1"]
                Expect.equal (String.Join(" ", h1.Slices))
                    ("encoder.layer.0.attention.self.query.weight[d0:16:16] encoder.layer.0.attention.self.query.bias[d0:16:16] "
                     + "encoder.layer.0.attention.self.key.weight[d0:16:16] encoder.layer.0.attention.self.key.bias[d0:16:16] "
                     + "encoder.layer.0.attention.self.value.weight[d0:16:16] encoder.layer.0.attention.self.value.bias[d0:16:16] "
                     + "encoder.layer.0.attention.output.dense.weight[d1:16:16]") "a head: q, k, v rows with their biases, the output projection's columns"
                Expect.equal h1.ModuleType "attention.head" "module type"
                Expect.isGreaterThanOrEqual (heads.IndexOf "encoder.layer.0.attention.output.dense.bias") 0 "the output bias stays whole"
                let neurons = NeuronPartitioner(16).Partition m
                let n1 = neurons.Units.[neurons.IndexOf "encoder.layer.1.intermediate.neuron16"]
                Expect.equal (String.Join(" ", n1.Slices))
                    "encoder.layer.1.intermediate.dense.weight[d0:16:16] encoder.layer.1.intermediate.dense.bias[d0:16:16] encoder.layer.1.output.dense.weight[d1:16:16]" "rows in, column out"
                Expect.equal (n1.Layer, n1.ModuleType) ("encoder.layer.1", "intermediate.neuron") "labels"
                Expect.equal (neurons.Units |> Seq.filter (fun u -> u.ModuleType = "intermediate.neuron") |> Seq.length) (2 * 128 / 16) "blocks of 16 of 128 neurons in 2 layers"
                let lora = Lora.Apply(m.Module, loraCfg "default" (LoraConfig.DefaultTargets m.Family))
                Expect.equal [ for w in lora.Modules -> w.Path ] [ for l in 0 .. 1 do for t in [ "query"; "value" ] -> $"encoder.layer.{l}.attention.self.{t}" ] "LoRA's default targets: query and value"
                let rank1 = SkillUnitPartitioners.ByName("lora-rank1").Partition m
                Expect.isTrue (coversExactlyOnce m rank1) "rank-1 units cover the adapters exactly once"
                Expect.equal rank1.Count (4 * 2 * 2) "r units per adapted module"
            finally m.Dispose()
        }
    ]
