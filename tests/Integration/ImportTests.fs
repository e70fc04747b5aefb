/// `klf import olora`: O-LoRA's CL_Benchmark layout, hand-made, into a benchmark folder Klf reads.
module ImportTests

open System
open System.IO
open Expecto
open Klf.Pipelines

let private write (root: string) (relative: string) (text: string) =
    let f = Path.Combine(root, relative)
    Directory.CreateDirectory(Path.GetDirectoryName f) |> ignore
    File.WriteAllText(f, text)
    f

/// A small O-LoRA checkout: configs/instruction_config.json and CL_Benchmark/{TC/agnews, SC/yelp}.
let private layout (root: string) =
    write root "configs/instruction_config.json" """{ "TC": [ { "instruction": "What is the topic of the following paragraph? Choose one from the option.\n" } ],
                                                       "SC": [ { "instruction": "What is the sentiment of the following paragraph? Choose one from the option.\n" }, { "instruction": "unused" } ] }""" |> ignore
    write root "CL_Benchmark/TC/agnews/labels.json" """["World", "Sports", "Business", "Science or Technology"]""" |> ignore
    write root "CL_Benchmark/TC/agnews/train.json" """[{"sentence": "Title: Cup final\nText: A late goal.", "label": "Sports"}, {"sentence": "Stocks rose.", "label": "Business"}]""" |> ignore
    write root "CL_Benchmark/TC/agnews/test.json" """[{"sentence": "Rain in Paris.", "label": "World"}]""" |> ignore
    write root "CL_Benchmark/SC/yelp/labels.json" """["negative", "positive"]""" |> ignore
    write root "CL_Benchmark/SC/yelp/train.json" """[{"sentence": "Great food.", "label": "positive"}]""" |> ignore
    write root "CL_Benchmark/SC/yelp/dev.json" """[{"sentence": "Cold soup.", "label": "negative"}]""" |> ignore
    write root "CL_Benchmark/SC/yelp/test.json" """[{"sentence": "Slow service.", "label": "negative"}]""" |> ignore
    Path.Combine(root, "CL_Benchmark")

[<Tests>]
let tests =
    testList "import" [
        test "klf import olora writes {train,dev,test}/<dataset>.json with O-LoRA's prompts, and Klf reads the folder" {
            let dir = Directory.CreateTempSubdirectory("klf-import-").FullName
            try
                let src = layout dir
                let out = Path.Combine(dir, "imported")
                let code, text = CliTests.klfWithin 120000 [ "import"; "olora"; src; "--out"; out ]
                Expect.equal code 0 text
                Expect.stringContains text "agnews" "lists the tasks"
                let agnews = Task.load out "agnews"
                Expect.equal agnews.Train[0].Input
                    "What is the topic of the following paragraph? Choose one from the option.\nOption: World, Sports, Business, Science or Technology \nTitle: Cup final\nText: A late goal.\nAnswer:"
                    "instruction, options, sentence, Answer: as O-LoRA builds them"
                Expect.equal (agnews.Train |> Array.map (fun e -> e.Id, e.Output)) [| "agnews_0", "Sports"; "agnews_1", "Business" |] "ids and labels"
                Expect.equal agnews.Metric "exact-match" "the metric is declared"
                let yelp = Task.load out "yelp"
                Expect.stringStarts yelp.Test[0].Input "What is the sentiment" "each category its first instruction"
                Expect.equal (Benchmark.load out "dev" "yelp").Length 1 "dev kept"
                Expect.isFalse (File.Exists(Path.Combine(out, "dev", "agnews.json"))) "no dev file where the source has none"
                let code, text = CliTests.klfWithin 120000 [ "import"; "olora"; src; "--out"; Path.Combine(dir, "named"); "--add-task-name"; "true"; "--add-dataset-name"; "true" ]
                Expect.equal code 0 text
                Expect.stringStarts (Task.load (Path.Combine(dir, "named")) "yelp").Train[0].Input "Task:SC\nDataset:yelp\nWhat is" "O-LoRA's optional prefixes"
                let code, text = CliTests.klfWithin 120000 [ "import"; "olora"; src; "--out"; out ]
                Expect.equal code 1 text
                Expect.stringContains text "exists already" "an existing folder is not overwritten"
            finally
                Directory.Delete(dir, true)
        }

        test "klf import olora: each malformed file gets one clear error naming it, and nothing is written" {
            for relative, body, says in
                [ "CL_Benchmark/TC/agnews/train.json", """[{"sentence": "x"}]""", "element 0: missing \"label\""
                  "CL_Benchmark/TC/agnews/train.json", """[{"sentence": "x", "label": "Weather"}]""", "label \"Weather\" is not in the dataset's labels.json"
                  "CL_Benchmark/TC/agnews/test.json", """{"sentence": "x"}""", "expected a JSON array"
                  "CL_Benchmark/SC/yelp/labels.json", """["negative", 3]""", "element 1 is not a label string"
                  "CL_Benchmark/SC/yelp/dev.json", """[{"sentence": "x", "label": "negative"},""", "not valid JSON"
                  "configs/instruction_config.json", """{"TC": []}""", "must be a non-empty array" ] do
                let dir = Directory.CreateTempSubdirectory("klf-import-bad-").FullName
                try
                    let src = layout dir
                    let file = write dir relative body
                    let out = Path.Combine(dir, "imported")
                    let code, text = CliTests.klfWithin 120000 [ "import"; "olora"; src; "--out"; out ]
                    Expect.equal code 1 $"{relative}: exit 1\n{text}"
                    Expect.stringContains text "klf: error:" $"{relative}: one error line"
                    Expect.stringContains text file $"{relative}: names the file"
                    Expect.stringContains text says $"{relative}: says what is wrong"
                    Expect.isFalse (Directory.Exists out) $"{relative}: nothing written"
                finally
                    Directory.Delete(dir, true)
        }
    ]
