/// Importance per layer for KIF: computed from a real KIF session (tiny LLaMA, two real benchmark
/// tasks), saved and loaded as JSON, plotted and tabulated in report.md.
module LayerImportanceTests

open System
open System.IO
open Expecto
open SkiaSharp
open TorchSharp
open Klf.Models.Llama
open Klf.Training
open Klf.Kif
open Klf.Pipelines
open Klf.Reports

let private tasks = [ "agnews"; "dbpedia" ]

/// Two short tasks through a KIF session; returns the layer importance, each unit's layer label and,
/// per task, (name, Ŝ_k, Â_k) copied out of the session.
let private run =
    lazy (
        let tok = Klf.Tokenizers.TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
        torch.manual_seed 11L |> ignore
        use model = new LlamaForCausalLM(LlamaConfig.Preset("llama-tiny", tok.VocabSize))
        use session = Kif.session (KifOptions.FullFineTuning()) model
        let options = TrainerOptions(BatchSize = 8, MaxSteps = 6, Seed = 3, MaxLength = 160, Optimizer = OptimizerOptions(LearningRate = 3e-3, WarmupSteps = 1))
        for task in tasks do
            let examples =
                BenchmarkData.records "train" task
                |> List.truncate 32
                |> List.map (fun r -> (Example.create (r.Id) (r.Input) (r.Output)))
                |> Prompt.examples model.Family tok
            Kif.task session task options examples model |> ignore
        let li = Kif.importanceByLayer session
        li, [| for u in session.Map.Units -> u.Layer |], [ for h in session.History -> h.Task, Array.copy h.Normalised, Array.copy h.Accumulated ])

/// The mean of `scores` over the units labelled `layer`, by a plain loop.
let private handMean (labels: string[]) (layer: string) (scores: double[]) =
    let mutable sum, count = 0.0, 0
    for i in 0 .. labels.Length - 1 do
        if labels[i] = layer then
            sum <- sum + scores[i]
            count <- count + 1
    sum / float count

let private handMade =
    { Layers = [ "embeddings"; "model.layers.0"; "head" ]
      Tasks = [ "agnews"; "dbpedia" ]
      Scores = [| [| 0.1; 0.25; 1.0 |]; [| 0.0; 0.5; nan |] |]
      Accumulated = [| 0.05; 0.4; 0.876 |] }

let private isPng (path: string) =
    Expect.isTrue (File.Exists path) $"{path} exists"
    let bytes = File.ReadAllBytes path
    Expect.isGreaterThan bytes.Length 1000 $"{path} is not empty"
    Expect.sequenceEqual bytes[0..7] [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |] $"{path}: PNG signature"
    use bmp = SKBitmap.Decode bytes
    Expect.isNotNull bmp $"{path} decodes"
    Expect.equal (bmp.Width, bmp.Height) (Plots.Width, Plots.Height) $"{path}: size"

[<Tests>]
let tests =
    testSequenced <| testList "layer importance" [
        test "importanceByLayer: per-layer means of the unit map's Ŝ and Â over two real tasks on a tiny LLaMA" {
            let li, labels, history = run.Value
            Expect.equal li.Layers [ "embeddings"; "model.layers.0"; "model.layers.1"; "final_norm"; "head" ] "every layer label, in natural order"
            Expect.equal (Set.ofList li.Layers) (Set.ofArray labels) "exactly the map's labels"
            Expect.equal li.Tasks tasks "one row per completed task"
            Expect.equal li.Scores.Length 2 "two rows"
            for k, (task, normalised, _) in List.indexed history do
                Expect.equal (li.Tasks[k]) task "task name"
                for l, layer in List.indexed li.Layers do
                    Expect.floatClose Accuracy.veryHigh (li.Scores[k][l]) (handMean labels layer normalised) $"{task} / {layer}: mean Ŝ"
            let _, _, lastAccumulated = List.last history
            for l, layer in List.indexed li.Layers do
                Expect.floatClose Accuracy.veryHigh (li.Accumulated[l]) (handMean labels layer lastAccumulated) $"{layer}: mean Â after the last task"
            Expect.all (Array.concat (li.Accumulated :: List.ofArray li.Scores)) (fun x -> x >= 0.0 && x <= 1.0) "means of normalised scores lie in [0,1]"
            Expect.isGreaterThan (Array.max (li.Scores[1]) - Array.min (li.Scores[1])) 0.0 "layers differ"
            torch.manual_seed 1L |> ignore
            use model = new LlamaForCausalLM(LlamaConfig.Preset "llama-tiny")
            use fresh = Kif.session (KifOptions.FullFineTuning()) model
            Expect.throwsT<InvalidOperationException> (fun () -> Kif.importanceByLayer fresh |> ignore) "no completed task: a clear error"
        }

        test "sortLayers: embeddings, numbered layers by index (encoder before decoder), then final norm, head, others" {
            Expect.equal (Kif.sortLayers [ "head"; "model.layers.10"; "final_norm"; "model.layers.2"; "embeddings"; "model.layers.2"; "other" ])
                [ "embeddings"; "model.layers.2"; "model.layers.10"; "final_norm"; "head"; "other" ] "LLaMA labels (numeric, not lexical; duplicates once)"
            Expect.equal (Kif.sortLayers [ "decoder.block.1"; "head"; "encoder.block.1"; "decoder.block.0"; "final_norm"; "encoder.block.0"; "embeddings" ])
                [ "embeddings"; "encoder.block.0"; "encoder.block.1"; "decoder.block.0"; "decoder.block.1"; "final_norm"; "head" ] "T5 labels"
            Expect.equal [ for l in [ "model.layers.3"; "encoder.block.1"; "decoder.block.0"; "embeddings"; "final_norm" ] -> Plots.layerTick l ]
                [ "L3"; "enc 1"; "dec 0"; "embeddings"; "final_norm" ] "short tick labels"
        }

        test "saveLayerImportance / loadLayerImportance round-trip; bad files are clear errors naming the file" {
            let li, _, _ = run.Value
            let dir = Directory.CreateTempSubdirectory("klf-layer-importance-").FullName
            try
                let path = Path.Combine(dir, "importance-per-layer.json")
                Kif.saveLayerImportance path li
                Expect.equal (Kif.loadLayerImportance path) li "the real data round-trips exactly"
                Kif.saveLayerImportance path handMade
                let back = Kif.loadLayerImportance path
                Expect.isTrue (Double.IsNaN (back.Scores[1][2])) "NaN is written as null and read back as NaN"
                Expect.equal (back.Scores[0]) (handMade.Scores[0]) "other values exact"
                Expect.isEmpty (Directory.GetFiles(dir, "*.tmp")) "no temporary files left"
                let missing = Path.Combine(dir, "missing.json")
                let e = Expect.throwsC (fun () -> Kif.loadLayerImportance missing |> ignore) id
                Expect.isTrue (e :? FileNotFoundException && e.Message.Contains missing) $"missing file named: {e.Message}"
                let bad (name: string) (text: string) (mentions: string) =
                    let p = Path.Combine(dir, name)
                    File.WriteAllText(p, text)
                    let e = Expect.throwsC (fun () -> Kif.loadLayerImportance p |> ignore) id
                    Expect.isTrue (e :? InvalidDataException) $"{name}: InvalidDataException, got {e.GetType().Name}"
                    Expect.stringContains e.Message p $"{name}: the message names the file"
                    Expect.stringContains e.Message mentions $"{name}: the message says what is wrong"
                bad "broken.json" "{ \"layers\": [" "not valid JSON"
                bad "format.json" """{ "format": "other", "layers": [], "tasks": [], "scores": [], "accumulated": [] }""" "format"
                bad "shape.json" """{ "format": "klf-layer-importance/1", "layers": ["a", "b"], "tasks": ["t"], "scores": [[0.5]], "accumulated": [0.1, 0.2] }""" "scores row 0 has 1 values for 2 layers"
                bad "missing-field.json" """{ "format": "klf-layer-importance/1", "layers": ["a"], "tasks": [], "scores": [] }""" "missing \"accumulated\""
            finally
                Directory.Delete(dir, true)
        }

        test "report.md plots and tabulates importance per layer for each KIF strategy and links the PNG" {
            let li, _, _ = run.Value
            let m = Metrics.ofRows [| [| 60.0; nan |]; [| 55.0; 70.0 |] |]
            let results : Markdown.StrategyResult list = [ { Name = "kif"; Matrix = m; Summary = Metrics.summary None m } ]
            let dir = Directory.CreateTempSubdirectory("klf-report-importance-").FullName
            try
                let written = Markdown.write dir [ "seed", "1" ] tasks [] results [ "kif", li ] []
                let png = Path.Combine(dir, "importance-per-layer-kif.png")
                Expect.contains written png "the importance plot is among the files written"
                isPng png
                let md = File.ReadAllText(Path.Combine(dir, "report.md"))
                Expect.stringContains md "## Importance per layer (KIF)" "section"
                Expect.stringContains md "![kif: importance per layer](importance-per-layer-kif.png)" "links the PNG"
                Expect.stringContains md "| layer | Ŝ agnews | Ŝ dbpedia | Â |" "table header"
                Expect.isFalse (md.Contains "Not available") "no 'not available' sentence when data is given"
                let table = Markdown.importanceTable handMade
                Expect.stringContains table "| embeddings | 0.10 | 0.00 | 0.05 |" "two decimals"
                Expect.stringContains table "| head | 1.00 |  | 0.88 |" "NaN blank"
                Expect.stringContains (Markdown.render [] tasks [] results [] []) "Not available" "the sentence stays when there is no data"
            finally
                Directory.Delete(dir, true)
        }
    ]
