namespace Klf.Pipelines

open Klf.Models.Llama

/// The training step of `BenchTraining.trainStep` in PyTorch, for a Klf ÷ PyTorch ratio measured in
/// the same run: a Python script (`pytorch_step.py`, beside the klf program) with the same
/// architecture, shapes, loss and optimizer, run by the first Python that imports torch (`PythonTorch`).
[<RequireQualifiedAccess>]
module BenchPyTorch =
    let private skipped (message: string) (model: string) (klfMs: float) =
        { Available = false; Message = message; Python = ""; TorchVersion = ""; Blas = ""; Threads = 0; Model = model
          TorchStepMs = nan; KlfStepMs = klfMs; Ratio = nan }

    /// Runs `script` for the model of `config` with `batch` × `seqLen` (median of `steps` after 3
    /// warm-up steps, `threads` threads) and sets Klf's `klfStepMs` against it; without a Python
    /// that imports torch, or when the script fails, a result that says so.
    let compare (script: string) (model: string) (config: LlamaConfig) (batch: int) (seqLen: int) (steps: int) (threads: int) (klfStepMs: float) : PyTorchBench =
        let args =
            PythonTorch.configArgs config
            @ [ "--batch"; string batch; "--seq-len"; string seqLen; "--steps"; string steps; "--threads"; string threads ]
        match PythonTorch.run script args 1800000 with
        | Error message -> skipped message model klfStepMs
        | Ok(python, json) ->
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

    /// The step comparison of a run that did not ask for it (the `pytorch` section not among the
    /// sections) while the fusion or generation comparison ran: the `pytorch` object still says so.
    let notRun (model: string) : PyTorchBench =
        skipped "not run (the pytorch section was not asked for)" model nan
