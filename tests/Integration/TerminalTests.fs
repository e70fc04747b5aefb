/// The klf command's terminal output: plain tables and progress lines (what redirected logs hold),
/// the 10 % throttle, exceptions through withProgress, and when output counts as interactive.
module TerminalTests

open System
open System.IO
open Expecto
open Spectre.Console
open Klf.Cli

let private nl = Environment.NewLine
let private lines (xs: string list) = String.Join(nl, xs) + nl

/// Runs `f` with Console.Out captured and plain output forced (KLF_PLAIN=1), returning its output.
let private capture (f: unit -> unit) =
    let out = Console.Out
    let plain = Environment.GetEnvironmentVariable "KLF_PLAIN"
    use sw = new StringWriter()
    Console.SetOut sw
    Environment.SetEnvironmentVariable("KLF_PLAIN", "1")
    try
        f ()
        sw.ToString()
    finally
        Console.SetOut out
        Environment.SetEnvironmentVariable("KLF_PLAIN", plain)

/// A Spectre console that believes it is an interactive ANSI terminal, writing into `sw`.
let private fakeTerminal (sw: StringWriter) =
    AnsiConsole.Create(AnsiConsoleSettings(Ansi = AnsiSupport.Yes, Interactive = InteractionSupport.Yes,
                                           ColorSystem = ColorSystemSupport.NoColors, Out = AnsiConsoleOutput(sw)))

let private env (vars: (string * string) list) = fun name -> vars |> List.tryFind (fst >> (=) name) |> Option.map snd |> Option.toObj

[<Tests>]
let tests =
    testSequenced <| testList "terminal" [
        test "plain tables: aligned text, blank where not measured, one decimal, FWT '-'" {
            let matrix =
                capture (fun () ->
                    Terminal.printMatrix "kif: accuracy matrix" [ "dbpedia"; "amazon"; "yahoo" ]
                        [| [| 90.0; nan; nan |]; [| 40.0; 80.0; nan |]; [| 20.5; 30.26; 70.0 |] |])
            Expect.equal matrix
                (lines [ "kif: accuracy matrix"
                         "after \\ task  dbpedia  amazon  yahoo"
                         "dbpedia          90.0"
                         "amazon           40.0    80.0"
                         "yahoo            20.5    30.3   70.0" ]) "matrix"
            let metrics =
                capture (fun () ->
                    Terminal.printMetrics [ "seqft", 40.26, 59.76, None, -59.64
                                            "kif-replay", 80.0, 3.04, Some 1.26, nan ])
            Expect.equal metrics
                (lines [ "strategy      AP  F.Ra  FWT    BWT"
                         "seqft       40.3  59.8    -  -59.6"
                         "kif-replay  80.0   3.0  1.3" ]) "metrics (NaN BWT blank)"
            let text =
                capture (fun () ->
                    Terminal.printMetricsText [ "strategy"; "AP"; "BWT" ]
                        [ [ "seqft"; "40.3 ± 1.2"; "-59.6 ± 0.8" ]; [ "kif"; "82.0 ± 0.4" ] ])
            Expect.equal text
                (lines [ "strategy          AP          BWT"
                         "seqft     40.3 ± 1.2  -59.6 ± 0.8"
                         "kif       82.0 ± 0.4" ]) "mean ± std text; a short row leaves blanks"
            Expect.throwsT<ArgumentException> (fun () -> Terminal.Plain.table [ "a" ] [ [ "1"; "2" ] ] |> ignore) "a row wider than the header"
            Expect.throwsT<ArgumentException> (fun () -> Terminal.Plain.matrix "t" [ "a" ] [| [| 1.0 |]; [| 1.0 |] |] |> ignore) "more rows than tasks"
        }

        test "plain progress: one line each for start, describe, done and log; advance at most one line per 10 %" {
            let out =
                capture (fun () ->
                    Terminal.withProgress (fun p ->
                        p.Log "single-task runs"
                        let t = p.Start("kif seed 1", 1000)
                        for i in 1 .. 500 do t.Advance 1
                        t.Describe "kif seed 1 · task 2/2 agnews"
                        for i in 1 .. 500 do t.Advance 1
                        t.Done()
                        t.Advance 5
                        t.Done()))
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
            let p = Terminal.Plain.progress sw (fun () -> now)
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
            let z = (Terminal.Plain.progress sw0 (fun () -> TimeSpan.Zero)).Start("empty", 0)
            z.Advance 3
            z.Done()
            Expect.equal (sw0.ToString()) (lines [ "empty: start, 0 steps"; "empty: done, 3/0 steps in 0:00" ]) "a zero total prints no progress lines"
        }

        test "withProgress: the body's exception propagates, plain and interactive; the display closes and the cursor comes back" {
            let out =
                capture (fun () ->
                    let e = Expect.throwsC (fun () -> Terminal.withProgress (fun p -> p.Start("a", 10).Advance 5; invalidOp "boom") |> ignore) id
                    Expect.equal e.Message "boom" "the body's own exception"
                    Expect.equal (Terminal.withProgress (fun p -> p.Start("b", 1).Done(); 42)) 42 "a later call works and returns the body's value")
            Expect.stringContains out "b: start, 1 steps" "the later call prints its own lines (no stale nested progress)"
            use sw = new StringWriter()
            let console = fakeTerminal sw
            let e =
                Expect.throwsC (fun () ->
                    Terminal.Interactive.withProgress console (fun p ->
                        let t = p.Start("kif seed 1 [x]", 10)
                        t.Advance 3
                        p.Log "log line [not markup]"
                        t.Describe "kif seed 1 · task 2/4 agnews"
                        raise (TimeoutException "boom")) |> ignore) id
            Expect.isTrue (e :? TimeoutException) "the body's exception type"
            let text = sw.ToString()
            Expect.stringContains text "log line [not markup]" "log line shown as text"
            let hide, show = text.LastIndexOf "\u001b[?25l", text.LastIndexOf "\u001b[?25h"
            Expect.isGreaterThan show hide "the cursor is shown again after the last hide"
            Expect.stringContains text "kif seed 1 · task 2/4 agnews" "the bars as they were at the failure"
            let r = Terminal.Interactive.withProgress console (fun p -> let t = p.Start("again", 2) in t.Advance 2; t.Done(); "ok")
            Expect.equal r "ok" "the console is free for the next progress display"
            Expect.stringContains (sw.ToString()) "again" "the second display rendered"
        }

        test "interactive is false when output is redirected or plain output is asked for" {
            let capable () = true
            Expect.isTrue (Terminal.interactiveWith (env []) false capable) "a capable terminal, nothing set"
            Expect.isFalse (Terminal.interactiveWith (env []) true capable) "redirected output"
            Expect.isFalse (Terminal.interactiveWith (env []) false (fun () -> false)) "a terminal Spectre finds not interactive"
            for vars in [ [ "CI", "true" ]; [ "TERM", "dumb" ]; [ "KLF_PLAIN", "1" ] ] do
                Expect.isFalse (Terminal.interactiveWith (env vars) false capable) $"%A{vars}"
            for vars in [ [ "CI", "false" ]; [ "CI", "0" ]; [ "NO_COLOR", "1" ]; [ "NO_COLOR", "" ]; [ "TERM", "xterm-256color" ]; [ "KLF_PLAIN", "0" ] ] do
                Expect.isTrue (Terminal.interactiveWith (env vars) false capable) $"%A{vars}"
            Expect.isFalse (Terminal.interactiveWith (env []) true (fun () -> failwith "not asked")) "capabilities are not probed for redirected output"
            if Console.IsOutputRedirected then Expect.isFalse (Terminal.interactive ()) "this process's stdout is redirected"
            // A child whose stdout is a pipe, with none of the plain-output variables set and a capable TERM.
            let psi = Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            psi.ArgumentList.Add(IO.Path.Combine(AppContext.BaseDirectory, "Klf.Tests.Integration.dll"))
            psi.ArgumentList.Add "--terminal-probe"
            for v in [ "CI"; "NO_COLOR"; "KLF_PLAIN" ] do psi.Environment.Remove v |> ignore
            psi.Environment["TERM"] <- "xterm-256color"
            use child = Diagnostics.Process.Start psi
            let out, err = child.StandardOutput.ReadToEndAsync(), child.StandardError.ReadToEndAsync()
            Expect.isTrue (child.WaitForExit 60000) "the probe finishes"
            Expect.equal (out.Result.Trim()) "INTERACTIVE=false" $"a redirected child is not interactive (stderr: {err.Result})"
        }
    ]
