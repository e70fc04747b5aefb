/// Real benchmark text for integration tests: the long_sequence tasks in `shared/benchmarks`,
/// a folder `shared` beside the repository checkout (JSON arrays of {id, input, output}).
module BenchmarkData

open System
open System.IO
open System.Text.Json

/// The folder holding the benchmark JSON files: `shared/benchmarks` beside the checkout, found by
/// walking up from the test binary's folder.
let benchmarksRoot =
    lazy (
        let start = AppContext.BaseDirectory
        let rec up (dir: DirectoryInfo | null) =
            match dir with
            | null ->
                failwithf "No folder containing shared/benchmarks above '%s': the benchmark data must sit in a folder `shared` beside the repository checkout." start
            | dir ->
                let candidate = Path.Combine(dir.FullName, "shared", "benchmarks")
                if Directory.Exists candidate then candidate else up dir.Parent
        up (DirectoryInfo start))

/// One benchmark example.
type Record = { Id: string; Input: string; Output: string }

/// The examples of a long_sequence task, e.g. `records "train" "agnews"`; split is train, dev or test.
let records split task =
    let path = Path.Combine(benchmarksRoot.Value, "long_sequence", split, task + ".json")
    if not (File.Exists path) then failwithf "Benchmark file '%s' is missing." path
    use doc = JsonDocument.Parse(File.ReadAllText path)
    let text (r: JsonElement) (name: string) =
        match r.GetProperty(name).GetString() with
        | null -> failwithf "Benchmark file '%s': an example has a null '%s'." path name
        | s -> s
    [ for r in doc.RootElement.EnumerateArray() ->
        { Id = text r "id"; Input = text r "input"; Output = text r "output" } ]

/// The non-blank lines of the `input` fields of a long_sequence task (carriage returns become spaces).
let inputLines split task =
    [ for r in records split task do
        for line in r.Input.Split('\n') do
            let line = line.Replace('\r', ' ')
            if not (String.IsNullOrWhiteSpace line) then yield line ]
