/// Evaluating a tiny LLaMA-family model trained on real agnews examples: Evaluate's score is the
/// mean of per-example exact matches of Prompt.generate's answers, with or without the KV cache.
module EvaluateTests

open Expecto
open TorchSharp
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Pipelines

/// 96 training and 32 held-out examples of agnews, both from the train split (dev overlaps test).
let private slices =
    lazy (
        let all = BenchmarkData.records "train" "agnews" |> List.map (fun r -> (Example.create (r.Id) (r.Input) (r.Output))) |> Array.ofList
        let shuffled = Benchmark.sample 17 all.Length all
        shuffled[.. 95], shuffled[96 .. 127])

[<Tests>]
let tests =
    testSequenced <| testList "evaluate" [
        test "tiny LLaMA-family model on agnews: score = mean of hand-computed exact matches, same with and without the cache" {
            let tok = TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            torch.manual_seed 3L |> ignore
            use model = new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize))
            let train, heldOut = slices.Value
            let options = TrainerOptions(BatchSize = 8, MaxSteps = 40, Seed = 5, MaxLength = 256,
                                         Optimizer = OptimizerOptions(LearningRate = 3e-3, WarmupSteps = 4))
            Trainer.Fit(model, Prompt.examples model.Family tok train, options, null, System.Action<StepMetrics>(ignore)) |> Seq.iter ignore

            let maxNew = Evaluate.maxNewTokensFor tok heldOut
            let longest = heldOut |> Array.map (fun e -> tok.Encode(e.Output).Length) |> Array.max
            Expect.equal maxNew (longest + 1) "max new tokens = longest label in tokens + 1"

            let score = Evaluate.task model tok Metric.ExactMatch maxNew heldOut
            // By hand: generate, then exact match of each answer, trimmed and lower-cased.
            let answers = Prompt.generate model tok (GenerationOptions(MaxNewTokens = maxNew)) (heldOut |> Array.map (fun e -> e.Input))
            let hits =
                Array.map2 (fun (a: string) (e: Example) -> if a.Trim().ToLowerInvariant() = e.Output.Trim().ToLowerInvariant() then 1.0 else 0.0)
                    answers heldOut
            let byHand = 100.0 * Array.average hits
            printfn "evaluate llama-tiny on agnews: exact match %.1f%% over %d held-out examples (e.g. %A)" score heldOut.Length (Array.truncate 4 answers)
            Expect.floatClose Accuracy.veryHigh score byHand "Evaluate.task = mean of per-example exact matches, in percent"
            Expect.equal score (Finetune.exactMatch answers (heldOut |> Array.map (fun e -> e.Output))) "agrees with Finetune.exactMatch"

            let noCache = Evaluate.taskWith model tok (GenerationOptions(MaxNewTokens = maxNew, UseCache = false)) Metric.ExactMatch heldOut
            Expect.equal noCache score "same score without the KV cache"
            let noCacheAnswers = Evaluate.predictionsWith model tok (GenerationOptions(MaxNewTokens = maxNew, UseCache = false)) heldOut
            Expect.equal noCacheAnswers answers "same answers without the KV cache"
            let batchOfOne = Evaluate.taskWith model tok (GenerationOptions(MaxNewTokens = maxNew, BatchSize = 1)) Metric.ExactMatch heldOut
            Expect.equal batchOfOne score "same score one prompt at a time"

            let rouge = Evaluate.task model tok Metric.RougeL maxNew heldOut
            let rougeByHand = 100.0 * (Array.map2 (fun a (e: Example) -> Scoring.rougeL a e.Output) answers heldOut |> Array.average)
            Expect.floatClose Accuracy.veryHigh rouge rougeByHand "ROUGE-L score = mean of per-example ROUGE-L"
            Expect.isGreaterThanOrEqual rouge score "ROUGE-L ≥ exact match (an exact match has equal tokens)"
        }
    ]
