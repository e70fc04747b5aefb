/// The klf command's terminal output, run as a user runs it: on a terminal (a pseudo-terminal made
/// by util-linux's `script`), Spectre.Console progress bars and tables, the cursor restored even when
/// the run fails; plain lines and text tables when output is piped or plain output is asked for.
module TerminalTests

open System
open System.Diagnostics
open System.IO
open Expecto

let private esc = "\u001b["

/// Single-quoted for the shell `script -c` runs the command with.
let private quote (s: string) = "'" + s.Replace("'", "'\\''") + "'"

/// Runs klf.dll with `args` in a child, under a pseudo-terminal when `pty`, else with stdout piped.
/// The child inherits none of CI, NO_COLOR and KLF_PLAIN, has TERM=xterm-256color, then `env`.
/// Returns the exit code and everything it printed.
let private klfIn (pty: bool) (env: (string * string) list) (args: string list) =
    let command = "dotnet" :: CliTests.klfDll.Value :: args
    let psi =
        if pty then
            let p = ProcessStartInfo("script")
            for a in [ "-qfec"; String.Join(" ", command |> List.map quote); "/dev/null" ] do p.ArgumentList.Add a
            p
        else
            let p = ProcessStartInfo(command.Head)
            for a in command.Tail do p.ArgumentList.Add a
            p
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.RedirectStandardInput <- true
    psi.UseShellExecute <- false
    for v in [ "CI"; "NO_COLOR"; "KLF_PLAIN"; "LD_LIBRARY_PATH" ] do psi.Environment.Remove v |> ignore
    psi.Environment["TERM"] <- "xterm-256color"
    for k, v in env do psi.Environment[k] <- v
    use p = Process.Start psi
    p.StandardInput.Close()
    let out, err = p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 300000) then
        p.Kill true
        failtestf "klf %A timed out" args
    p.WaitForExit()
    p.ExitCode, out.Result + err.Result

/// A tiny run of the embedded default's model on `tasks` (`steps` steps each) into a fresh folder.
let private tinyRun (tasks: string) (steps: int) (extra: string list) =
    let dir = TokenizerTests.tempDir "klf-terminal-"
    [ "run"; "--tasks"; tasks; "--steps"; string steps; "--train-examples"; "4"; "--test-examples"; "2"; "--validation-examples"; "0"
      "--no-fwt"; "--out"; Path.Combine(dir, "run") ] @ extra

/// A one-task, one-step SeqFT run.
let private seqftRun () = tinyRun "dbpedia" 1 [ "--strategies"; "seqft" ]

/// What .NET itself writes to a terminal (keypad application mode on and off), not klf's output.
let private withoutRuntimeModes (text: string) =
    text.Replace(esc + "?1h=", "").Replace(esc + "?1l>", "")

let private cursorRestored (text: string) =
    let hide, show = text.LastIndexOf(esc + "?25l"), text.LastIndexOf(esc + "?25h")
    hide >= 0 && show > hide

let private plainRunLines (what: string) (text: string) =
    Expect.isFalse ((withoutRuntimeModes text).Contains esc) $"{what}: no control codes\n{text}"
    Expect.stringContains text "seqft seed 1: start, 1 steps" $"{what}: a plain progress line"
    Expect.stringContains text "seqft seed 1: done, 1/1 steps in " $"{what}: the run's done line"
    Expect.isTrue (text.Split('\n') |> Array.exists (fun l -> l.StartsWith "strategy " && l.Contains "AP" && l.Contains "BWT")) $"{what}: the text metric table"

[<Tests>]
let tests =
    testSequenced <| testList "terminal" [
        test "on a terminal: Spectre progress bars and tables (also with NO_COLOR, CI=false), colour unless NO_COLOR, the cursor back at the end" {
            let code, text = klfIn true [] (seqftRun ())
            Expect.equal code 0 text
            Expect.stringContains text (esc + "?25l") "the progress display hides the cursor"
            Expect.isTrue (cursorRestored text) "and shows it again"
            Expect.stringContains text "╭" "rounded Spectre tables"
            Expect.stringContains text (esc + "38;5;") "coloured bars"
            Expect.isFalse (text.Contains "seqft seed 1: start, 1 steps") "no plain progress lines"
            let code, text = klfIn true [ "NO_COLOR", "1"; "CI", "false" ] (seqftRun ())
            Expect.equal code 0 text
            Expect.stringContains text "╭" "NO_COLOR and CI=false keep the display"
            Expect.isFalse (text.Contains(esc + "38;5;")) "NO_COLOR removes colour"
        }

        test "plain lines and text tables when output is piped, or on a terminal when CI, TERM=dumb or KLF_PLAIN=1 asks" {
            let code, text = klfIn false [] (seqftRun ())
            Expect.equal code 0 text
            plainRunLines "piped" text
            for env in [ [ "CI", "true" ]; [ "TERM", "dumb" ]; [ "KLF_PLAIN", "1" ] ] do
                let code, text = klfIn true env (seqftRun ())
                Expect.equal code 0 $"%A{env}\n{text}"
                plainRunLines $"%A{env}" text
        }

        test "a run that fails under the progress display: one klf: error line, exit 1, no stack trace, the cursor restored" {
            // lr 1e30 makes the weights, and so the importance scores, non-finite before task 2 ends.
            let failing = tinyRun "dbpedia,amazon" 2 [ "--strategies"; "kif"; "--lr"; "1e30" ]
            let code, text = klfIn true [] failing
            Expect.equal code 1 $"exit code 1\n{text}"
            Expect.stringContains text "klf: error:" "one clear error line"
            Expect.isFalse (text.Contains "   at ") "no stack trace"
            Expect.isTrue (cursorRestored text) "the cursor is shown again after the display closed"
            Expect.stringContains text "kif seed 1" "the bars as they were at the failure"
            let code, text = klfIn false [] failing
            Expect.equal code 1 $"piped: exit code 1\n{text}"
            Expect.stringContains text "klf: error:" "piped: the error line"
            Expect.isFalse (text.Contains esc) "piped: no control codes"
            Expect.isFalse (text.Contains "   at ") "piped: no stack trace"
        }
    ]
