/// Strategies over a real task sequence: a 3-task run fills the accuracy matrix.
module ContinualTests

open System
open Expecto
open TorchSharp
open Klf.Models
open Klf.Training
open Klf.Pipelines

[<Tests>]
let tests =
    testSequenced <| testList "continual" [
        test "every strategy (SeqFT, SeqLoRA, KIF, KIF-LoRA, IncLoRA, O-LoRA, EWC, Replay, KIF+replay, MTL) completes a 3-task run on real Long Sequence slices and fill the matrix" {
            let tok = Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            let root = IO.Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")
            let sequence =
                [ "dbpedia"; "amazon"; "agnews" ]
                |> List.map (Task.load root)
                |> TaskSequence.create "standard-3"
                |> TaskSequence.subsample 4 { Train = 16; Test = 4 }
            let makeModel () =
                torch.manual_seed 9L |> ignore
                new Klf.Models.Llama.LlamaForCausalLM(Klf.Models.Llama.LlamaConfig.Preset("llama-tiny", tok.VocabSize)) :> ILanguageModel
            // Few steps: the test checks that every strategy runs end to end and fills the matrix (10 strategies, < 60 s).
            let options = TrainerOptions(BatchSize = 4, MaxSteps = 3, Seed = 1, MaxLength = 160, Optimizer = OptimizerOptions(LearningRate = 5e-3, WarmupSteps = 1))
            for strategy in Strategy.all do
                let r = Continual.run makeModel tok options strategy sequence
                let m = r.Matrix
                Expect.equal r.Tasks [ "dbpedia"; "amazon"; "agnews" ] "task order kept"
                for j in 0 .. 2 do
                    for i in 0 .. j do
                        let a = m[j, i]
                        Expect.isTrue (a >= 0.0 && a <= 100.0) $"{strategy.Name}: a[{j},{i}] = {a} is a percentage"
                // The metrics are the formulas applied to the matrix.
                let ap = (m[2, 0] + m[2, 1] + m[2, 2]) / 3.0
                let bwt = ((m[2, 0] - m[0, 0]) + (m[2, 1] - m[1, 1])) / 2.0
                Expect.floatClose Accuracy.veryHigh r.Summary.AP ap $"{strategy.Name}: AP"
                Expect.floatClose Accuracy.veryHigh r.Summary.BWT bwt $"{strategy.Name}: BWT"
                printfn "continual %-8s AP %5.1f  F.Ra %5.1f  BWT %6.1f  matrix %A" strategy.Name r.Summary.AP r.Summary.FRa r.Summary.BWT
                    [ for j in 0 .. 2 -> [ for i in 0 .. j -> m[j, i] ] ]
        }

        test "strategies are selectable by name; unknown names list the known ones" {
            Expect.equal (Strategy.byName "KIF").Name "kif" "case-insensitive"
            let msg = try Strategy.byName "lwf" |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains msg "kif-lora" "lists the known strategies"
            for name in [ "kif-neuron"; "inclora"; "olora"; "ewc"; "replay"; "kif-replay"; "mtl" ] do
                Expect.equal (Strategy.byName name).Name name $"{name} selectable"
        }
    ]
