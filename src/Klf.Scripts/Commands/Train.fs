/// `klf train`: fine-tune a model on one benchmark task and save a checkpoint.
module Klf.Cli.Train

open System
open System.IO
open System.Text.Json.Nodes
open TorchSharp
open Klf.Models
open Klf.Adapters
open Klf.Training
open Klf.Checkpoints
open Klf.Formats
open Klf.SkillUnits
open Klf.Kif
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common

let private model = opt<string> "--model" "Hugging Face model folder to start from." None
let private preset = opt<string> "--preset" "Start from a randomly initialised preset instead (vocabulary = tokenizer's)." None
let private tokenizer = tokenizerOption
let private benchmark = benchmarkOption
let private task = req<string> "--task" "Task name, e.g. agnews."
let private nTrain = opt<int> "--train-examples" "Training examples sampled from the train split (0 = all)." (Some 0) |> check (atLeast 0)
let private nHeld = opt<int> "--heldout-examples" "Held-out validation examples taken from the train split (never dev)." (Some 100) |> check (atLeast 0)
let private steps = opt<int> "--steps" "Optimizer steps (0 = use --epochs)." (Some 0) |> check (atLeast 0)
let private epochs = opt<int> "--epochs" "Passes over the training examples." (Some 1) |> check (atLeast 1)
let private batch = opt<int> "--batch" "Examples per micro-batch." (Some 8) |> check (atLeast 1)
let private accum = opt<int> "--accumulation" "Micro-batches per optimizer step." (Some 1) |> check (atLeast 1)
let private lr = opt<float> "--lr" "Peak learning rate (AdamW)." (Some 3e-4) |> check (finitePositive)
let private warmup = opt<int> "--warmup" "Linear warm-up steps." (Some 50) |> check (atLeast 0)
let private maxLen = opt<int> "--max-length" "Maximum sequence (decoder-only) or source (encoder-decoder) length." (Some 512) |> check (atLeast 1)
let private seed = opt<int> "--seed" "Seed for sampling, initialisation, dropout and batching." (Some 1)
let private loraR = opt<int> "--lora-r" "Train a LoRA adapter of this rank instead of all weights (0 = full fine-tuning)." (Some 0) |> check (atLeast 0)
let private out = req<string> "--out" "Output folder: a checkpoint (or the LoRA adapter) plus the tokenizer files." |> check folderToWrite
let private dropInstruction =
    opt<bool> "--drop-instruction" "Drop the task's instruction (the lines all its examples share at their start and end) first, as klf run --drop-instruction does (the MiniLM default)." (Some false)
let private bestEvery =
    opt<int> "--best-validation" "Keep the weights of the lowest held-out loss, measured every N steps and after the last (0: the last weights). Importance (--importance) is still collected over every step." (Some 0) |> check (atLeast 0)
let private baseDtypeOption =
    opt<string> "--base-dtype" "With --lora-r: the frozen base's matrices in fp32, or bf16 (half their memory; the adapters, activations and loss stay float32)." (Some "fp32")
let private saveDtype = opt<string> "--save-dtype" "Weights' storage type of a full checkpoint: fp32 or bf16 (training is always float32)." (Some "fp32")
let private importance =
    opt<string> "--importance" "Also track KIF importance while training and write this task's normalised unit scores (an importance profile, JSON) to this file, for klf fuse." None |> check fileToWrite
let private partitionerList = String.Join(", ", SkillUnitPartitioners.Names)
let private units =
    opt<string> "--units" $"Skill-unit partitioner of --importance ({partitionerList}; default: full, or lora-rank1 with --lora-r)." None

/// The KIF settings of `--importance`: KIF's full fine-tuning settings (whole-tensor units, first-order
/// importance) or, for a LoRA adapter, KIF-LoRA's (rank-1 units, second-order importance), with the
/// partitioner replaced when `units` names one.
let importanceOptions (lora: bool) (units: string) : KifOptions =
    let reference = if lora then KifOptions.Lora() else KifOptions.FullFineTuning()
    match units with
    | null | "" -> reference
    | name -> KifOptions(Partitioner = SkillUnitPartitioners.ByName name, Importance = reference.Importance, Normalisation = reference.Normalisation,
                         TopFraction = reference.TopFraction, Gamma = reference.Gamma, Rule = reference.Rule)

let cmd =
    command "train" "Fine-tune a model on one task of a benchmark and save a checkpoint." [ model; preset; tokenizer; benchmark; task; nTrain; nHeld; steps; epochs; batch; accum; lr; warmup; maxLen; seed; loraR; Klf.Cli.Common.loraAlphaOption; Klf.Cli.Common.loraDropoutOption; Klf.Cli.Common.loraTargetsOption; deviceOption; out; saveDtype; baseDtypeOption; importance; units; bestEvery; dropInstruction ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let bf16 = savesBf16 (pr.GetValue saveDtype)
        let importanceFile = pr.GetValue importance
        let trackImportance = not (String.IsNullOrEmpty importanceFile)
        if not trackImportance && not (String.IsNullOrEmpty(pr.GetValue units)) then
            raise (ArgumentException "--units chooses the skill units of --importance: give --importance FILE too")
        let kifOptions = importanceOptions (pr.GetValue loraR > 0) (pr.GetValue units) // unknown partitioners fail before any work
        let tok, tokDir = loadTokenizer (pr.GetValue tokenizer) (pr.GetValue model)
        let m = loadModel (pr.GetValue model) (pr.GetValue preset) tok (int64 (pr.GetValue seed)) (device (pr.GetValue deviceOption))
        let root = benchmarkRoot (pr.GetValue benchmark)
        // The task's training examples with its label set as their choices (a sentence encoder scores them).
        let taskData = Task.load root (pr.GetValue task) |> if pr.GetValue dropInstruction then Task.dropInstruction else id
        let all = taskData.Train |> Benchmark.sample (pr.GetValue seed) Int32.MaxValue
        let held = min (pr.GetValue nHeld) (all.Length / 5)
        let heldOut, rest = all[.. held - 1], all[held ..]
        let train = if pr.GetValue nTrain > 0 then rest[.. min rest.Length (pr.GetValue nTrain) - 1] else rest
        let r = pr.GetValue loraR
        let baseDtype = (pr.GetValue baseDtypeOption).Trim().ToLowerInvariant()
        if baseDtype <> "fp32" && baseDtype <> "bf16" then raise (ArgumentException $"--base-dtype must be fp32 or bf16, not \"{baseDtype}\"")
        if baseDtype = "bf16" && r <= 0 then raise (ArgumentException "--base-dtype bf16 holds a frozen base under LoRA adapters: give --lora-r too")
        if r > 0 then
            let lora = Klf.Adapters.Lora.Apply(m.Module, Klf.Cli.Common.loraConfig pr m.Family r)
            if baseDtype = "bf16" then
                let saved = Klf.Adapters.LowPrecisionBase.Hold(lora, torch.ScalarType.BFloat16)
                printfn "frozen base held in bfloat16 (%.1f MB saved); adapters train in float32" (float saved / 1048576.0)
        let options =
            TrainerOptions(BatchSize = pr.GetValue batch, AccumulationSteps = pr.GetValue accum, Epochs = pr.GetValue epochs,
                           MaxSteps = pr.GetValue steps, Seed = pr.GetValue seed, MaxLength = pr.GetValue maxLen,
                           Optimizer = OptimizerOptions(LearningRate = pr.GetValue lr, WarmupSteps = pr.GetValue warmup))
        let total = Trainer.PlannedSteps(train.Length, options)
        let every = max 1 (total / 20)
        printfn "training %s on %s: %d examples, %d held out, %d steps%s" m.ModelType (pr.GetValue task) train.Length heldOut.Length total
            (if r > 0 then $", LoRA r={r}" else ", all weights")
        // With --importance the training runs inside a KIF session of this one task: BeginTask attaches
        // the importance tracker to the step hooks, EndTask scores the units (no fusion for a first task,
        // so the weights are exactly those of plain training).
        use session = if trackImportance then new KifSession(m, kifOptions) else null
        let hooks = if trackImportance then session.BeginTask(pr.GetValue task) else null
        let every' = pr.GetValue bestEvery
        if every' < 0 then raise (ArgumentException $"--best-validation must be 0 (off) or a number of steps, got {every'}")
        if every' > 0 && heldOut.Length = 0 then raise (ArgumentException "--best-validation needs held-out examples (--heldout-examples)")
        let report =
            Finetune.runBest every' hooks m tok options (fun s ->
                if s.Step % every = 0 || s.Step = total - 1 then
                    printfn "step %5d/%d  loss %.4f  lr %.2e  grad-norm %.3f" (s.Step + 1) total s.Loss s.LearningRate s.GradNorm) train heldOut
        let taskImportance = if trackImportance then Some(session.EndTask()) else None
        printfn "train loss    %.4f -> %.4f" report.TrainLossBefore report.TrainLossAfter
        printfn "held-out loss %.4f -> %.4f" report.HeldOutLossBefore report.HeldOutLossAfter
        printfn "throughput    %.0f tokens/s" report.TokensPerSecond
        match report.Kept with
        | Some k -> printfn "best-validation: kept step %d of %d (held-out loss %.4f)" k.Step report.Steps.Length k.Loss
        | None -> ()
        let dir = pr.GetValue out
        let extra = JsonObject()
        extra["task"] <- JsonValue.Create(pr.GetValue task)
        extra["steps"] <- JsonValue.Create report.Steps.Length
        extra["train_loss_before"] <- JsonValue.Create report.TrainLossBefore
        extra["train_loss_after"] <- JsonValue.Create report.TrainLossAfter
        extra["heldout_loss_before"] <- JsonValue.Create report.HeldOutLossBefore
        extra["heldout_loss_after"] <- JsonValue.Create report.HeldOutLossAfter
        extra["tokens_per_second"] <- JsonValue.Create report.TokensPerSecond
        extra["seed"] <- JsonValue.Create(pr.GetValue seed)
        match report.Kept with
        | Some k ->
            extra["kept_step"] <- JsonValue.Create k.Step
            extra["kept_heldout_loss"] <- JsonValue.Create k.Loss
        | None -> ()
        match Lora.Find m.Module with
        | null ->
            // Rounded only now, after any importance was scored on the float32 weights.
            if bf16 then m.Module.``to``(torch.ScalarType.BFloat16) |> ignore
            Checkpoint.Save(m, dir, extra, tokenizerFiles tokDir, tokenizer = tok) |> ignore
            printfn "saved checkpoint to %s" (Path.GetFullPath dir)
        | lora ->
            let taskType = PeftAdapterConfig.TaskTypeOf m.Family
            AtomicFile.WriteFolder(dir, fun tmp ->
                lora.SaveAdapter(tmp, "default", taskType, (match pr.GetValue model with null | "" -> pr.GetValue preset | d -> Path.GetFullPath d))
                for f in tokenizerFiles tokDir do File.Copy(f, Path.Combine(tmp, Path.GetFileName f)))
            printfn "saved LoRA adapter to %s" (Path.GetFullPath dir)
        match taskImportance with
        | Some result ->
            session.Profile().Save importanceFile
            let map = session.Map
            let top = result.ImportantCurrent |> Array.indexed |> Array.filter snd |> Array.map (fun (i, _) -> map.Units[i].Id)
            printfn "importance    %d %s units, %d of %d steps counted; top %.0f%%: %s" map.Count map.Partitioner result.StepsCounted report.Steps.Length
                (100.0 * kifOptions.TopFraction) (if top.Length = 0 then "none" elif top.Length <= 8 then String.Join(", ", top) else String.Join(", ", top[.. 7]) + $", … ({top.Length})")
            if result.StepsCounted = 0 then
                eprintfn "klf: warning: no step counted towards importance (the first step is skipped): every unit scores 0"
            printfn "saved importance profile to %s" (Path.GetFullPath importanceFile)
        | None -> ()
        m.Dispose()
        0)
