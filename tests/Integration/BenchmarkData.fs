/// Real benchmark text for integration tests: the long_sequence tasks the repository carries in
/// `benchmarks/long_sequence` (gzip-compressed JSON arrays of {id, input, output}).
module BenchmarkData

open System
open System.IO
open System.IO.Compression
open System.Text.Json

/// The repository's `benchmarks` folder, found from this source file's place in the checkout (not
/// through KLF_BENCHMARKS: the tests read the data the repository carries).
let benchmarksRoot =
    lazy (
        let dir = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "benchmarks"))
        if not (Directory.Exists(Path.Combine(dir, "long_sequence"))) then
            failwithf "The repository's benchmark data is missing: no folder '%s'." (Path.Combine(dir, "long_sequence"))
        dir)

/// The decompressed bytes of one split of one long_sequence task, read independently of the
/// library's task-file reader (so tests can compare the two).
let bytes split task =
    let path = Path.Combine(benchmarksRoot.Value, "long_sequence", split, task + ".json.gz")
    if not (File.Exists path) then failwithf "Benchmark file '%s' is missing." path
    use input = File.OpenRead path
    use gz = new GZipStream(input, CompressionMode.Decompress)
    use out = new MemoryStream()
    gz.CopyTo out
    out.ToArray()

/// One benchmark example.
type Record = { Id: string; Input: string; Output: string }

/// The examples of a long_sequence task, e.g. `records "train" "agnews"`; split is train, dev or test.
let records split task =
    let path = Path.Combine(benchmarksRoot.Value, "long_sequence", split, task + ".json.gz")
    use doc = JsonDocument.Parse(ReadOnlyMemory<byte>(bytes split task))
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
