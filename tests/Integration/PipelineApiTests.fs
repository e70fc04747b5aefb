/// The F# pipeline wrappers, used the way an .fsx script uses them.
module PipelineApiTests

open System.IO
open Expecto
open Klf.Models
open Klf.Pipelines

[<Tests>]
let tests =
    testSequenced <| testList "pipeline api" [
        test "load a tokenizer, build a preset, add LoRA, train, save and reload" {
            let tok = Tokenizer.load TokenizerTests.trained.Value.T5Folder
            let model = Model.preset 4L "t5-tiny" tok
            try
                let train =
                    BenchmarkData.records "train" "amazon"
                    |> List.truncate 48
                    |> List.map (fun r -> (Example.create (r.Id) (r.Input) (r.Output)))
                    |> Prompt.examples model.Family tok
                let lora = model |> LoraAdapter.apply 4 [ "q"; "v" ]
                let before = model |> Train.evalLoss train
                let steps = model |> Train.fit (Train.options 8 20 1e-2) train
                let after = model |> Train.evalLoss train
                Expect.equal steps.Length 20 "one metrics record per step"
                Expect.isLessThan after before "LoRA training lowers the loss"
                let dir = Directory.CreateTempSubdirectory("klf-api-").FullName
                try
                    lora |> LoraAdapter.save dir "default"
                    Model.save dir model // base weights beside the adapter: a full round trip of both
                    Expect.isTrue (File.Exists(Path.Combine(dir, "adapter_model.safetensors"))) "adapter written"
                    // The HF folder holds the base model only: it loads strictly into a plain model.
                    let base' = Model.load dir
                    Expect.equal (Model.parameterCount base') (Model.parameterCount model - (lora.NamedParameters "default" |> Seq.sumBy (fun struct (_, p) -> p.numel()))) "base parameters only"
                    base'.Dispose()
                    let answers = Prompt.generate model tok (GenerationOptions(MaxNewTokens = 4)) [ train.Length |> string ]
                    Expect.equal answers.Length 1 "one answer per prompt"
                finally Directory.Delete(dir, true)
            finally model.Dispose()
        }
    ]
