// Cuts the embedded excerpt of the Standard CL benchmark (dbpedia, amazon, yahoo, agnews, the
// first four tasks of the Long Sequence benchmark's `standard` orders) into data/standard-cl:
//
//   scripts/pack.sh && dotnet fsi scripts/make-default-stream.fsx [--train N] [--test N] [--benchmark DIR] [--out DIR]
//
// Defaults: 300 training and 200 test examples per task, the repository's benchmarks/long_sequence
// (its .json.gz files; --benchmark DIR reads another copy, .json or .json.gz), out = data/standard-cl
// in the repository. Training examples come from train/<task> only, test examples from
// test/<task> only (dev is never read). Sampling is label-balanced and seeded (Seed below):
// each label's examples are shuffled, then labels take turns (in ordinal order) giving one example
// until N are chosen, and the chosen ones are shuffled. Writes {train,test}/<task>.json (JSON arrays
// of {id, input, output}, as the benchmark), orders.json and PROVENANCE.md. Same inputs, same bytes.
// Task files are found and read by Klf.Pipelines (`Benchmark`, `TaskFile`), from the local feed
// scripts/pack.sh writes (the repository's NuGet.config names it).
#r "nuget: Klf.Pipelines"
#load "lib/ScriptOptions.fsx"

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Encodings.Web
open System.Text.Json
open Klf.Pipelines
open ScriptOptions

/// The sampling seed (fixed: the committed excerpt is this seed's).
let Seed = 20250601
let Tasks = [ "dbpedia"; "amazon"; "yahoo"; "agnews" ]

let repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))
let nTrain = int (option "--train" "300" args)
let nTest = int (option "--test" "200" args)
let out = Path.GetFullPath(option "--out" (Path.Combine(repo, "data", "standard-cl")) args)

let root =
    match option "--benchmark" "" args with
    | "" ->
        match Benchmark.locate repo with
        | Some b -> Path.Combine(b, "long_sequence")
        | None -> failwithf "no benchmarks/long_sequence above %s: give --benchmark DIR" repo
    | b -> Path.GetFullPath b

/// The bytes of one split of one task as the benchmark distributes it (decompressed).
let sourceBytes split task : byte[] =
    match Benchmark.tryFile root split task with
    | Some file -> TaskFile.readBytes file
    | None -> failwithf "%s: task file not found" (Benchmark.path root split task)

let load split task : Example[] = Benchmark.load root split task

let shuffle (rng: Random) (a: 'T[]) =
    let a = Array.copy a
    for i in a.Length - 1 .. -1 .. 1 do
        let j = rng.Next(i + 1)
        let t = a[i]
        a[i] <- a[j]
        a[j] <- t
    a

/// n examples, label-balanced: labels take turns (ordinal order) from their shuffled examples.
let balanced (seed: int) (n: int) (examples: Example[]) =
    if n > examples.Length then failwithf "asked for %d examples, the split has %d" n examples.Length
    let rng = Random(seed)
    let queues =
        examples |> Array.groupBy (fun e -> e.Output) |> Array.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))
        |> Array.map (fun (_, xs) -> Collections.Generic.Queue(shuffle rng xs))
    let chosen = Collections.Generic.List<Example>()
    while chosen.Count < n do
        for q in queues do
            if chosen.Count < n && q.Count > 0 then chosen.Add(q.Dequeue())
    shuffle rng (chosen.ToArray())

let jsonOptions = JsonSerializerOptions(Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping)
/// One example per line inside the array: valid JSON that diffs line by line.
let toJson (examples: Example[]) =
    let item (e: Example) =
        JsonSerializer.Serialize(dict [ "id", e.Id; "input", e.Input; "output", e.Output ], jsonOptions)
    "[\n" + String.Join(",\n", examples |> Array.map item) + "\n]\n"

let sha256 (bytes: byte[]) = Convert.ToHexString(SHA256.HashData bytes).ToLowerInvariant()
let write (path: string) (text: string) =
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    File.WriteAllText(path, text, UTF8Encoding false)

let tmp = out + ".tmp"
if Directory.Exists tmp then Directory.Delete(tmp, true)
let counts = Collections.Generic.List<string * string * int * (string * int) list * string>()
for task in Tasks do
    for split, n in [ "train", nTrain; "test", nTest ] do
        let source = load split task
        let picked = balanced (Seed ^^^ int (Task.stableHash $"{task}/{split}" % 1000003UL)) n source
        write (Path.Combine(tmp, split, task + ".json")) (toJson picked)
        let labels = picked |> Array.countBy (fun e -> e.Output) |> Array.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b)) |> List.ofArray
        counts.Add((task, split, source.Length, labels, sha256 (sourceBytes split task)))
        printfn "%-8s %-5s %4d of %4d examples, %d labels" task split n source.Length labels.Length
write (Path.Combine(tmp, "orders.json")) ("{\n  \"standard\": {\n    \"order1\": [" + String.Join(", ", Tasks |> List.map (sprintf "\"%s\"")) + "]\n  }\n}\n")

let md = StringBuilder()
let line (s: string) = md.AppendLine s |> ignore
line "# Provenance of the embedded Standard CL excerpt"
line ""
line "An excerpt of the 4-task Standard CL benchmark (`standard/order1`: dbpedia → amazon → yahoo → agnews), the"
line "first four tasks of the Long Sequence benchmark's `standard` orders, taken from the copy of that benchmark"
line "in the repository (`benchmarks/long_sequence`, see `benchmarks/PROVENANCE.md`). Same layout as the benchmark:"
line "`{train,test}/<task>.json`, JSON arrays of `{id, input, output}`, and `orders.json`."
line ""
line "Made by `scripts/make-default-stream.fsx` with:"
line ""
line "```"
line $"dotnet fsi scripts/make-default-stream.fsx --train {nTrain} --test {nTest}"
line "```"
line ""
line $"Seed {Seed} (fixed in the script; each task and split draws from its own stream, derived with a stable hash of"
line "`<task>/<split>`). Label-balanced: each label's examples are shuffled, then the labels take turns (in ordinal"
line "order) giving one example until the count is reached; the chosen examples are shuffled. Training examples come"
line "from `train/` only and test examples from `test/` only; `dev/` is never read. Ids are the benchmark's (a train"
line "and a test example may share an id, as in the benchmark: the splits number their examples separately)."
line ""
line "| task | split | source file (under benchmarks/) | source SHA-256 (decompressed) | examples | per label |"
line "| --- | --- | --- | --- | ---: | --- |"
for task, split, total, labels, sha in counts do
    let per = String.Join(", ", labels |> List.map (fun (l, c) -> $"{l} {c}"))
    let n = labels |> List.sumBy snd
    line $"| {task} | {split} | `long_sequence/{split}/{task}.json.gz` ({total}) | `{sha}` | {n} | {per} |"
line ""
line "## Caveats and licences"
line ""
line "- Inherited from the published benchmark (benchmarks/PROVENANCE.md): no public test split of yahoo"
line "  survives, so `test/yahoo.json.gz` there is a copy of `dev/yahoo.json.gz`, and this excerpt's yahoo test"
line "  examples are dev examples; `test/dbpedia.json.gz` was rebuilt from the published dbpedia test instances"
line "  minus the 500 in dev. Metric: exact match after trimming and lower-casing."
line "- The benchmark as distributed states no licence of its own. The four tasks are the text-classification sets of"
line "  Zhang, Zhao & LeCun (2015), built from DBpedia (CC BY-SA), Amazon reviews, Yahoo! Answers and the AG news"
line "  corpus, whose terms are those of their original sources (research use). This excerpt is for testing and"
line "  demonstration inside the project; check those terms before redistributing it elsewhere."
write (Path.Combine(tmp, "PROVENANCE.md")) (md.ToString())

if Directory.Exists out then Directory.Delete(out, true)
Directory.Move(tmp, out)
printfn "wrote %s" out
