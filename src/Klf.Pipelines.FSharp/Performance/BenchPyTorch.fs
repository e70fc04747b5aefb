namespace Klf.Pipelines

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Klf.Models.Llama

/// The training step of `BenchTraining.trainStep` in PyTorch, for a Klf ÷ PyTorch ratio measured in
/// the same run: a Python script (`pytorch_step.py`, beside the klf program) with the same
/// architecture, shapes, loss and optimizer, run by the first Python that imports torch.
[<RequireQualifiedAccess>]
module BenchPyTorch =
    /// The Pythons tried in order: $KLF_PYTHON, python3 on the PATH, Debian's /usr/bin/python3.
    let candidates () : string list =
        [ match Environment.GetEnvironmentVariable "KLF_PYTHON" with null | "" -> () | p -> yield p
          yield "python3"
          yield "/usr/bin/python3" ]
        |> List.distinct

    let private run (exe: string) (args: string list) (timeoutMs: int) : (int * string * string) option =
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

    /// The first candidate that imports torch, with its torch version.
    let findPython () : (string * string) option =
        candidates ()
        |> List.tryPick (fun py ->
            match run py [ "-c"; "import torch; print(torch.__version__)" ] 120000 with
            | Some(0, out, _) -> Some(py, out.Trim())
            | _ -> None)

    let private skipped (message: string) (model: string) (klfMs: float) =
        { Available = false; Message = message; Python = ""; TorchVersion = ""; Blas = ""; Threads = 0; Model = model
          TorchStepMs = nan; KlfStepMs = klfMs; Ratio = nan }

    /// Runs `script` for the model of `config` with `batch` × `seqLen` (median of `steps` after 3
    /// warm-up steps, `threads` threads) and sets Klf's `klfStepMs` against it; without a Python
    /// that imports torch, or when the script fails, a result that says so.
    let compare (script: string) (model: string) (config: LlamaConfig) (batch: int) (seqLen: int) (steps: int) (threads: int) (klfStepMs: float) : PyTorchBench =
        if not (File.Exists script) then skipped $"skipped: {script} not found" model klfStepMs
        else
        match findPython () with
        | None ->
            let tried = String.Join(", ", candidates ())
            skipped $"skipped: no Python with torch ({tried}); Debian's python3-torch provides one, or set KLF_PYTHON" model klfStepMs
        | Some(python, _) ->
            let args =
                [ script
                  "--hidden"; string config.HiddenSize; "--layers"; string config.NumHiddenLayers
                  "--heads"; string config.NumAttentionHeads; "--kv-heads"; string config.NumKeyValueHeads
                  "--intermediate"; string config.IntermediateSize; "--vocab"; string config.VocabSize
                  "--batch"; string batch; "--seq-len"; string seqLen; "--steps"; string steps; "--threads"; string threads ]
                @ (if config.TieWordEmbeddings then [ "--tied" ] else [])
            match run python args 1800000 with
            | Some(0, out, _) ->
                let json = JsonNode.Parse(out.Trim().Split('\n') |> Array.last)
                let ms = json["step_ms"].GetValue<float>()
                { Available = true
                  Message = "ran"
                  Python = python
                  TorchVersion = json["torch"].GetValue<string>()
                  Blas = json["blas"].GetValue<string>()
                  Threads = json["threads"].GetValue<int>()
                  Model = model
                  TorchStepMs = ms
                  KlfStepMs = klfStepMs
                  Ratio = klfStepMs / ms }
            | Some(code, _, err) -> skipped $"skipped: {python} {Path.GetFileName script} failed ({code}): {err.Trim()}" model klfStepMs
            | None -> skipped $"skipped: {python} could not be started" model klfStepMs
