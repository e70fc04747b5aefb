namespace Klf.Pipelines

open System

/// The accuracy matrix of a continual-learning run over T tasks, scores in percent.
/// Entry (j, i), 0-based, is a_{j+1,i+1} of the papers: the score on task i after training tasks
/// 0..j in order (row j = after training task j, column i = task i). Entries above the diagonal
/// (task i evaluated before it was trained) may be filled but no metric uses them; entries not
/// measured are NaN. Immutable: constructors copy their input.
[<Sealed>]
type AccuracyMatrix private (a: float[,]) =
    /// Number of tasks T.
    member _.Size = Array2D.length1 a
    /// Score on task i after training task j (0-based); NaN when not measured.
    member _.Item with get (j: int, i: int) = a[j, i]
    /// A fresh copy of the entries.
    member _.ToArray2D() = Array2D.copy a
    /// Rows as fresh arrays (row j = after training task j).
    member _.ToRows() = Array.init (Array2D.length1 a) (fun j -> a[j, *])
    override _.ToString() =
        let rows = Array.init (Array2D.length1 a) (fun j -> a[j, *] |> Array.map (sprintf "%.2f") |> String.concat " ")
        "AccuracyMatrix [" + String.Join("; ", rows) + "]"
    /// Wraps a copy of a T×T array (T ≥ 1); ArgumentException when it is not square or empty.
    static member OfArray2D(scores: float[,]) =
        if isNull scores then nullArg "scores"
        let r, c = Array2D.length1 scores, Array2D.length2 scores
        if r <> c then invalidArg "scores" $"accuracy matrix must be square (T×T), got {r}×{c}"
        if r = 0 then invalidArg "scores" "accuracy matrix has no tasks (0×0)"
        AccuracyMatrix(Array2D.copy scores)
