namespace Klf.Pipelines

open System

/// The continual-learning metrics of one run, in percent (points for FWT, BWT, F.Ra).
type MetricSummary =
    { /// Average performance after the last task.
      AP: float
      /// Forgetting (F.Ra).
      FRa: float
      /// Forward transfer; None when no single-task scores were measured.
      FWT: float option
      /// Backward transfer.
      BWT: float }

/// Metrics of continual learning as pure functions of the accuracy matrix (scores in percent),
/// following the KIF notes. In the formulas indices are 1-based, a_{j,i} = score on task i after
/// training task j, T = number of tasks; in code rows and columns are 0-based.
/// Every function raises ArgumentException naming the entry when a value it needs is NaN.
[<RequireQualifiedAccess>]
module Metrics =

    let private need (m: AccuracyMatrix) (metric: string) (j: int) (i: int) =
        let v = m[j, i]
        if Double.IsNaN v then
            invalidArg "m" $"{metric} needs the score on task {i + 1} after training task {j + 1} (row {j}, column {i}, 0-based), which is NaN (not measured)"
        v

    /// All-NaN T×T matrix (nothing measured yet).
    let empty (t: int) : AccuracyMatrix =
        if t < 1 then invalidArg "t" $"number of tasks must be at least 1, got {t}"
        AccuracyMatrix.OfArray2D(Array2D.create t t nan)

    /// Matrix from a T×T array (copied). ArgumentException when not square or empty.
    let ofArray2D (scores: float[,]) : AccuracyMatrix = AccuracyMatrix.OfArray2D scores

    /// Matrix from T rows of T scores (row j = after training task j; copied). Use nan for
    /// entries not measured. ArgumentException when the rows are not all of length T, or T = 0.
    let ofRows (rows: float[][]) : AccuracyMatrix =
        if isNull rows then nullArg "rows"
        let t = rows.Length
        rows |> Array.iteri (fun j r ->
            let len = if isNull r then 0 else r.Length
            if len <> t then invalidArg "rows" $"accuracy matrix must be square: {t} rows, but row {j} has {len} entries")
        AccuracyMatrix.OfArray2D(Array2D.init t t (fun j i -> rows[j][i]))

    /// A copy of the matrix with entry (j, i) (0-based: task i after training task j) set to score.
    let withEntry (j: int) (i: int) (score: float) (m: AccuracyMatrix) : AccuracyMatrix =
        let a = m.ToArray2D()
        if j < 0 || j >= m.Size || i < 0 || i >= m.Size then
            raise (ArgumentOutOfRangeException("j", $"entry ({j}, {i}) outside a {m.Size}×{m.Size} matrix"))
        a[j, i] <- score
        AccuracyMatrix.OfArray2D a

    /// Average performance after the last task: AP = (1/T) Σ_{i=1..T} a_{T,i}.
    let ap (m: AccuracyMatrix) : float =
        let t = m.Size
        (Array.init t (fun i -> need m "AP" (t - 1) i) |> Array.sum) / float t

    /// Forgetting: F.Ra = 1/(T−1) Σ_{i=1..T−1} ( max_{l=i..T−1} a_{l,i} − a_{T,i} ).
    /// The max runs over the rows where task i had already been trained and that are not the last
    /// (l from i to T−1): scores measured before task i was trained (above the diagonal) are not
    /// knowledge that could be forgotten and are ignored. Since the max includes a_{i,i},
    /// F.Ra ≥ −BWT. F.Ra can be negative when every earlier task improved at the end.
    /// T = 1: nothing can be forgotten, F.Ra = 0.
    let fRa (m: AccuracyMatrix) : float =
        let t = m.Size
        if t = 1 then 0.0
        else
            let last = t - 1
            let forgot i =
                let best = seq { i .. last - 1 } |> Seq.map (fun l -> need m "F.Ra" l i) |> Seq.max
                best - need m "F.Ra" last i
            (Array.init last forgot |> Array.sum) / float last

    /// Forward transfer: FWT = (1/T) Σ_{i=1..T} ( a_{i,i} − ã_i ), where single[i] = ã_i is the
    /// measured score of a model fine-tuned on task i alone (never a constant).
    /// ArgumentException when single does not hold T scores or holds a NaN.
    let fwt (single: float[]) (m: AccuracyMatrix) : float =
        if isNull single then nullArg "single"
        let t = m.Size
        if single.Length <> t then invalidArg "single" $"FWT needs one single-task score per task: {t} tasks, {single.Length} scores"
        single |> Array.iteri (fun i s ->
            if Double.IsNaN s then invalidArg "single" $"FWT: single-task score of task {i + 1} (index {i}) is NaN")
        (Array.init t (fun i -> need m "FWT" i i - single[i]) |> Array.sum) / float t

    /// Backward transfer: BWT = 1/(T−1) Σ_{i=1..T−1} ( a_{T,i} − a_{i,i} ); negative means forgetting.
    /// T = 1: no earlier task, BWT = 0.
    let bwt (m: AccuracyMatrix) : float =
        let t = m.Size
        if t = 1 then 0.0
        else
            let last = t - 1
            (Array.init last (fun i -> need m "BWT" last i - need m "BWT" i i) |> Array.sum) / float last

    /// All metrics of a matrix: AP, F.Ra, BWT, and FWT when single-task scores ã are given.
    let summary (single: float[] option) (m: AccuracyMatrix) : MetricSummary =
        { AP = ap m
          FRa = fRa m
          FWT = single |> Option.map (fun s -> fwt s m)
          BWT = bwt m }
