/// LoRA and training checks that use only the ILanguageModel contract, so they run unchanged on
/// any model family: TinyLm now, LLaMA and T5 once those branches land (add one line each at the
/// bottom). They also catch a model that invokes a Linear through `forward` instead of `call`
/// (LoRA's hook would then never run: "a non-zero B changes the loss" fails).
module LmContract

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.Training

type Tensor = TorchSharp.torch.Tensor

/// Toy examples with token ids in [3, 20) (clear of pad/eos/bos ids of every family). The answer is a
/// function of the prompt's last token; the choices (which encoder-only models score, the others ignore)
/// are the answer and the three tokens after it.
let examples (seed: int) (n: int) =
    let rng = Random(seed)
    [| for _ in 1 .. n ->
        let len = rng.Next(2, 7)
        let p = Array.init len (fun _ -> rng.Next(3, 20))
        let a = (p.[len - 1] + 7) % 17
        LmExample(p, [| 3 + a |], [| for k in 0 .. 3 -> [| 3 + (a + k) % 17 |] |]) |]

let private lossOf (m: ILanguageModel) (ex: LmExample[]) =
    use _ng = torch.no_grad()
    use b = Batching.Build(ex, BatchLayout.For(m, 64), Trainer.DeviceOf m)
    use l = m.ComputeLoss b
    l.ToDouble()

let private randomizeB (lora: LoraModel) (adapter: string) (seed: int64) =
    torch.manual_seed(seed) |> ignore
    use _ng = torch.no_grad()
    for w in lora.ModulesOf adapter do w.LoraB(adapter).normal_(0.0, 0.05) |> ignore

/// The contract suite for one model family. `create seed` builds a fresh model with deterministic
/// weights; `targets` are LoRA target names present in that family.
let suite (name: string) (create: int64 -> ILanguageModel) (targets: string[]) =
    let cfg adapter = LoraConfig(R = 4, Alpha = 8.0, Dropout = 0.0, TargetModules = targets, AdapterName = adapter)
    let dispose (m: ILanguageModel) = m.Dispose()
    testSequenced <| testList $"contract {name}" [
        test "LoRA with B = 0 leaves the loss bit-identical; a non-zero B changes it (hooks run)" {
            let m = create 1L
            try
                m.Module.eval()
                let ex = examples 1 6
                let before = lossOf m ex
                let lora = Lora.Apply(m.Module, cfg "default")
                Expect.equal (lossOf m ex) before "B = 0"
                randomizeB lora "default" 2L
                Expect.notEqual (lossOf m ex) before "the adapter acts in forward (Linear invoked via call)"
                for struct (n, p) in m.Module.named_parameters() do
                    Expect.equal p.requires_grad (Lora.IsLoraPath n) $"only LoRA trainable: {n}"
            finally dispose m
        }

        test "merge keeps the loss (1e-5) and unmerge restores it" {
            let m = create 1L
            try
                m.Module.eval()
                let ex = examples 1 6
                let lora = Lora.Apply(m.Module, cfg "default")
                randomizeB lora "default" 3L
                let l0 = lossOf m ex
                lora.Merge "default"
                let l1 = lossOf m ex
                lora.Unmerge "default"
                let l2 = lossOf m ex
                Expect.floatClose { absolute = 1e-5; relative = 1e-5 } l1 l0 "merged"
                Expect.floatClose { absolute = 1e-6; relative = 1e-6 } l2 l0 "unmerged"
            finally dispose m
        }

        test "adapter save -> load into a fresh model reproduces the loss exactly" {
            let m = create 1L
            let m2 = create 1L
            let dir = IO.Path.Combine(IO.Path.GetTempPath(), "klf-contract-" + Guid.NewGuid().ToString("N"))
            try
                m.Module.eval()
                m2.Module.eval()
                let lora = Lora.Apply(m.Module, cfg "default")
                randomizeB lora "default" 4L
                lora.SaveAdapter(dir, "default", PeftAdapterConfig.TaskTypeOf m.Family, m.ModelType)
                Lora.LoadAdapter(m2.Module, dir) |> ignore
                let ex = examples 2 6
                Expect.equal (lossOf m2 ex) (lossOf m ex) "identical loss"
            finally
                dispose m
                dispose m2
                if IO.Directory.Exists dir then IO.Directory.Delete(dir, true)
        }

        for lora in [ true; false ] do
          let kind = if lora then "LoRA" else "full fine-tuning"
          test $"{kind} training: loss falls, same seed repeats exactly, no tensor leak over 50 steps" {
            let run () =
                let m = create 1L
                try
                    if lora then Lora.Apply(m.Module, LoraConfig(R = 8, Alpha = 16.0, Dropout = 0.05, TargetModules = targets)) |> ignore
                    let train = examples 7 128
                    let before = Trainer.EvaluateLoss(m, train.[.. 31])
                    let live0 = torch.Tensor.TotalCount
                    let lr = if lora then 1e-2 else 3e-3
                    let metrics = Trainer.Fit(m, train, TrainerOptions(BatchSize = 8, MaxSteps = 50, Seed = 3, Optimizer = OptimizerOptions(LearningRate = lr, WarmupSteps = 3)))
                    let live1 = torch.Tensor.TotalCount
                    let after = Trainer.EvaluateLoss(m, train.[.. 31])
                    metrics |> Seq.map (fun s -> s.Loss) |> Array.ofSeq, before, after, live1 - live0
                finally dispose m
            let losses, before, after, grown = run ()
            let losses2, _, _, _ = run ()
            printfn "contract %s: eval loss %.3f -> %.3f over 50 %s steps; live tensors %+d" name before after kind grown
            Expect.isLessThan after before "evaluation loss falls"
            Expect.equal losses2 losses "same seed, same losses"
            Expect.isLessThanOrEqual grown 0L "no live tensors left behind by Fit"
          }
    ]

[<Tests>]
let tinyLm = suite "tiny" (fun seed -> TinyLm.create seed :> ILanguageModel) [| "q_proj"; "v_proj" |]

[<Tests>]
let llama =
    suite "llama" (fun seed ->
        torch.manual_seed seed |> ignore
        new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset "llama-tiny") :> ILanguageModel) [| "q_proj"; "v_proj" |]

[<Tests>]
let t5 =
    suite "t5" (fun seed ->
        torch.manual_seed seed |> ignore
        Klf.Models.T5.T5ForConditionalGeneration.Create(Klf.Models.T5.T5Config.Preset "t5-tiny") :> ILanguageModel) [| "q"; "v" |]

[<Tests>]
let t5gated =
    suite "t5-gated" (fun seed ->
        torch.manual_seed seed |> ignore
        Klf.Models.T5.T5ForConditionalGeneration.Create(Klf.Models.T5.T5Config.Preset "t5-tiny-gated") :> ILanguageModel) [| "q"; "v"; "wi_0" |]

[<Tests>]
let bert =
    suite "bert" (fun seed -> SentenceEncoderKit.tiny seed :> ILanguageModel) [| "query"; "value" |]
