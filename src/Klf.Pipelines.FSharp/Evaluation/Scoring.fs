namespace Klf.Pipelines

open System
open System.Text

/// Scoring generated answers against references: exact match and ROUGE-L (own implementation).
/// Per-example scores lie in [0, 1]; `score` reports the mean in percent.
[<RequireQualifiedAccess>]
module Scoring =

    /// 1.0 when the prediction equals the reference after trimming surrounding white space and
    /// lower-casing both (invariant culture), else 0.0. E.g. "  Business " vs "business" → 1.0.
    let exactMatch (prediction: string) (reference: string) : float =
        let norm (s: string) = (if isNull s then "" else s).Trim().ToLowerInvariant()
        if norm prediction = norm reference then 1.0 else 0.0

    /// Word tokens for ROUGE: the text is lower-cased (invariant culture), every character that is
    /// not a letter or digit (Char.IsLetterOrDigit) acts as a separator, and the non-empty runs in
    /// between are the tokens. "The cat's mat!" → ["the"; "cat"; "s"; "mat"]. On ASCII text this
    /// is what the common `rouge-score` package does for English without stemming (lower-case,
    /// replace `[^a-z0-9]+` by a space, split on white space); unlike it, letters and digits
    /// outside ASCII are kept as word characters instead of being dropped.
    let tokens (text: string) : string[] =
        if isNull text then [||]
        else
            let lower = text.ToLowerInvariant()
            let out = ResizeArray<string>()
            let cur = StringBuilder()
            for c in lower do
                if Char.IsLetterOrDigit c then cur.Append c |> ignore
                elif cur.Length > 0 then
                    out.Add(cur.ToString())
                    cur.Clear() |> ignore
            if cur.Length > 0 then out.Add(cur.ToString())
            out.ToArray()

    /// Length of the longest common subsequence of two token sequences (dynamic programming,
    /// O(|a|·|b|) time, O(|b|) memory).
    let lcsLength (a: string[]) (b: string[]) : int =
        let prev = Array.zeroCreate (b.Length + 1)
        let cur = Array.zeroCreate (b.Length + 1)
        for i in 1 .. a.Length do
            for j in 1 .. b.Length do
                cur[j] <- if a[i - 1] = b[j - 1] then prev[j - 1] + 1 else max prev[j] cur[j - 1]
            Array.blit cur 0 prev 0 cur.Length
        prev[b.Length]

    /// ROUGE-L F-measure with β = 1 over `tokens`: with L = LCS length of the two token sequences,
    /// P = L / |prediction tokens|, R = L / |reference tokens|, F = 2PR / (P + R) (0 when L = 0).
    /// Conventions for empty token sequences: both empty → 1.0 (identical); exactly one empty → 0.0
    /// (rouge-score gives 0.0 in both cases; references of real tasks are never empty).
    /// Symmetric in its arguments; 1.0 exactly when the two token sequences are equal.
    /// E.g. "the cat sat on the mat" vs "the cat is on the mat": L = 5, P = R = 5/6, F = 5/6.
    let rougeL (prediction: string) (reference: string) : float =
        let p, r = tokens prediction, tokens reference
        match p.Length, r.Length with
        | 0, 0 -> 1.0
        | 0, _ | _, 0 -> 0.0
        | _ ->
            let l = lcsLength p r
            if l = 0 then 0.0
            else
                // 2PR/(P+R) with P = l/|p|, R = l/|r| simplifies to 2l/(|p|+|r|): symmetric, and
                // exactly 1.0 when p = r.
                2.0 * float l / float (p.Length + r.Length)

    /// The per-example score function of a metric, in [0, 1].
    let perExample (metric: Metric) : string -> string -> float =
        match metric with
        | Metric.ExactMatch -> exactMatch
        | Metric.RougeL -> rougeL

    /// Mean per-example score of predictions against references (same length, paired by index),
    /// in percent (0–100). Raises ArgumentException when the lengths differ or there are none.
    let score (metric: Metric) (predictions: string[]) (references: string[]) : float =
        if isNull predictions || isNull references then nullArg "predictions"
        if predictions.Length <> references.Length then
            invalidArg "predictions" $"one prediction per reference: {predictions.Length} predictions, {references.Length} references"
        if references.Length = 0 then invalidArg "references" "no references to score"
        let f = perExample metric
        100.0 * (Array.map2 f predictions references |> Array.average)
