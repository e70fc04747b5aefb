/// Results and progress as plain text (the library's TextTable and Progress): what redirected logs
/// hold, the 10 % throttle, a fixed clock, and the experiment callbacks that drive a display.
module TextOutputTests

open System
open System.IO
open Expecto
open Klf.Pipelines

let private nl = Environment.NewLine
let private lines (xs: string list) = String.Join(nl, xs) + nl

[<Tests>]
let tests =
    testList "text output" [
        test "text tables: aligned text, blank where not measured, one decimal, FWT '-'" {
            Expect.equal (TextTable.matrix "kif: accuracy matrix" [ "dbpedia"; "amazon"; "yahoo" ]
                            [| [| 90.0; nan; nan |]; [| 40.0; 80.0; nan |]; [| 20.5; 30.26; 70.0 |] |])
                (lines [ "kif: accuracy matrix"
                         "after \\ task  dbpedia  amazon  yahoo"
                         "dbpedia          90.0"
                         "amazon           40.0    80.0"
                         "yahoo            20.5    30.3   70.0" ]) "matrix"
            Expect.equal (TextTable.metrics [ "seqft", 40.26, 59.76, None, -59.64
                                              "kif-replay", 80.0, 3.04, Some 1.26, nan ])
                (lines [ "strategy      AP  F.Ra  FWT    BWT"
                         "seqft       40.3  59.8    -  -59.6"
                         "kif-replay  80.0   3.0  1.3" ]) "metrics (NaN BWT blank)"
            Expect.equal (TextTable.render [ "strategy"; "AP"; "BWT" ] [ [ "seqft"; "40.3 ± 1.2"; "-59.6 ± 0.8" ]; [ "kif"; "82.0 ± 0.4" ] ])
                (lines [ "strategy          AP          BWT"
                         "seqft     40.3 ± 1.2  -59.6 ± 0.8"
                         "kif       82.0 ± 0.4" ]) "mean ± std text; a short row leaves blanks"
            Expect.throwsT<ArgumentException> (fun () -> TextTable.render [ "a" ] [ [ "1"; "2" ] ] |> ignore) "a row wider than the header"
            Expect.throwsT<ArgumentException> (fun () -> TextTable.matrix "t" [ "a" ] [| [| 1.0 |]; [| 1.0 |] |] |> ignore) "more rows than tasks"
        }

        test "plain progress: one line each for start, describe, done and log; advance at most one line per 10 %" {
            use sw = new StringWriter()
            let p = Progress.plain sw
            p.Log "single-task runs"
            let t = p.Start("kif seed 1", 1000)
            for _ in 1 .. 500 do t.Advance 1
            t.Describe "kif seed 1 · task 2/2 agnews"
            for _ in 1 .. 500 do t.Advance 1
            t.Done()
            t.Advance 5
            t.Done()
            let out = sw.ToString()
            let ls = out.Split(nl, StringSplitOptions.RemoveEmptyEntries)
            Expect.equal ls.Length (1 + 1 + 9 + 1 + 1) $"log, start, 9 progress lines (10 %% … 90 %%), describe, done:{nl}{out}"
            Expect.equal ls[0] "single-task runs" "log line as given"
            Expect.equal ls[1] "kif seed 1: start, 1000 steps" "start line"
            Expect.stringStarts ls[2] "kif seed 1: 100/1000 (10%), " "first progress line at 10 %"
            Expect.equal ls[7] "kif seed 1 · task 2/2 agnews: 500/1000 (50%)" "describe line, after the 50 % line"
            Expect.stringStarts ls[11] "kif seed 1 · task 2/2 agnews: 900/1000 (90%), " "last progress line at 90 %"
            Expect.stringStarts ls[12] "kif seed 1 · task 2/2 agnews: done, 1000/1000 steps in " "done line once, nothing after it"
        }

        test "plain progress lines with a fixed clock: elapsed and remaining time; big jumps print one line" {
            use sw = new StringWriter()
            let mutable now = TimeSpan.Zero
            let p = Progress.plainWith sw (fun () -> now)
            let t = p.Start("seqft seed 2", 40)
            now <- TimeSpan.FromSeconds 30.0
            t.Advance 10
            now <- TimeSpan.FromSeconds 95.0
            t.Advance 25
            now <- TimeSpan.FromMinutes 75.0
            t.Advance 5
            t.Done()
            Expect.equal (sw.ToString())
                (lines [ "seqft seed 2: start, 40 steps"
                         "seqft seed 2: 10/40 (25%), 0:30 elapsed, ~1:30 left"
                         "seqft seed 2: 35/40 (87%), 1:35 elapsed, ~0:13 left"
                         "seqft seed 2: done, 40/40 steps in 1:15:00" ]) "lines"
            use sw0 = new StringWriter()
            let z = (Progress.plainWith sw0 (fun () -> TimeSpan.Zero)).Start("empty", 0)
            z.Advance 3
            z.Done()
            Expect.equal (sw0.ToString()) (lines [ "empty: start, 0 steps"; "empty: done, 3/0 steps in 0:00" ]) "a zero total prints no progress lines"
        }

        test "Progress.control: runs are labelled, steps advance their line, rows and results are logged" {
            use sw = new StringWriter()
            let control = Progress.control (Progress.plainWith sw (fun () -> TimeSpan.Zero)) [ "standard-order1", [ "dbpedia"; "amazon" ] ]
            let kif : RunSpec = { Sequence = "standard-order1"; Seed = 1; Kind = StrategyRun "kif"; Id = "runs/x/kif" }
            let single = { kif with Kind = SingleTask 1; Id = "runs/x/single" }
            control.OnRunStart kif [ "dbpedia"; "amazon" ] 4
            for _ in 1 .. 4 do control.OnStep kif
            control.OnTask kif 0 "dbpedia" [| 80.0 |]
            control.OnTask kif 1 "amazon" [| 60.0; 90.0 |]
            let result rows : RunResult = { Sequence = "standard-order1"; Seed = 1; Kind = kif.Kind; Rows = rows; Tasks = [ "dbpedia"; "amazon" ]; Facts = [] }
            control.OnRunDone kif (result [| [| 80.0; nan |]; [| 60.0; 90.0 |] |]) false
            control.OnResume single 1
            control.OnRunDone single { result [| [| 42.0 |] |] with Kind = single.Kind } true
            let ls = sw.ToString().Split(nl, StringSplitOptions.RemoveEmptyEntries) |> List.ofArray
            Expect.equal ls
                [ "kif seed 1: start, 4 steps"
                  "kif seed 1: 1/4 (25%), 0:00 elapsed, ~0:00 left"
                  "kif seed 1: 2/4 (50%), 0:00 elapsed, ~0:00 left"
                  "kif seed 1: 3/4 (75%), 0:00 elapsed, ~0:00 left"
                  "kif seed 1: after dbpedia      80.0"
                  "kif seed 1: after amazon       60.0  90.0"
                  "kif seed 1: done, 4/4 steps in 0:00"
                  "kif seed 1: AP 75.0  F.Ra 20.0  BWT -20.0"
                  "single-task 2 (amazon) seed 1: resuming after task 1"
                  "single-task 2 (amazon) seed 1: already finished" ] "lines"
        }
    ]
