namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json

/// One instance of a text-to-text task: the model reads Input and must produce Output.
type Example = { Id: string; Input: string; Output: string }

/// Reading benchmark task files laid out as `<root>/{train,dev,test}/<task>.json`
/// (JSON arrays of `{id, input, output}`, the Long Sequence / SuperNI layout).
[<RequireQualifiedAccess>]
module Benchmark =

    /// The path of one split of one task.
    let path (root: string) (split: string) (task: string) = Path.Combine(root, split, task + ".json")

    /// Loads every example of a split of a task. Errors name the file and the problem.
    let load (root: string) (split: string) (task: string) : Example[] =
        let file = path root split task
        if not (File.Exists file) then
            raise (FileNotFoundException($"{file}: task file not found (expected <root>/{split}/{task}.json)", file))
        use doc =
            try JsonDocument.Parse(File.ReadAllBytes file)
            with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))
        if doc.RootElement.ValueKind <> JsonValueKind.Array then
            raise (InvalidDataException($"{file}: expected a JSON array of {{id, input, output}} objects"))
        doc.RootElement.EnumerateArray()
        |> Seq.mapi (fun i e ->
            let field (name: string) =
                match e.TryGetProperty name with
                | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
                | true, v when v.ValueKind = JsonValueKind.Number -> v.GetRawText()
                | _ -> raise (InvalidDataException($"{file}: element {i} has no string field \"{name}\""))
            let id = match e.TryGetProperty "id" with | true, v -> v.ToString() | _ -> $"{task}_{i}"
            { Id = id; Input = field "input"; Output = field "output" })
        |> Array.ofSeq

    /// A seeded sample of at most n examples, in a random but reproducible order.
    let sample (seed: int) (n: int) (examples: Example[]) : Example[] =
        let rng = Random(seed)
        let copy = Array.copy examples
        rng.Shuffle copy
        copy[.. min n copy.Length - 1]

    /// Finds the shared benchmark folder: `$KLF_BENCHMARKS`, else `shared/benchmarks` in the
    /// nearest ancestor of `start` (the repository sits beside `shared/`).
    let locate (start: string) : string option =
        match Environment.GetEnvironmentVariable "KLF_BENCHMARKS" with
        | null | "" ->
            let rec up (dir: DirectoryInfo) =
                if isNull dir then None
                else
                    let c = Path.Combine(dir.FullName, "shared", "benchmarks")
                    if Directory.Exists c then Some c else up dir.Parent
            up (DirectoryInfo start)
        | p -> Some p
