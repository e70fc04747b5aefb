namespace Klf.Pipelines

open System
open System.Text

/// The per-example score of a task.
[<RequireQualifiedAccess>]
type Metric =
    /// Exact match after trimming and lower-casing (classification tasks).
    | ExactMatch
    /// ROUGE-L F-measure over lower-cased word tokens (generation tasks, e.g. SuperNI).
    | RougeL

/// Names of metrics as they appear in configs and reports.
[<RequireQualifiedAccess>]
module Metric =

    /// The canonical name: "exact_match" or "rouge_l".
    let name (metric: Metric) : string =
        match metric with
        | Metric.ExactMatch -> "exact_match"
        | Metric.RougeL -> "rouge_l"

    /// Parses a metric name, ignoring case, '-' and '_': "exact_match", "exact-match", "em",
    /// "ExactMatch"; "rouge_l", "rouge-l", "rougeL". Raises ArgumentException for anything else.
    let ofName (name: string) : Metric =
        match Benchmark.canonicalMetric name with
        | Some "exact-match" -> Metric.ExactMatch
        | Some "rouge-l" -> Metric.RougeL
        | _ -> invalidArg "name" $"unknown metric \"{name}\" (expected exact_match or rouge_l)"
