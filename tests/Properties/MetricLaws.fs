/// Scoring (exact match, ROUGE-L) on hand-computed cases and laws, and the continual-learning
/// metrics (AP, F.Ra, FWT, BWT) on hand-made accuracy matrices and laws over generated ones.
module MetricLaws

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Klf.Pipelines

let private config = PropertyConfig.config 200

let private near (expected: float) (actual: float) (msg: string) =
    Expect.floatClose { absolute = 1e-9; relative = 1e-12 } actual expected msg

let private close (a: float) (b: float) = abs (a - b) <= 1e-9 * (1.0 + abs a + abs b)

// ---------------------------------------------------------------- hand-made matrices

// T = 3, everything measured.
//   row 0 (after task 1): 80 10  5
//   row 1 (after task 2): 60 90 20
//   row 2 (after task 3): 70 85 75
let private m1 = Metrics.ofRows [| [| 80.; 10.; 5. |]; [| 60.; 90.; 20. |]; [| 70.; 85.; 75. |] |]
// AP   = (70 + 85 + 75) / 3 = 230/3 = 76.666…
// F.Ra = ((max(80, 60) − 70) + (max(90) − 85)) / 2 = (10 + 5) / 2 = 7.5
// BWT  = ((70 − 80) + (85 − 90)) / 2 = (−10 − 5) / 2 = −7.5
// FWT with ã = [75; 88; 80]: ((80 − 75) + (90 − 88) + (75 − 80)) / 3 = (5 + 2 − 5) / 3 = 2/3
let private single1 = [| 75.; 88.; 80. |]

// T = 3, nothing measured above the diagonal (NaN); task 1 peaks after task 2, task 2 improves at the end.
//   row 0: 50 NaN NaN
//   row 1: 70  60 NaN
//   row 2: 40  65  90
let private m2 = Metrics.ofRows [| [| 50.; nan; nan |]; [| 70.; 60.; nan |]; [| 40.; 65.; 90. |] |]
// AP   = (40 + 65 + 90) / 3 = 195/3 = 65
// F.Ra = ((max(50, 70) − 40) + (max(60) − 65)) / 2 = (30 − 5) / 2 = 12.5
// BWT  = ((40 − 50) + (65 − 60)) / 2 = (−10 + 5) / 2 = −2.5
// FWT with ã = [50; 50; 100]: ((50 − 50) + (60 − 50) + (90 − 100)) / 3 = 0

// T = 2: a score measured above the diagonal (task 2 before training it) is ignored.
//   row 0: 90 99
//   row 1: 30 60
let private m3 = Metrics.ofRows [| [| 90.; 99. |]; [| 30.; 60. |] |]
// AP = (30 + 60) / 2 = 45; F.Ra = (90 − 30) / 1 = 60; BWT = (30 − 90) / 1 = −60
// FWT with ã = [80; 70]: ((90 − 80) + (60 − 70)) / 2 = 0

// ---------------------------------------------------------------- generated matrices

let private score = Gen.choose (0, 10000) |> Gen.map (fun k -> float k / 100.0)

/// A T×T matrix (T in 1..6), lower triangle scores in [0, 100] with two decimals; above the
/// diagonal a score or NaN.
let private matrixGen =
    gen {
        let! t = Gen.choose (1, 6)
        let! cells = Gen.arrayOfLength (t * t) score
        let! holes = Gen.arrayOfLength (t * t) (Gen.elements [ true; false ])
        return Array.init t (fun j -> Array.init t (fun i -> if i > j && holes[j * t + i] then nan else cells[j * t + i]))
    }

/// Lower triangle where each column is non-increasing down from the diagonal (forgetting only).
let private forgettingGen =
    gen {
        let! rows = matrixGen
        let t = rows.Length
        let! drops = Gen.arrayOfLength (t * t) (Gen.choose (0, 1500) |> Gen.map (fun k -> float k / 100.0))
        for i in 0 .. t - 1 do
            for j in i + 1 .. t - 1 do
                rows[j][i] <- rows[j - 1][i] - drops[j * t + i]
        return rows
    }

/// Lower triangle where each column is constant from the diagonal down (no forgetting at all).
let private stableGen =
    matrixGen |> Gen.map (fun rows ->
        for i in 0 .. rows.Length - 1 do
            for j in i + 1 .. rows.Length - 1 do
                rows[j][i] <- rows[i][i]
        rows)

let private prop name (g: Gen<float[][]>) body =
    testPropertyWithConfig config name (Prop.forAll (Arb.fromGen g) body)

let private matrixTests =
    testList "accuracy matrix" [
        test "hand-made T = 3: AP, F.Ra, BWT, FWT" {
            near (230.0 / 3.0) (Metrics.ap m1) "AP"
            near 7.5 (Metrics.fRa m1) "F.Ra"
            near -7.5 (Metrics.bwt m1) "BWT"
            near (2.0 / 3.0) (Metrics.fwt single1 m1) "FWT"
            let s = Metrics.summary (Some single1) m1
            near (230.0 / 3.0) s.AP "summary AP"
            near 7.5 s.FRa "summary F.Ra"
            near -7.5 s.BWT "summary BWT"
            near (2.0 / 3.0) (Option.get s.FWT) "summary FWT"
            Expect.isNone (Metrics.summary None m1).FWT "no single-task scores, no FWT"
        }
        test "hand-made T = 3 with NaN above the diagonal: the max of F.Ra is not the diagonal" {
            near 65.0 (Metrics.ap m2) "AP"
            near 12.5 (Metrics.fRa m2) "F.Ra"
            near -2.5 (Metrics.bwt m2) "BWT"
            near 0.0 (Metrics.fwt [| 50.; 50.; 100. |] m2) "FWT"
        }
        test "hand-made T = 2: a score above the diagonal is not used" {
            near 45.0 (Metrics.ap m3) "AP"
            near 60.0 (Metrics.fRa m3) "F.Ra (99 above the diagonal ignored)"
            near -60.0 (Metrics.bwt m3) "BWT"
            near 0.0 (Metrics.fwt [| 80.; 70. |] m3) "FWT"
        }
        test "T = 1: AP is the score, F.Ra and BWT are 0, FWT = a − ã" {
            let m = Metrics.ofRows [| [| 42.0 |] |]
            near 42.0 (Metrics.ap m) "AP"
            Expect.equal (Metrics.fRa m) 0.0 "F.Ra"
            Expect.equal (Metrics.bwt m) 0.0 "BWT"
            near 2.0 (Metrics.fwt [| 40.0 |] m) "FWT"
        }
        test "building a matrix entry by entry" {
            let m =
                Metrics.empty 2
                |> Metrics.withEntry 0 0 90.0
                |> Metrics.withEntry 1 0 30.0
                |> Metrics.withEntry 1 1 60.0
            Expect.isTrue (Double.IsNaN m[0, 1]) "unmeasured entry is NaN"
            near 45.0 (Metrics.ap m) "AP"
            near 60.0 (Metrics.fRa m) "F.Ra"
            Expect.equal (m.ToRows()[1]) [| 30.0; 60.0 |] "second row"
        }
        test "validation: non-square, empty, NaN in a needed entry, wrong number of single-task scores" {
            Expect.throwsT<ArgumentException> (fun () -> Metrics.ofRows [| [| 1.; 2. |]; [| 3. |] |] |> ignore) "ragged rows"
            Expect.throwsT<ArgumentException> (fun () -> Metrics.ofRows [| [| 1.; 2. |] |] |> ignore) "1×2"
            Expect.throwsT<ArgumentException> (fun () -> Metrics.ofArray2D (Array2D.zeroCreate 2 3) |> ignore) "2×3"
            Expect.throwsT<ArgumentException> (fun () -> Metrics.ofRows [||] |> ignore) "0×0"
            let holeBelow = Metrics.ofRows [| [| 50.; nan; nan |]; [| nan; 60.; nan |]; [| 40.; 65.; 90. |] |]
            let message =
                try Metrics.fRa holeBelow |> ignore; "no exception"
                with :? ArgumentException as e -> e.Message
            Expect.stringContains message "task 1 after training task 2" "F.Ra names the missing entry"
            near -2.5 (Metrics.bwt holeBelow) "BWT does not need a_{2,1}"
            let holeLast = Metrics.ofRows [| [| 50.; nan |]; [| 40.; nan |] |]
            Expect.throwsT<ArgumentException> (fun () -> Metrics.ap holeLast |> ignore) "AP needs the last row"
            Expect.throwsT<ArgumentException> (fun () -> Metrics.fwt [| 1.; 2.; 3. |] holeLast |> ignore) "FWT needs T scores"
            Expect.throwsT<ArgumentException> (fun () -> Metrics.fwt [| 1.; nan |] m3 |> ignore) "FWT rejects NaN single-task scores"
        }
        prop "no forgetting (columns constant from the diagonal down): F.Ra = 0 and BWT = 0" stableGen (fun rows ->
            let m = Metrics.ofRows rows
            Metrics.fRa m = 0.0 && Metrics.bwt m = 0.0)
        prop "adding c to every entry shifts AP by c and leaves F.Ra and BWT unchanged" matrixGen (fun rows ->
            let c = 37.25
            let m, shifted = Metrics.ofRows rows, Metrics.ofRows (rows |> Array.map (Array.map ((+) c)))
            close (Metrics.ap shifted) (Metrics.ap m + c)
            && close (Metrics.fRa shifted) (Metrics.fRa m)
            && close (Metrics.bwt shifted) (Metrics.bwt m))
        prop "columns non-increasing down from the diagonal: BWT ≤ 0 and F.Ra ≥ 0" forgettingGen (fun rows ->
            let m = Metrics.ofRows rows
            Metrics.bwt m <= 0.0 && Metrics.fRa m >= 0.0)
        prop "F.Ra ≥ −BWT always (the max includes the diagonal)" matrixGen (fun rows ->
            let m = Metrics.ofRows rows
            Metrics.fRa m >= -(Metrics.bwt m) - 1e-9)
        prop "FWT with ã = the diagonal is 0" matrixGen (fun rows ->
            let m = Metrics.ofRows rows
            Metrics.fwt (Array.init rows.Length (fun i -> rows[i][i])) m = 0.0)
        prop "metrics ignore entries above the diagonal" matrixGen (fun rows ->
            let m = Metrics.ofRows rows
            let blanked = Metrics.ofRows (rows |> Array.mapi (fun j r -> r |> Array.mapi (fun i v -> if i > j then nan else v)))
            Metrics.summary None m = Metrics.summary None blanked)
        prop "AP, F.Ra, BWT equal a naive transcription of the formulas (1-based)" matrixGen (fun rows ->
            let t = rows.Length
            let a j i = rows[j - 1][i - 1]
            let ap = (List.sum [ for i in 1 .. t -> a t i ]) / float t
            let fra = if t = 1 then 0.0 else (List.sum [ for i in 1 .. t - 1 -> (List.max [ for l in i .. t - 1 -> a l i ]) - a t i ]) / float (t - 1)
            let bwt = if t = 1 then 0.0 else (List.sum [ for i in 1 .. t - 1 -> a t i - a i i ]) / float (t - 1)
            let m = Metrics.ofRows rows
            close ap (Metrics.ap m) && close fra (Metrics.fRa m) && close bwt (Metrics.bwt m))
    ]

// ---------------------------------------------------------------- scoring

/// Naive LCS (memoised recursion over suffixes), the reference of Scoring.lcsLength.
let private naiveLcs (a: string[]) (b: string[]) =
    let memo = Collections.Generic.Dictionary<struct (int * int), int>()
    let rec go i j =
        if i = a.Length || j = b.Length then 0
        else
            match memo.TryGetValue(struct (i, j)) with
            | true, v -> v
            | _ ->
                let v = if a[i] = b[j] then 1 + go (i + 1) (j + 1) else max (go (i + 1) j) (go i (j + 1))
                memo[struct (i, j)] <- v
                v
    go 0 0

/// Short texts over a small vocabulary, with mixed case and separators, so that overlaps are common.
let private textGen =
    gen {
        let! n = Gen.choose (0, 8)
        let! words = Gen.arrayOfLength n (Gen.elements [ "the"; "The"; "cat"; "CAT"; "sat"; "a"; "on"; "mat"; "Mat"; "42" ])
        let! seps = Gen.arrayOfLength (n + 1) (Gen.elements [ " "; "  "; ", "; "-"; "! "; "\n"; "" ])
        // An empty separator between two words glues them into one token, which is fine.
        return String.Join("", Array.init (2 * n + 1) (fun k -> if k % 2 = 0 then seps[k / 2] else words[k / 2]))
    }

let private pairProp name body =
    testPropertyWithConfig config name (Prop.forAll (Arb.fromGen (Gen.zip textGen textGen)) body)

let private scoringTests =
    testList "scoring" [
        test "exact match: trimmed and lower-cased" {
            Expect.equal (Scoring.exactMatch "  Business " "business") 1.0 "surrounding spaces and case"
            Expect.equal (Scoring.exactMatch "Sci/Tech\n" "sci/tech") 1.0 "newline"
            Expect.equal (Scoring.exactMatch "Business." "business") 0.0 "punctuation counts"
            Expect.equal (Scoring.exactMatch "World Sports" "World") 0.0 "extra words count"
            Expect.equal (Scoring.exactMatch "" "") 1.0 "both empty"
        }
        test "tokens: lower-cased runs of letters and digits" {
            Expect.equal (Scoring.tokens "The cat's mat!") [| "the"; "cat"; "s"; "mat" |] "punctuation splits"
            Expect.equal (Scoring.tokens "  x--y  ") [| "x"; "y" |] "runs of separators"
            Expect.equal (Scoring.tokens "Café 42") [| "café"; "42" |] "letters beyond ASCII and digits"
            Expect.equal (Scoring.tokens "") [||] "empty"
            Expect.equal (Scoring.tokens " ,.! ") [||] "separators only"
        }
        test "LCS on the classic case ABCBDAB / BDCABA is 4" {
            let split (s: string) = s.ToCharArray() |> Array.map string
            Expect.equal (Scoring.lcsLength (split "ABCBDAB") (split "BDCABA")) 4 "LCS"
        }
        test "ROUGE-L on hand-computed cases" {
            // LCS = the cat on the mat = 5; P = 5/6, R = 5/6, F = 5/6.
            near (5.0 / 6.0) (Scoring.rougeL "the cat sat on the mat" "the cat is on the mat") "cat sat / cat is"
            // prediction [the; cat], reference [the; black; cat; sat]: LCS 2, P = 1, R = 1/2, F = 2·(1/2)/(3/2) = 2/3.
            near (2.0 / 3.0) (Scoring.rougeL "the cat" "The black cat sat.") "short prediction"
            // Reversed order: LCS 1, P = R = 1/4, F = 1/4.
            near 0.25 (Scoring.rougeL "a b c d" "d c b a") "order matters"
            Expect.equal (Scoring.rougeL "Hello, World!" "hello world") 1.0 "identical tokens"
            Expect.equal (Scoring.rougeL "a b" "c d") 0.0 "disjoint"
            Expect.equal (Scoring.rougeL "" "") 1.0 "both empty (convention)"
            Expect.equal (Scoring.rougeL "" "a") 0.0 "empty prediction"
            Expect.equal (Scoring.rougeL "a" "") 0.0 "empty reference"
            Expect.equal (Scoring.rougeL "!!" "a") 0.0 "no tokens in the prediction"
        }
        test "score: mean in percent, lengths checked" {
            near 75.0 (Scoring.score Metric.ExactMatch [| "a"; "b"; " C "; "d" |] [| "A"; "x"; "c"; "d" |]) "3 of 4"
            // (5/6 + 1 + 0) / 3 · 100 = 61.111…
            near (100.0 * (5.0 / 6.0 + 1.0) / 3.0)
                (Scoring.score Metric.RougeL [| "the cat sat on the mat"; "x y"; "a" |] [| "the cat is on the mat"; "X Y"; "b" |]) "ROUGE-L mean"
            Expect.throwsT<ArgumentException> (fun () -> Scoring.score Metric.ExactMatch [| "a" |] [||] |> ignore) "length mismatch"
            Expect.throwsT<ArgumentException> (fun () -> Scoring.score Metric.ExactMatch [||] [||] |> ignore) "nothing to score"
        }
        test "metric names" {
            for m in [ Metric.ExactMatch; Metric.RougeL ] do
                Expect.equal (Metric.ofName (Metric.name m)) m "round trip"
            Expect.equal (Metric.ofName "EM") Metric.ExactMatch "em"
            Expect.equal (Metric.ofName "rougeL") Metric.RougeL "rougeL"
            Expect.equal (Metric.ofName "rouge-l") Metric.RougeL "rouge-l"
            Expect.throwsT<ArgumentException> (fun () -> Metric.ofName "bleu" |> ignore) "unknown"
        }
        pairProp "ROUGE-L is symmetric" (fun (a, b) -> Scoring.rougeL a b = Scoring.rougeL b a)
        pairProp "ROUGE-L lies in [0, 1]" (fun (a, b) -> let f = Scoring.rougeL a b in f >= 0.0 && f <= 1.0)
        pairProp "ROUGE-L is 1 exactly when the lower-cased token sequences are equal" (fun (a, b) ->
            (Scoring.rougeL a b = 1.0) = (Scoring.tokens a = Scoring.tokens b))
        pairProp "ROUGE-L of a text with itself in another case is 1" (fun (a, _) -> Scoring.rougeL a (a.ToUpperInvariant()) = 1.0)
        pairProp "LCS = naive reference; ROUGE-L = 2PR/(P+R) from it" (fun (a, b) ->
            let ta, tb = Scoring.tokens a, Scoring.tokens b
            let l = naiveLcs ta tb
            let expected =
                if ta.Length = 0 && tb.Length = 0 then 1.0
                elif l = 0 then 0.0
                else
                    let p, r = float l / float ta.Length, float l / float tb.Length
                    2.0 * p * r / (p + r)
            Scoring.lcsLength ta tb = l && close expected (Scoring.rougeL a b))
    ]

[<Tests>]
let tests = testList "metric" [ scoringTests; matrixTests ]
