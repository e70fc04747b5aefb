namespace Klf.Pipelines

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Klf.Models.Llama

/// The Python side of `klf bench`'s PyTorch comparisons: the first Python that imports torch, and
/// the bench scripts (beside the klf program) run by it, each printing its figures as one JSON line
/// last. A missing Python or a failing script is a message ("skipped: …"), never an exception, so a
/// machine without PyTorch still gets Klf's figures.
[<RequireQualifiedAccess>]
module PythonTorch =
    /// The Pythons tried in order: $KLF_PYTHON, python3 on the PATH, Debian's /usr/bin/python3.
    let candidates () : string list =
        [ match Environment.GetEnvironmentVariable "KLF_PYTHON" with null | "" -> () | p -> yield p
          yield "python3"
          yield "/usr/bin/python3" ]
        |> List.distinct

    let private exec (exe: string) (args: string list) (timeoutMs: int) : (int * string * string) option =
        try
            let psi = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            for a in args do psi.ArgumentList.Add a
            use p = Process.Start psi
            let out, err = p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync()
            if not (p.WaitForExit timeoutMs) then
                p.Kill true
                Some(-1, out.Result, "timed out")
            else
                p.WaitForExit()
                Some(p.ExitCode, out.Result, err.Result)
        with _ -> None

    // Importing torch takes seconds and one bench asks up to three times; the answer does not change within a run.
    let private found =
        lazy
            (candidates ()
             |> List.tryPick (fun py ->
                 match exec py [ "-c"; "import torch; print(torch.__version__)" ] 120000 with
                 | Some(0, out, _) -> Some(py, out.Trim())
                 | _ -> None))

    /// The first candidate that imports torch, with its torch version (looked up once per process).
    let findPython () : (string * string) option = found.Force()

    /// The command-line arguments that give a bench script `config`'s shape (the flags every script takes).
    let configArgs (config: LlamaConfig) : string list =
        [ "--hidden"; string config.HiddenSize; "--layers"; string config.NumHiddenLayers
          "--heads"; string config.NumAttentionHeads; "--kv-heads"; string config.NumKeyValueHeads
          "--head-dim"; string config.HeadDim; "--intermediate"; string config.IntermediateSize; "--vocab"; string config.VocabSize ]
        @ (if config.TieWordEmbeddings then [ "--tied" ] else [])

    /// Runs `script` with `args` (within `timeoutMs`) under the Python `findPython` gives: that Python
    /// and the JSON of the script's last stdout line, or the reason it did not run, starting "skipped:".
    let run (script: string) (args: string list) (timeoutMs: int) : Result<string * JsonNode, string> =
        let name = Path.GetFileName script
        if not (File.Exists script) then Error $"skipped: {script} not found"
        else
        match findPython () with
        | None ->
            let tried = String.Join(", ", candidates ())
            Error $"skipped: no Python with torch ({tried}); Debian's python3-torch provides one (scripts/ensure-tools.sh pytorch), or set KLF_PYTHON"
        | Some(python, _) ->
            match exec python (script :: args) timeoutMs with
            | Some(0, out, _) ->
                let last = out.Trim().Split('\n') |> Array.last
                try Ok(python, JsonNode.Parse last)
                with _ -> Error $"skipped: {python} {name} printed no JSON last ({last})"
            | Some(code, _, err) -> Error $"skipped: {python} {name} failed ({code}): {err.Trim()}"
            | None -> Error $"skipped: {python} could not be started"
