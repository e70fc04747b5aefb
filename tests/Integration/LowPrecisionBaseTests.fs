/// A frozen base held in bfloat16 under float32 LoRA adapters (LowPrecisionBase): the loss falls as
/// with a float32 base, the base stays bfloat16 and untouched, the adapters train and are saved in
/// float32, importance is tracked on the adapters with the same ranking as over a float32 base, and
/// the base's matrices take half the memory. LLaMA (tied and untied heads) and T5.
module LowPrecisionBaseTests

open System
open System.IO
open Expecto
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.Training
open Klf.Importance
open Klf.SkillUnits
open Klf.Formats

let private bytesOf (m: ILanguageModel) (f: torch.Tensor -> bool) =
    m.Module.parameters() |> Seq.filter f |> Seq.sumBy (fun p -> p.numel() * p.ElementSize)

/// Trains a LoRA of rank 4 on the toy task, with or without a bfloat16 base; returns the first and
/// last losses, the unit scores of the adapters, and what the model looked like.
let private run (preset: string) (targets: string[]) (lowBase: bool) =
    Trainer.Seed 3L
    use model = LanguageModels.FromPreset preset
    let lora = Lora.Apply(model.Module, LoraConfig.ForRank(4, targets))
    let fullBytes = bytesOf model (fun p -> not p.requires_grad)
    let saved = if lowBase then LowPrecisionBase.Hold(lora, torch.ScalarType.BFloat16) else 0L
    let frozen () = model.Module.named_parameters() |> Seq.filter (fun struct (_, p) -> not p.requires_grad) |> Seq.map (fun struct (n, p) -> n, p.clone().detach()) |> List.ofSeq
    let before = frozen ()
    let hooks = StepHooks()
    use tracker = new ImportanceTracker(ImportanceOptions(ImportanceOrder.Second))
    tracker.Attach(hooks, model.Module)
    let losses = ResizeArray<float>()
    let options = TrainerOptions(BatchSize = 8, MaxSteps = 40, Seed = 1, Optimizer = OptimizerOptions(LearningRate = 2e-2, WarmupSteps = 2))
    Trainer.Run(model, LmContract.examples 5 64, options, FitExtras(hooks, Action<StepMetrics>(fun s -> losses.Add s.Loss), null)) |> ignore
    let after = frozen ()
    let map = LoraRank1Partitioner().Partition model
    let scores = (use _s = torch.NewDisposeScope() in UnitScores.Compute(map, model, tracker.ElementScores()))
    let dir = Directory.CreateTempSubdirectory("klf-lowbase-").FullName
    lora.SaveAdapter(dir, "default")
    let struct (entries, _) = SafeTensors.ReadHeader(Path.Combine(dir, "adapter_model.safetensors"))
    let adapterDtypes = entries |> Seq.map (fun e -> e.DType) |> Seq.distinct |> List.ofSeq
    Directory.Delete(dir, true)
    let dtypes = model.Module.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.dtype, p.requires_grad, p.dim()) |> List.ofSeq
    let unchanged = List.forall2 (fun (n1, a: torch.Tensor) (n2, b: torch.Tensor) -> n1 = n2 && a.eq(b).all().item<bool>()) before after
    for _, t in before @ after do t.Dispose()
    losses |> List.ofSeq, scores, dtypes, unchanged, fullBytes, saved, adapterDtypes

[<Tests>]
let tests =
    testSequenced <| testList "low-precision base" [
        for preset, targets in [ "llama-tiny", [| "q_proj"; "v_proj" |]; "llama-tiny-tied", [| "q_proj"; "v_proj" |]; "t5-tiny", [| "q"; "v" |] ] do
            test $"{preset}: a bfloat16 base under float32 LoRA trains like a float32 one, keeps its weights, halves its memory" {
                let lossesLow, scoresLow, dtypes, unchanged, fullBytes, saved, adapterDtypes = run preset targets true
                let lossesFull, scoresFull, _, _, _, _, _ = run preset targets false
                printfn "%s: loss %.3f -> %.3f with a bf16 base, %.3f -> %.3f with fp32" preset lossesLow.Head (List.last lossesLow) lossesFull.Head (List.last lossesFull)
                Expect.isLessThan (List.last lossesLow) (0.92 * lossesLow.Head) "the loss falls"
                Expect.isLessThan (abs (List.last lossesLow - List.last lossesFull)) (0.15 * List.last lossesFull + 0.05) "close to the float32 base's"
                for n, dtype, trainable, dim in dtypes do
                    if trainable then Expect.equal dtype torch.ScalarType.Float32 $"{n}: a trainable adapter stays float32"
                    elif dim >= 2L then Expect.equal dtype torch.ScalarType.BFloat16 $"{n}: a frozen matrix is bfloat16"
                    else Expect.equal dtype torch.ScalarType.Float32 $"{n}: a norm weight stays float32"
                Expect.isTrue unchanged "the frozen base did not move"
                Expect.equal adapterDtypes [ "F32" ] "the adapter is saved in float32"
                let matrices = dtypes |> List.filter (fun (_, _, t, d) -> not t && d >= 2L) |> List.length
                Expect.isGreaterThan matrices 0 "there are frozen matrices"
                Expect.isGreaterThan (float saved) (0.45 * float fullBytes) "about half of the base's bytes saved"
                Expect.all scoresLow Double.IsFinite "importance finite"
                // The same units rank as important over either base (Spearman on the unit scores).
                let rank (xs: float[]) = xs |> Array.mapi (fun i x -> i, x) |> Array.sortBy snd |> Array.mapi (fun r (i, _) -> i, float r) |> Array.sortBy fst |> Array.map snd
                let a, b = rank scoresLow, rank scoresFull
                let mean = float (a.Length - 1) / 2.0
                let cov = Array.map2 (fun x y -> (x - mean) * (y - mean)) a b |> Array.sum
                let var = a |> Array.sumBy (fun x -> (x - mean) * (x - mean))
                Expect.isGreaterThan (cov / var) 0.8 "importance ranks the units alike"
            }
    ]
