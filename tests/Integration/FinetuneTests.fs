/// Fine-tuning tiny LLaMA-family and T5 models on a slice of a real benchmark task, with
/// SentencePiece tokenizers trained on the benchmark text at test time.
module FinetuneTests

open Expecto
open TorchSharp
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Pipelines

let private task = "agnews"

/// 160 training and 48 held-out examples, both from the train split (dev overlaps test).
let private slices =
    lazy (
        let all = BenchmarkData.records "train" task |> List.map (fun r -> (Example.create (r.Id) (r.Input) (r.Output))) |> Array.ofList
        let shuffled = Benchmark.sample 11 all.Length all
        shuffled[.. 159], shuffled[160 .. 207])

let private finetune (name: string) (model: ILanguageModel) (tok: ITextTokenizer) =
    let train, heldOut = slices.Value
    let options = TrainerOptions(BatchSize = 8, MaxSteps = 60, Seed = 5, MaxLength = 256,
                                 Optimizer = OptimizerOptions(LearningRate = 3e-3, WarmupSteps = 6))
    let r = Finetune.run model tok options ignore train heldOut
    printfn "finetune %s on %s: train loss %.3f -> %.3f, held-out loss %.3f -> %.3f, %d steps, %.0f tokens/s"
        name task r.TrainLossBefore r.TrainLossAfter r.HeldOutLossBefore r.HeldOutLossAfter r.Steps.Length r.TokensPerSecond
    Expect.isLessThan r.TrainLossAfter (0.5 * r.TrainLossBefore) "training loss at least halves"
    Expect.isLessThan r.HeldOutLossAfter (0.5 * r.HeldOutLossBefore) "held-out loss at least halves"
    let firstTen = r.Steps[.. 9] |> Array.averageBy (fun s -> s.Loss)
    let lastTen = r.Steps[r.Steps.Length - 10 ..] |> Array.averageBy (fun s -> s.Loss)
    Expect.isLessThan lastTen firstTen "step losses fall"
    // The trained model answers with label words of the task (exact match measured, not asserted).
    let answers = Prompt.generate model tok (GenerationOptions(MaxNewTokens = 5)) (heldOut |> Array.map (fun e -> e.Input))
    let em = Finetune.exactMatch answers (heldOut |> Array.map (fun e -> e.Output))
    printfn "finetune %s on %s: held-out exact match %.1f%% (e.g. %A)" name task em (Array.truncate 4 answers)

[<Tests>]
let tests =
    testSequenced <| testList "finetune" [
        test "tiny LLaMA-family model on real agnews examples: loss falls clearly" {
            let tok = TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            torch.manual_seed 3L |> ignore
            use model = new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize))
            finetune "llama-tiny" model tok
        }
        test "tiny T5 model on real agnews examples: loss falls clearly" {
            let tok = TokenizerLoader.FromFolder TokenizerTests.trained.Value.T5Folder
            torch.manual_seed 3L |> ignore
            use model = Klf.Models.T5.T5ForConditionalGeneration.Create(Klf.Models.T5.T5Config.Preset("t5-tiny", tok.VocabSize))
            finetune "t5-tiny" model tok
        }
    ]
