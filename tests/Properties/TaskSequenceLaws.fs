/// Laws of the task combinators: seeded subsampling, validation held out of train, and the
/// task-sequence combinators (order, take, concat, map), on generated tasks.
module TaskSequenceLaws

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Klf.Pipelines

/// Fixed, printable seed: rerun a failure with the same config.
let private config = PropertyConfig.config 200

/// A task with `train` and `test` examples whose ids are unique within the task.
let private mkTask (name: string) (train: int) (test: int) : TaskData =
    let ex split i = Example.create $"{name}-{split}-{i}" $"input {i} of {name}" $"label {i % 3}"
    Task.create name (Array.init train (ex "train")) (Array.init test (ex "test"))

/// A sequence of k tasks named t0..t(k-1) with small sizes picked from a seed.
let private mkSequence (name: string) (k: int) (sizeSeed: int) : TaskSequence =
    let rng = Random(sizeSeed)
    TaskSequence.create name [ for i in 0 .. k - 1 -> mkTask $"{name}.t{i}" (rng.Next 40) (rng.Next 20) ]

let private ids (xs: Example[]) = xs |> Array.map (fun e -> e.Id)
let private isSubset (sub: Example[]) (all: Example[]) = Set.isSubset (set sub) (set all)

[<Tests>]
let tests =
    testList "task sequence laws" [
        testPropertyWithConfig config "subsample is deterministic for a seed" <| fun (seed: int) (NonNegativeInt n) (NonNegativeInt m) (NonNegativeInt size) ->
            let task = mkTask "t" (size % 60) (size % 25)
            let sizes = { Train = n % 70; Test = m % 30 }
            Task.subsample seed sizes task = Task.subsample seed sizes task

        testPropertyWithConfig config "subsample keeps a subset of the requested size (all when fewer), distinct, in file order" <| fun (seed: int) (NonNegativeInt n) (NonNegativeInt m) (NonNegativeInt size) ->
            let task = mkTask "t" (size % 60) (size % 25)
            let sizes = { Train = n % 70; Test = m % 30 }
            let s = Task.subsample seed sizes task
            let inOrder (sub: Example[]) (all: Example[]) =
                let pos = all |> Array.mapi (fun i e -> e.Id, i) |> Map
                sub |> Array.map (fun e -> pos[e.Id]) |> Array.pairwise |> Array.forall (fun (a, b) -> a < b)
            s.Train.Length = min sizes.Train task.Train.Length
            && s.Test.Length = min sizes.Test task.Test.Length
            && isSubset s.Train task.Train && isSubset s.Test task.Test
            && inOrder s.Train task.Train && inOrder s.Test task.Test
            && s.Name = task.Name && s.Validation = task.Validation && s.Metric = task.Metric

        testPropertyWithConfig config "withValidation partitions train: validation ∪ train' = train, disjoint, test untouched" <| fun (seed: int) (NonNegativeInt n) (NonNegativeInt size) ->
            let task = mkTask "t" (size % 60) 7
            let v = Task.withValidation seed (n % 70) task
            v.Validation.Length = min (n % 70) task.Train.Length
            && v.Train.Length + v.Validation.Length = task.Train.Length
            && Set.intersect (set (ids v.Train)) (set (ids v.Validation)) |> Set.isEmpty
            && Set.union (set v.Train) (set v.Validation) = set task.Train
            && v.Test = task.Test
            && v = Task.withValidation seed (n % 70) task

        testPropertyWithConfig config "order then names = the given order" <| fun (NonNegativeInt k) (sizeSeed: int) (permSeed: int) ->
            let s = mkSequence "s" (k % 8) sizeSeed
            let wanted = TaskSequence.names s |> Array.ofList
            Random(permSeed).Shuffle wanted
            let wanted = List.ofArray wanted
            let o = s |> TaskSequence.order wanted
            TaskSequence.names o = wanted && o.Name = s.Name
            && (o.Tasks |> List.forall (fun t -> List.contains t s.Tasks))

        testPropertyWithConfig config "take n keeps the first min(n, length) tasks" <| fun (NonNegativeInt k) (NonNegativeInt n) (sizeSeed: int) ->
            let s = mkSequence "s" (k % 8) sizeSeed
            let t = s |> TaskSequence.take (n % 10)
            TaskSequence.length t = min (n % 10) (TaskSequence.length s)
            && t.Tasks = List.truncate (n % 10) s.Tasks

        testPropertyWithConfig config "concat: lengths add, names are a's then b's" <| fun (NonNegativeInt ka) (NonNegativeInt kb) (sizeSeed: int) ->
            let a, b = mkSequence "a" (ka % 6) sizeSeed, mkSequence "b" (kb % 6) (sizeSeed + 1)
            let c = TaskSequence.concat a b
            TaskSequence.length c = TaskSequence.length a + TaskSequence.length b
            && TaskSequence.names c = TaskSequence.names a @ TaskSequence.names b

        testPropertyWithConfig config "map id is the identity (sequence and task)" <| fun (NonNegativeInt k) (sizeSeed: int) ->
            let s = mkSequence "s" (k % 6) sizeSeed
            TaskSequence.map id s = s && TaskSequence.map (Task.map id) s = s

        testPropertyWithConfig config "sequence subsample = subsample of each task" <| fun (NonNegativeInt k) (sizeSeed: int) (seed: int) ->
            let s = mkSequence "s" (k % 6) sizeSeed
            let sizes = { Train = 10; Test = 5 }
            (TaskSequence.subsample seed sizes s).Tasks = (s.Tasks |> List.map (Task.subsample seed sizes))

        test "different tasks draw different streams from the same seed" {
            let a, b = mkTask "alpha" 200 50, mkTask "beta" 200 50
            let pos (t: TaskData) = t.Train |> Array.map (fun e -> e.Id.Split('-') |> Array.last)
            let sizes = { Train = 10; Test = 5 }
            Expect.notEqual (pos (Task.subsample 1 sizes a)) (pos (Task.subsample 1 sizes b)) "same positions picked for two tasks"
            Expect.notEqual (ids (Task.subsample 1 sizes a).Train) (ids (Task.subsample 2 sizes a).Train) "same picks for two seeds"
        }

        test "the stream hash is stable (FNV-1a 64), not string.GetHashCode" {
            Expect.equal (Task.stableHash "") 14695981039346656037UL "FNV-1a offset basis"
            Expect.equal (Task.stableHash "a") 0xaf63dc4c8601ec8cUL "FNV-1a 64 of \"a\""
            Expect.equal (Task.streamSeed 1 "agnews" "train") (Task.streamSeed 1 "agnews" "train") "same inputs, same stream"
        }

        test "order: unknown or repeated names fail, listing the known tasks" {
            let s = mkSequence "s" 3 1
            let e = Expect.throwsC (fun () -> s |> TaskSequence.order [ "s.t0"; "nope" ] |> ignore) id
            Expect.stringContains e.Message "\"nope\"" "names the unknown task"
            Expect.stringContains e.Message "s.t0, s.t1, s.t2" "lists the known tasks"
            Expect.throws (fun () -> s |> TaskSequence.order [ "s.t0"; "s.t0" ] |> ignore) "a repeated name"
        }

        test "max new tokens: longest label plus one for EOS" {
            let task = Task.create "t" [| (Example.create ("1") ("x") ("a b c")) |] [| (Example.create ("2") ("y") ("a b c d e")) |]
            Expect.equal (Task.maxNewTokens (fun s -> Array.zeroCreate (s.Split(' ').Length)) task) 6 "5 words + EOS"
        }

        test "task facts: labels are the distinct answers as exact match compares them; generation tasks have no chance level" {
            let ex (o: string) = (Example.create ("") ("x") (o))
            let t = Task.create "t" [| ex "Good"; ex " good "; ex "Bad" |] [| ex "bad"; ex "Neutral" |]
            let f = TaskFacts.ofTask t
            Expect.equal f.Labels (Some 3) "good, bad, neutral"
            Expect.equal (TaskFacts.chance f) (Some(100.0 / 3.0)) "1 / labels"
            Expect.equal (TaskFacts.ofTask (t |> Task.withMetric Task.RougeL)).Labels None "ROUGE-L: generation"
            let many = Task.create "qa" [| for i in 1 .. TaskFacts.MaxLabels + 1 -> ex (string i) |] [||]
            Expect.equal (TaskFacts.ofTask many).Labels None "more than MaxLabels answers: not classification"
            Expect.equal (TaskFacts.streamChance [ f; { f with Labels = Some 4 } ]) (Some((100.0 / 3.0 + 25.0) / 2.0)) "the mean"
            Expect.equal (TaskFacts.streamChance [ f; { f with Labels = None } ]) None "undefined when a task has none"
        }

        test "choices: a classification task's examples carry its labels (trimmed, distinct as exact match compares, sorted); a generation task's none" {
            let ex (o: string) = Example.create "" "x" o
            let t = Task.create "t" [| ex "Good"; ex " good "; ex "Bad" |] [| ex "bad"; ex "Neutral" |]
            for e in Array.append t.Train t.Test do Expect.equal e.Choices [| "Bad"; "Good"; "Neutral" |] "first spelling, sorted by lower case"
            Expect.equal (Task.labels t).Length (TaskFacts.ofTask t).Labels.Value "as many as the task facts count"
            Expect.isEmpty (Task.labels (t |> Task.withMetric Task.RougeL)) "generation: no choices"
            let many = Task.create "qa" [| for i in 1 .. Task.MaxLabels + 1 -> ex (string i) |] [||]
            Expect.isEmpty many.Train[0].Choices "too many answers: no choices"
            let moved = t |> Task.withValidation 1 1
            Expect.equal moved.Validation[0].Choices t.Train[0].Choices "held-out examples keep them"
        }

        testPropertyWithConfig config "dropInstruction cuts the same shared lines off the start and end of every example, at least the instruction it was given, keeps each text, and is idempotent" <|
            fun (head: string list) (bodies: (string * bool) list) (tail: string list) ->
                let line (s: string) = (if isNull s then "" else s).Replace('\n', ' ').Replace('\r', ' ')
                let head, tail = List.map line head, List.map line tail
                let examples =
                    bodies |> List.mapi (fun i (a, more) ->
                        let lines = head @ [ $"body {i} {line a}" ] @ (if more then [ $"more {i}" ] else []) @ tail
                        Example.create (string i) (String.Join("\n", lines)) "y") |> Array.ofList
                let t = Task.create "t" examples [||]
                let d = Task.dropInstruction t
                let cut (a: Example) (b: Example) =
                    let before, after = a.Input.Split('\n'), b.Input.Split('\n')
                    let h = [ 0 .. before.Length - after.Length ] |> List.tryFind (fun h -> before[h .. h + after.Length - 1] = after)
                    h |> Option.map (fun h -> h, before.Length - after.Length - h)
                let cuts = Array.map2 cut t.Train d.Train
                if examples.Length < 2 then d = t
                else
                    cuts |> Array.forall Option.isSome
                    && (cuts |> Array.map Option.get |> Array.distinct |> Array.length) = 1
                    && (let h, k = Option.get cuts[0] in h >= head.Length && k >= tail.Length)
                    && Array.forall2 (fun (a: Example) (b: Example) -> b.Input.Contains($"body {a.Id} ")) t.Train d.Train
                    && Task.dropInstruction d = d

        test "dropInstruction on the Long Sequence layout: the instruction line and the closing Answer: go, the text stays" {
            let e i (text: string) = Example.create (string i) ("What is the topic? Choose one from the option. Option: A, B.\n" + text + "\n\nAnswer:") "A"
            let t = Task.create "t" [| e 0 "Title: one\nText: first"; e 1 "Title: two\nText: second" |] [| e 2 "Title: three\nText: third" |]
            let d = Task.dropInstruction t
            Expect.equal [ for x in Array.append d.Train d.Test -> x.Input ] [ "Title: one\nText: first"; "Title: two\nText: second"; "Title: three\nText: third" ] "text only"
            Expect.equal (Task.dropInstruction (Task.create "one" [| e 0 "x" |] [||])) (Task.create "one" [| e 0 "x" |] [||]) "a single example: nothing is known to be shared"
            let same = Task.create "s" [| Example.create "0" "a\nb" "y"; Example.create "1" "a\nb" "y" |] [||]
            Expect.equal [ for x in (Task.dropInstruction same).Train -> x.Input ] [ "b"; "b" ] "identical examples keep their last line"
        }

        test "a created task has the stated default metric, whatever its name" {
            for name in [ "agnews"; "task1572"; "task1572_samsum_summary" ] do
                Expect.equal (Task.create name [||] [||]).Metric Benchmark.DefaultMetric name
            Expect.equal Benchmark.DefaultMetric "exact-match" "exact match"
        }
    ]
