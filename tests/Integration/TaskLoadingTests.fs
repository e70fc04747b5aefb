/// Loading real benchmark tasks and orders, the other task-file formats, and located errors.
module TaskLoadingTests

open System
open System.IO
open Expecto
open Klf.Pipelines

let private longSequence () = Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")
let private ordersPath () = Path.Combine(longSequence (), "orders.json")

/// A fresh temporary folder, deleted after f.
let private withTemp (f: string -> unit) =
    let dir = Directory.CreateTempSubdirectory("klf-tasks-").FullName
    try f dir finally Directory.Delete(dir, true)

let private write (dir: string) (relative: string) (text: string) =
    let file = Path.Combine(dir, relative)
    Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
    File.WriteAllText(file, text)
    file

let private messageOf (f: unit -> unit) = Expect.throwsC f (fun e -> e.Message)

/// The examples as their file holds them (a loaded task adds its label set as every example's choices).
let private plain (xs: Example[]) = xs |> Array.map (fun e -> { e with Choices = [||] })

[<Tests>]
let tests =
    testList "tasks" [
        testList "real benchmark" [
            test "Task.load reads train and test of a long_sequence task, as the files hold them" {
                let task = Task.load (longSequence ()) "cb"
                Expect.equal task.Name "cb" "name"
                Expect.equal (task.Train.Length, task.Validation.Length, task.Test.Length) (250, 0, 56) "split sizes from the benchmark README"
                Expect.equal task.Metric "exact-match" "metric"
                let records = BenchmarkData.records "train" "cb" |> List.map (fun r -> Example.create r.Id r.Input r.Output)
                Expect.equal (List.ofArray (plain task.Train)) records "train = the file, in order"
                Expect.equal (plain task.Test) (Benchmark.load (longSequence ()) "test" "cb") "Benchmark.load agrees"
                for e in Array.append task.Train task.Test do
                    Expect.equal e.Choices [| "contradiction"; "entailment"; "neutral" |] "every example carries the task's label set, sorted"
            }

            test "orders.json: standard.order1 is dbpedia, amazon, yahoo, agnews; every long_sequence order has the 15 tasks" {
                let orders = Orders.load (ordersPath ())
                Expect.equal (orders |> Orders.get "standard" "order1") [ "dbpedia"; "amazon"; "yahoo"; "agnews" ] "standard.order1"
                let tasks = Directory.GetFiles(Path.Combine(longSequence (), "train"), "*.json.gz") |> Array.map TaskFile.taskName |> set
                Expect.equal tasks.Count 15 "15 tasks shipped"
                for o in [ "order1"; "order2"; "order3" ] do
                    let order = orders |> Orders.get "long_sequence" o
                    Expect.equal order.Length 15 $"long_sequence.{o} length"
                    Expect.equal (set order) tasks $"long_sequence.{o} = the shipped tasks"
            }

            test "orders: unknown names fail, listing the known ones" {
                let orders = Orders.load (ordersPath ())
                let m = messageOf (fun () -> orders |> Orders.get "standard" "order9" |> ignore)
                Expect.stringContains m "order9" "names the unknown order"
                Expect.stringContains m "order1, order2, order3" "lists the known orders"
                let m = messageOf (fun () -> orders |> Orders.get "nope" "order1" |> ignore)
                Expect.stringContains m "long_sequence, standard" "lists the known benchmarks"
                let m = messageOf (fun () -> Orders.lookup (ordersPath ()) "standard/order9" |> ignore)
                Expect.stringContains m (ordersPath ()) "says where the orders were read"
                Expect.stringContains m "long_sequence/order1, long_sequence/order2, long_sequence/order3, standard/order1" "lists every order found"
            }

            test "benchmark files match their recorded hashes: decompressed = the distributed .json, and the .json.gz bytes" {
                let provenance = File.ReadAllLines(Path.Combine(BenchmarkData.benchmarksRoot.Value, "PROVENANCE.md"))
                let rows =
                    [ for line in provenance do
                        let cells = line.Split('|', StringSplitOptions.TrimEntries)
                        if cells.Length = 7 && (cells[2] = "train" || cells[2] = "dev" || cells[2] = "test") then
                            yield cells[1], cells[2], int cells[3], cells[4].Trim('`'), cells[5].Trim('`') ]
                Expect.equal rows.Length 45 "15 tasks x 3 splits recorded"
                let sha (b: byte[]) = Convert.ToHexStringLower(Security.Cryptography.SHA256.HashData b)
                for task, split, count, jsonSha, gzSha in rows do
                    let gz = File.ReadAllBytes(Path.Combine(longSequence (), split, task + ".json.gz"))
                    Expect.equal (sha gz) gzSha $"{split}/{task}.json.gz bytes"
                    Expect.equal (sha (BenchmarkData.bytes split task)) jsonSha $"{split}/{task}: decompressed"
                    Expect.equal (Benchmark.load (longSequence ()) split task).Length count $"{split}/{task}: example count"
            }

            test "a benchmark folder carries its own orders.json, found before the one beside it; none found says where it looked" {
                withTemp (fun dir ->
                    let own = Path.Combine(dir, "mine")
                    write dir "orders.json" """{"outer": {"o": ["a"]}}""" |> ignore
                    write own "orders.json" """{"mine": {"two": ["b", "a"]}}""" |> ignore
                    Expect.equal (Orders.fileFor own) (Path.Combine(own, "orders.json")) "the folder's own first"
                    Expect.equal (Orders.lookup (Orders.fileFor own) "mine/two") [ "b"; "a" ] "its order"
                    File.Delete(Path.Combine(own, "orders.json"))
                    Expect.equal (Orders.fileFor own) (Path.Combine(dir, "orders.json")) "else the one beside it"
                    File.Delete(Path.Combine(dir, "orders.json"))
                    let m = messageOf (fun () -> Orders.fileFor own |> ignore)
                    Expect.stringContains m (Path.Combine(own, "orders.json")) "names the folder's own candidate"
                    Expect.stringContains m (Path.Combine(dir, "orders.json")) "and the one beside it")
            }

            test "metrics are data: benchmark.json declares a default and per-task metrics; without it every task is exact match" {
                withTemp (fun dir ->
                    for t in [ "task1572_samsum_summary"; "task363" ] do
                        write dir $"train/{t}.json" """[{"input": "a", "output": "b"}]""" |> ignore
                        write dir $"test/{t}.json" """[{"input": "a", "output": "b"}]""" |> ignore
                    Expect.equal (Task.load dir "task1572_samsum_summary").Metric "exact-match" "no benchmark.json: the stated default, whatever the name"
                    write dir "benchmark.json" """{"metric": "ROUGE_L", "tasks": {"task363": "exact-match"}}""" |> ignore
                    Expect.equal (Task.load dir "task1572_samsum_summary").Metric "rouge-l" "the declared default, canonical spelling"
                    Expect.equal (Task.load dir "task363").Metric "exact-match" "a per-task entry"
                    let file = write dir "benchmark.json" """{"tasks": {"task363": "bleu"}}"""
                    let m = messageOf (fun () -> Task.load dir "task363" |> ignore)
                    Expect.stringContains m file "names the file"
                    Expect.stringContains m "tasks.task363" "names the key"
                    Expect.stringContains m "exact-match, rouge-l" "lists the metrics")
                Expect.equal (Task.load (longSequence ()) "agnews").Metric "exact-match" "the shipped benchmark declares exact match"
                let superni = Path.Combine(BenchmarkData.benchmarksRoot.Value, "superni")
                Expect.equal (Benchmark.metricOf superni "task1572") "rouge-l" "SuperNI generation task"
                Expect.equal (Benchmark.metricOf superni "task875") "exact-match" "SuperNI classification task"
            }

            test "gzip-compressed task files read as the plain ones; a broken archive names the file" {
                withTemp (fun dir ->
                    let text = """[{"id": "a", "input": "x", "output": "y"}]"""
                    let gz (relative: string) (body: string) =
                        let file = Path.Combine(dir, relative)
                        Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
                        use f = File.Create file
                        use z = new Compression.GZipStream(f, Compression.CompressionLevel.Optimal)
                        let b = Text.Encoding.UTF8.GetBytes body
                        z.Write(b, 0, b.Length)
                    gz "train/z.json.gz" text
                    gz "test/z.jsonl.gz" "{\"input\": \"p\", \"output\": \"q\"}\n"
                    let t = Task.load dir "z"
                    Expect.equal (plain t.Train) [| (Example.create ("a") ("x") ("y")) |] "json.gz"
                    Expect.equal (plain t.Test) [| (Example.create ("z_0") ("p") ("q")) |] "jsonl.gz"
                    Expect.equal t.Train[0].Choices [| "q"; "y" |] "a loaded task's examples carry its label set, from every split"
                    let bad = write dir "train/w.json.gz" "not gzip"
                    let m = messageOf (fun () -> TaskFile.load bad |> ignore)
                    Expect.stringContains m bad "names the file"
                    Expect.stringContains m "gzip" "says what is wrong")
            }

            test "a standard sequence: ofOrder, subsample, validation from train, take" {
                let root = longSequence ()
                let s =
                    TaskSequence.ofOrder root (Orders.load (ordersPath ())) "standard" "order1"
                    |> TaskSequence.subsample 7 { Train = 50; Test = 20 }
                    |> TaskSequence.withValidation 7 10
                    |> TaskSequence.take 3
                Expect.equal s.Name "standard/order1" "sequence name"
                Expect.equal (TaskSequence.names s) [ "dbpedia"; "amazon"; "yahoo" ] "first three of standard.order1"
                for t in s.Tasks do
                    Expect.equal (t.Train.Length, t.Validation.Length, t.Test.Length) (40, 10, 20) $"{t.Name} sizes"
                    let trainFile = Benchmark.load root "train" t.Name |> Array.map (fun e -> e.Input) |> set
                    let testFile = Benchmark.load root "test" t.Name |> Array.map (fun e -> e.Input) |> set
                    Expect.isTrue (t.Validation |> Array.forall (fun e -> trainFile.Contains e.Input)) $"{t.Name}: validation comes from the train file"
                    Expect.isTrue (t.Test |> Array.forall (fun e -> testFile.Contains e.Input)) $"{t.Name}: test comes from the test file"
                let again =
                    TaskSequence.ofOrder root (Orders.load (ordersPath ())) "standard" "order1"
                    |> TaskSequence.subsample 7 { Train = 50; Test = 20 }
                    |> TaskSequence.withValidation 7 10
                    |> TaskSequence.take 3
                Expect.equal again s "the same seed gives the same sequence"
                let reordered = s |> TaskSequence.order [ "yahoo"; "dbpedia" ]
                Expect.equal (TaskSequence.names reordered) [ "yahoo"; "dbpedia" ] "order selects and reorders"
            }

            test "max new tokens of a real task from its longest label" {
                let task = Task.load (longSequence ()) "cb"
                let words (s: string) = s.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun _ -> 0)
                Expect.equal (Task.maxNewTokens words task) 2 "one-word labels + EOS"
                let chars (s: string) = Array.zeroCreate s.Length
                Expect.equal (Task.maxNewTokens chars task) ("contradiction".Length + 1) "longest cb label in characters + EOS"
            }
        ]

        testList "formats" [
            test "the {instruction, input, output} variant: instruction + newline + input; empty input gives the instruction" {
                withTemp (fun dir ->
                    write dir "train/x.json" """[
                      {"id": "a", "instruction": "Translate.", "input": "chat", "output": "cat"},
                      {"instruction": "Say hi.", "input": "", "output": "hi"},
                      {"instruction": "Say yes.", "output": "yes"}
                    ]""" |> ignore
                    write dir "test/x.json" """[{"id": 3, "input": "plain", "output": 42}]""" |> ignore
                    let t = Task.load dir "x"
                    Expect.equal (plain t.Train) [| Example.create "a" "Translate.\nchat" "cat"
                                                    Example.create "x_1" "Say hi." "hi"
                                                    Example.create "x_2" "Say yes." "yes" |] "instruction variant"
                    Expect.equal (plain t.Test) [| (Example.create ("3") ("plain") ("42")) |] "numbers read as text")
            }

            test "JSONL: one object per line, either shape, blank lines skipped" {
                withTemp (fun dir ->
                    write dir "train/y.jsonl" "{\"id\": \"p\", \"input\": \"one\", \"output\": \"1\"}\n\n{\"instruction\": \"Do.\", \"input\": \"two\", \"output\": \"2\"}\n" |> ignore
                    write dir "test/y.jsonl" "{\"input\": \"three\", \"output\": \"3\"}\n" |> ignore
                    let t = Task.load dir "y"
                    Expect.equal (plain t.Train) [| (Example.create ("p") ("one") ("1")); (Example.create ("y_1") ("Do.\ntwo") ("2")) |] "train"
                    Expect.equal (plain t.Test) [| (Example.create ("y_0") ("three") ("3")) |] "test")
            }
        ]

        testList "errors" [
            test "a malformed element names the file, the element and the field" {
                withTemp (fun dir ->
                    let file = write dir "train/bad.json" """[{"input": "a", "output": "b"}, {"input": "c"}]"""
                    let m = messageOf (fun () -> Benchmark.load dir "train" "bad" |> ignore)
                    Expect.stringContains m file "names the file"
                    Expect.stringContains m "element 1" "names the element"
                    Expect.stringContains m "\"output\"" "names the missing field")
            }

            test "a wrong field type and a non-object element are located" {
                withTemp (fun dir ->
                    let file = write dir "train/bad.json" """[{"input": ["a"], "output": "b"}]"""
                    let m = messageOf (fun () -> TaskFile.load file |> ignore)
                    Expect.stringContains m "element 0" "element"
                    Expect.stringContains m "\"input\" must be a string" "problem"
                    let file = write dir "train/bad2.json" """[{"input": "a", "output": "b"}, 7]"""
                    let m = messageOf (fun () -> TaskFile.load file |> ignore)
                    Expect.stringContains m $"{file}: element 1: expected an object" "non-object element")
            }

            test "JSONL errors name the line; a JSON file that is not an array is named" {
                withTemp (fun dir ->
                    let file = write dir "train/bad.jsonl" "{\"input\": \"a\", \"output\": \"b\"}\n\n{\"input\": \"a\", \n"
                    let m = messageOf (fun () -> TaskFile.load file |> ignore)
                    Expect.stringContains m $"{file}: line 3: not valid JSON" "JSONL line (1-based, blank lines counted)"
                    let file = write dir "train/obj.json" """{"input": "a", "output": "b"}"""
                    let m = messageOf (fun () -> TaskFile.load file |> ignore)
                    Expect.stringContains m $"{file}: expected a JSON array" "not an array")
            }

            test "a missing split names the expected file" {
                withTemp (fun dir ->
                    write dir "train/z.json" """[{"input": "a", "output": "b"}]""" |> ignore
                    let m = messageOf (fun () -> Task.load dir "z" |> ignore)
                    Expect.stringContains m (Path.Combine(dir, "test", "z.json")) "names the missing test file"
                    Expect.stringContains m "z.jsonl" "mentions the JSONL alternative")
            }
        ]
    ]
