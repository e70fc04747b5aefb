namespace Klf.Pipelines

open System
open System.Globalization
open System.IO
open Klf.Checkpoints
open Klf.Formats
open Klf.Training

/// One optimizer step of a run's training curve.
type CurvePoint =
    { /// The task's index in the sequence (0-based; MTL trains once, at the last task's index).
      TaskIndex: int
      Task: string
      /// The step within the task's training (1-based).
      Step: int
      /// The mean training loss of the step (nats per token).
      Loss: float
      /// The validation loss measured after this step, when one was.
      ValidationLoss: float option
      /// Whether these are the weights the task kept (best-validation).
      Kept: bool }

/// The training curves of a run: `loss.csv` in its run folder, one row per optimizer step of every task
/// (`task_index,task,step,loss,extra_loss,lr,grad_norm,validation_loss,kept`; validation_loss empty
/// where none was measured, kept 1 at the step whose weights the task kept). Rewritten atomically after
/// each task, from the rows of the earlier tasks already in the file, so a resumed run ends with the
/// same file as an uninterrupted one.
[<RequireQualifiedAccess>]
module TrainingCurves =

    /// The file name in a run folder.
    [<Literal>]
    let FileName = "loss.csv"

    /// The CSV header line.
    [<Literal>]
    let Header = "task_index,task,step,loss,extra_loss,lr,grad_norm,validation_loss,kept"

    let private inv = CultureInfo.InvariantCulture
    let private num (x: float) = if Double.IsFinite x then x.ToString("R", inv) else ""

    /// The CSV rows of one task's fit (no header).
    let rows (taskIndex: int) (task: string) (fit: FitResult) : string list =
        let validation = fit.Validation |> Seq.map (fun p -> p.Step, p.Loss) |> Map.ofSeq
        let kept = match fit.Kept with null -> -1 | k -> k.Step
        let name = if task.Contains ',' || task.Contains '"' then "\"" + task.Replace("\"", "\"\"") + "\"" else task
        // StepMetrics counts steps from 0; validation points and the CSV count them from 1.
        [ for i, s in Seq.indexed fit.Steps ->
            let step = i + 1
            let v = match Map.tryFind step validation with Some l -> num l | None -> ""
            String.Join(",", [ string taskIndex; name; string step; num s.Loss; num s.ExtraLoss; num s.LearningRate; num s.GradNorm; v; (if step = kept then "1" else "0") ]) ]

    /// Records task `taskIndex`'s fit in `<runDir>/loss.csv`: the rows of earlier tasks stay as they are,
    /// those of this and later tasks (from an interrupted attempt) are replaced. Atomic.
    let record (runDir: string) (taskIndex: int) (task: string) (fit: FitResult) : unit =
        let path = Path.Combine(runDir, FileName)
        let earlier =
            if File.Exists path then
                File.ReadAllLines path
                |> Array.skip 1
                |> Array.filter (fun l ->
                    match Int32.TryParse(l.Substring(0, max 0 (l.IndexOf ','))) with
                    | true, j -> j < taskIndex
                    | _ -> false)
                |> List.ofArray
            else []
        let lines = Header :: earlier @ rows taskIndex task fit
        AtomicFile.WriteAllText(path, String.Join("\n", lines) + "\n")

    /// Reads a `loss.csv`; a malformed line names the file and the line.
    let load (path: string) : CurvePoint list =
        let lines = File.ReadAllLines path
        if lines.Length = 0 || lines[0] <> Header then raise (InvalidDataException $"{path}: not a training-curve file (expected the header {Header})")
        [ for i in 1 .. lines.Length - 1 do
            let l = lines[i]
            if not (String.IsNullOrWhiteSpace l) then
                // The task name is the only field that may be quoted; the seven after it never hold commas.
                let first = l.IndexOf ','
                let lastFields = l.Substring(first + 1).Split(',')
                let n = lastFields.Length
                if first < 0 || n < 8 then raise (InvalidDataException $"{path}: line {i + 1} has too few fields")
                let f (k: int) = lastFields[n - 8 + k]
                let parse (s: string) = match Double.TryParse(s, NumberStyles.Float, inv) with | true, x -> x | _ -> nan
                let task = String.Join(",", lastFields[.. n - 8]).Trim('"').Replace("\"\"", "\"")
                yield { TaskIndex = int (l.Substring(0, first)); Task = task; Step = int (f 1); Loss = parse (f 2)
                        ValidationLoss = (match f 6 with "" -> None | s -> Some(parse s)); Kept = (f 7 = "1") } ]
