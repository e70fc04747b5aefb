/// Experiments: shards partition the runs; aggregation over seeds is the hand-computed mean and
/// sample standard deviation; the metrics.json contract holds its fields.
module ExperimentLaws

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Klf.Pipelines

let private config = PropertyConfig.config 300

let private spec strategies seeds fwt =
    { ExperimentSpec.defaults with Strategies = strategies |> List.map StrategySpec.named; Seeds = seeds; SingleTask = fwt }

let private rowsOf (xs: float list list) = xs |> List.map Array.ofList |> Array.ofList

[<Tests>]
let tests =
    testList "experiment laws" [
        testPropertyWithConfig config "the n shards of an experiment are disjoint, cover every run, and differ in size by at most one" <| fun (PositiveInt nStrategies) (PositiveInt nSeeds) (PositiveInt tasks) (PositiveInt n) (fwt: bool) ->
            let strategies = List.init (min nStrategies 6) (fun i -> let names = Strategy.names () in names[i % names.Length] + string i)
            let seeds = List.init (min nSeeds 5) id
            let sequences = [ "a/o1", List.init (min tasks 6) (sprintf "t%d"); "b/o2", [ "x"; "y" ] ]
            let runs = Experiment.runs sequences (spec strategies seeds fwt)
            let n = min n 12
            let shards = [ for i in 1 .. n -> Experiment.shard (i, n) runs ]
            let ids = shards |> List.concat |> List.map (fun r -> r.Id)
            let sizes = shards |> List.map List.length
            List.sort ids = List.sort (runs |> List.map (fun r -> r.Id))
            && List.distinct ids = ids
            && (List.max sizes - List.min sizes <= 1)
            && runs.Length = (sequences |> List.sumBy (fun (_, ts) -> seeds.Length * (strategies.Length + (if fwt then ts.Length else 0))))

        test "run ids name sequence, seed and strategy or single task, and are unique" {
            let runs = Experiment.runs [ "standard/order1", [ "dbpedia"; "amazon" ] ] (spec [ "seqft"; "kif" ] [ 1; 2 ] true)
            let ids = runs |> List.map (fun r -> r.Id.Replace('\\', '/'))
            Expect.equal ids
                [ "runs/standard-order1/seed-1/single-01-dbpedia"; "runs/standard-order1/seed-1/single-02-amazon"
                  "runs/standard-order1/seed-1/seqft"; "runs/standard-order1/seed-1/kif"
                  "runs/standard-order1/seed-2/single-01-dbpedia"; "runs/standard-order1/seed-2/single-02-amazon"
                  "runs/standard-order1/seed-2/seqft"; "runs/standard-order1/seed-2/kif" ] "ids in order"
        }

        test "the zero-shot run comes first in each seed; metrics.json holds its scores, averaged over seeds" {
            let runs = Experiment.runs [ "s/o", [ "a"; "b" ] ] { spec [ "seqft" ] [ 1; 2 ] false with ZeroShot = true }
            Expect.equal [ for r in runs -> r.Id.Replace('\\', '/') ]
                [ "runs/s-o/seed-1/zero-shot"; "runs/s-o/seed-1/seqft"; "runs/s-o/seed-2/zero-shot"; "runs/s-o/seed-2/seqft" ] "ids in order"
            let result seed kind rows = { Sequence = "s"; Seed = seed; Kind = kind; Rows = rowsOf rows; Tasks = [ "a"; "b" ]; Facts = [] }
            let results =
                [ result 1 ZeroShot [ [ 40.; 60. ] ]; result 1 (StrategyRun "seqft") [ [ 80.; nan ]; [ 60.; 90. ] ]
                  result 2 ZeroShot [ [ 50.; 70. ] ]; result 2 (StrategyRun "seqft") [ [ 70.; nan ]; [ 70.; 70. ] ] ]
            let seeds = Results.bySeed results
            Expect.equal (seeds.Head.ZeroShot) (Some [| 40.; 60. |]) "seed 1's zero-shot row"
            let json = Results.metricsJson seeds
            Expect.equal [ for x in json["zero-shot"].AsArray() -> x.GetValue<float>() ] [ 45.; 65. ] "means over seeds"
            Expect.equal [ for x in json["per-seed"].["2"].["zero-shot"].AsArray() -> x.GetValue<float>() ] [ 50.; 70. ] "each seed's own"
            Expect.isNull json["single-task"] "no single-task runs: no single-task scores"
            let without = Results.metricsJson (Results.bySeed (results |> List.filter (fun r -> r.Kind <> ZeroShot)))
            Expect.isNull without["zero-shot"] "no zero-shot run: no zero-shot scores"
        }

        test "shard text: i/n with 1 <= i <= n, anything else is a clear error" {
            Expect.equal (Experiment.parseShard "2/8") (2, 8) "2/8"
            Expect.equal (Experiment.parseShard "1/1") (1, 1) "1/1"
            for bad in [ "0/4"; "5/4"; "2"; "a/b"; "1/0"; "" ] do
                let e = Expect.throwsC (fun () -> Experiment.parseShard bad |> ignore) id
                Expect.stringContains e.Message "i/n" $"{bad}: says the form"
        }

        test "aggregation over seeds: means and sample standard deviations of AP, F.Ra, FWT, BWT by hand" {
            let tasks = [ "a"; "b" ]
            let facts = [ { Name = "a"; Metric = "exact-match"; Labels = Some 4 }; { Name = "b"; Metric = "exact-match"; Labels = Some 2 } ]
            let result seed kind rows =
                { Sequence = "s"; Seed = seed; Kind = kind; Rows = rowsOf rows
                  Tasks = (match kind with SingleTask j -> [ tasks[j] ] | _ -> tasks)
                  Facts = (match kind with SingleTask j -> [ facts[j] ] | _ -> facts) }
            // seed 1: kif [[80, NaN], [60, 90]] → AP 75, BWT −20, F.Ra 20; single 70, 80 → FWT ((80−70)+(90−80))/2 = 10
            // seed 2: kif [[70, NaN], [70, 70]] → AP 70, BWT 0, F.Ra 0; single 60, 90 → FWT ((70−60)+(70−90))/2 = −5
            let results =
                [ result 1 (StrategyRun "kif") [ [ 80.; nan ]; [ 60.; 90. ] ]
                  result 1 (SingleTask 0) [ [ 70. ] ]
                  result 1 (SingleTask 1) [ [ 80. ] ]
                  result 2 (StrategyRun "kif") [ [ 70.; nan ]; [ 70.; 70. ] ]
                  result 2 (SingleTask 0) [ [ 60. ] ]
                  result 2 (SingleTask 1) [ [ 90. ] ] ]
            let seeds = Results.bySeed results
            Expect.equal (seeds |> List.map (fun s -> s.Seed)) [ 1; 2 ] "two seeds"
            match Results.aggregate seeds with
            | [ "s", _, [ a ] ] ->
                let close (x: float) y msg = Expect.floatClose Accuracy.veryHigh x y msg
                close a.AP.Mean 72.5 "AP mean"
                close a.AP.Std (sqrt 12.5) "AP std: sqrt(((75−72.5)² + (70−72.5)²)/1)"
                close a.BWT.Mean -10.0 "BWT mean"
                close a.BWT.Std (sqrt 200.0) "BWT std"
                close a.FRa.Mean 10.0 "F.Ra mean"
                close a.FWT.Value.Mean 2.5 "FWT mean"
                close a.FWT.Value.Std (sqrt 112.5) "FWT std"
                close a.MeanMatrix[1, 0] 65.0 "mean matrix entry"
                Expect.isTrue (Double.IsNaN a.MeanMatrix[0, 1]) "above the diagonal stays unmeasured"
            | other -> failtestf "unexpected aggregate %A" other
            let json = Results.metricsJson seeds
            Expect.equal (json["seed"].GetValue<int>()) 1 "seed = first seed"
            Expect.equal [ for s in json["seeds"].AsArray() -> s.GetValue<int>() ] [ 1; 2 ] "seeds"
            let kif = json["strategies"]["kif"]
            Expect.floatClose Accuracy.veryHigh (kif["AP"].GetValue<float>()) 72.5 "AP in the contract is the mean"
            let std = kif["std"]
            Expect.floatClose Accuracy.veryHigh (std["AP"].GetValue<float>()) (sqrt 12.5) "std beside it"
            Expect.isNotNull (json["per-seed"]["2"]) "per-seed contract objects"
            Expect.floatClose Accuracy.veryHigh (json["chance"].GetValue<float>()) 37.5 "stream chance: mean of 25 and 50"
            Expect.equal [ for f in json["task-facts"].AsArray() -> f["task"].GetValue<string>(), f["labels"].GetValue<int>(), f["chance"].GetValue<float>() ] [ "a", 4, 25.0; "b", 2, 50.0 ] "task facts"
            let one = Results.metricsJson [ seeds.Head ]
            Expect.equal ([ for KeyValue(k, _) in one -> k ]) [ "tasks"; "seed"; "task-facts"; "chance"; "single-task"; "strategies" ] "one seed: the contract's keys, with the task facts and the single-task scores"
            Expect.equal [ for x in one["single-task"].AsArray() -> x.GetValue<float>() ] (List.ofArray seeds.Head.Single.Value) "single-task scores in task order"
            Expect.isNull one["zero-shot"] "no zero-shot run: no zero-shot scores"
            let unknown = Results.metricsJson (Results.bySeed (results |> List.map (fun r -> { r with Facts = [] })))
            Expect.isNull (unknown["task-facts"]) "no facts recorded: none written"
            let kifOne = (one["strategies"]["kif"]).AsObject()
            Expect.equal ([ for KeyValue(k, _) in kifOne -> k ]) [ "matrix"; "AP"; "FRa"; "FWT"; "BWT" ] "strategy keys"
            let matrix = (one["strategies"]).["kif"].["matrix"]
            Expect.isNull (matrix[0][1]) "NaN is written as null"
        }

        test "FWT is left out (null) when a single-task run is missing" {
            let r = { Sequence = "s"; Seed = 1; Kind = StrategyRun "seqft"; Rows = rowsOf [ [ 50.; nan ]; [ 40.; 60. ] ]; Tasks = [ "a"; "b" ]; Facts = [] }
            let single = { Sequence = "s"; Seed = 1; Kind = SingleTask 0; Rows = rowsOf [ [ 55. ] ]; Tasks = [ "a" ]; Facts = [] }
            let seeds = Results.bySeed [ r; single ]
            Expect.isNone seeds.Head.Single "one of two single-task scores"
            let strategies = (Results.metricsJson seeds).["strategies"]
            Expect.isNull (strategies.["seqft"].["FWT"]) "FWT null"
        }
    ]

/// Generation cuts prompts exactly as training does.
[<Tests>]
let promptLaws =
    testList "prompt truncation" [
        testPropertyWithConfig config "a decoder-only prompt cut for generation is the prompt part of the training sequence when the answer and EOS take maxNewTokens" <| fun (prompt: PositiveInt[]) (PositiveInt answerLen) (PositiveInt extra) (middle: bool) ->
            let mode = if middle then Klf.Training.PromptTruncation.DropMiddle else Klf.Training.PromptTruncation.DropStart
            let ids = prompt |> Array.map (fun (PositiveInt x) -> x)
            let answer = Array.init (min answerLen 20) (fun i -> 1000 + i)
            let maxNewTokens = answer.Length + 1
            let maxLength = maxNewTokens + (extra % 64)
            let struct (fromTraining, labels) = Klf.Training.Batching.DecoderOnlySequence(Klf.Training.LmExample(ids, answer), 2, maxLength, mode)
            let promptLength = labels |> Array.takeWhile (fun l -> l = -100) |> Array.length
            let promptPart = Array.sub fromTraining 0 promptLength
            Prompt.truncate Klf.Models.ModelFamily.DecoderOnly mode maxLength maxNewTokens ids = promptPart

        testPropertyWithConfig config "an encoder-decoder input cut for generation is the training encoder input" <| fun (prompt: PositiveInt[]) (PositiveInt maxLength) (middle: bool) ->
            let mode = if middle then Klf.Training.PromptTruncation.DropMiddle else Klf.Training.PromptTruncation.DropStart
            let ids = prompt |> Array.map (fun (PositiveInt x) -> x)
            let maxLength = 1 + maxLength % 64
            let struct (input, _) = Klf.Training.Batching.EncoderDecoderPair(Klf.Training.LmExample(ids, [| 5 |]), 2, maxLength, 8, mode)
            Prompt.truncate Klf.Models.ModelFamily.EncoderDecoder mode maxLength 3 (Array.append ids [| 2 |]) = input
    ]
