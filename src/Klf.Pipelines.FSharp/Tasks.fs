namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json

/// One instance of a text-to-text task: the model reads Input and must produce Output.
type Example = { Id: string; Input: string; Output: string }

/// Reading the examples of one task file, in any of the three supported formats, detected per file:
/// - `.json`: a JSON array of `{id?, input, output}` objects (the Long Sequence / SuperNI layout);
/// - `.json`: a JSON array of `{id?, instruction, input?, output}` objects (the instruction variant);
/// - `.jsonl`: one such object (either shape) per line; blank lines are skipped.
/// The shape is decided per object: an object with an `instruction` field is the instruction
/// variant, and its Input is `instruction + "\n" + input` (just `instruction` when `input` is
/// missing or empty). A missing `id` becomes `<task>_<index>` (index from 0, in file order).
/// String and number fields are read as text. Every error names the file, the element (0-based,
/// for `.json`) or line (1-based, for `.jsonl`), and the problem.
[<RequireQualifiedAccess>]
module TaskFile =

    /// The file extensions a task file may have, in the order they are looked for.
    let extensions = [ ".json"; ".jsonl" ]

    /// The Input of an instruction-variant object: the instruction, then a newline and the input
    /// when the input is not empty.
    let joinInstruction (instruction: string) (input: string) =
        if String.IsNullOrEmpty input then instruction else instruction + "\n" + input

    let private text (file: string) (where: string) (e: JsonElement) (name: string) : string option =
        match e.TryGetProperty name with
        | true, v when v.ValueKind = JsonValueKind.String -> Some(v.GetString())
        | true, v when v.ValueKind = JsonValueKind.Number -> Some(v.GetRawText())
        | true, v when v.ValueKind = JsonValueKind.Null -> None
        | true, v ->
            raise (InvalidDataException($"{file}: {where}: field \"{name}\" must be a string, not {v.ValueKind}"))
        | _ -> None

    let private required file where e name =
        match text file where e name with
        | Some s -> s
        | None -> raise (InvalidDataException($"{file}: {where}: missing string field \"{name}\""))

    /// Reads one JSON object as an example. `where` names the element or line in errors;
    /// `defaultId` is used when the object has no `id`.
    let private example (file: string) (where: string) (defaultId: string) (e: JsonElement) : Example =
        if e.ValueKind <> JsonValueKind.Object then
            raise (InvalidDataException($"{file}: {where}: expected an object {{id, input, output}} or {{instruction, input, output}}, found {e.ValueKind}"))
        let id =
            match e.TryGetProperty "id" with
            | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
            | true, v when v.ValueKind <> JsonValueKind.Null -> v.GetRawText()
            | _ -> defaultId
        let input =
            match text file where e "instruction" with
            | Some instruction -> joinInstruction instruction (defaultArg (text file where e "input") "")
            | None -> required file where e "input"
        { Id = id; Input = input; Output = required file where e "output" }

    /// Loads every example of a task file (`.json` array or `.jsonl`), in file order.
    let load (file: string) : Example[] =
        if not (File.Exists file) then
            raise (FileNotFoundException($"{file}: task file not found", file))
        let task = Path.GetFileNameWithoutExtension file
        if file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) then
            File.ReadAllLines file
            |> Array.mapi (fun i line -> i + 1, line)
            |> Array.filter (fun (_, line) -> not (String.IsNullOrWhiteSpace line))
            |> Array.mapi (fun index (lineNo, line) ->
                let where = $"line {lineNo}"
                use doc =
                    try JsonDocument.Parse line
                    with :? JsonException as e -> raise (InvalidDataException($"{file}: {where}: not valid JSON ({e.Message})"))
                example file where $"{task}_{index}" doc.RootElement)
        else
            use doc =
                try JsonDocument.Parse(File.ReadAllBytes file)
                with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))
            if doc.RootElement.ValueKind <> JsonValueKind.Array then
                raise (InvalidDataException($"{file}: expected a JSON array of {{id, input, output}} or {{instruction, input, output}} objects, found {doc.RootElement.ValueKind}"))
            doc.RootElement.EnumerateArray()
            |> Seq.mapi (fun i e -> example file $"element {i}" $"{task}_{i}" e)
            |> Array.ofSeq

/// Reading benchmark task files laid out as `<root>/{train,dev,test}/<task>.json` (JSON arrays of
/// `{id, input, output}`, the Long Sequence / SuperNI layout, or `{instruction, input, output}`),
/// or `<root>/<split>/<task>.jsonl` (see `TaskFile`).
[<RequireQualifiedAccess>]
module Benchmark =

    /// The path of one split of one task, in the `.json` layout.
    let path (root: string) (split: string) (task: string) = Path.Combine(root, split, task + ".json")

    /// The file of one split of one task: `<task>.json`, else `<task>.jsonl`, if either exists.
    let tryFile (root: string) (split: string) (task: string) : string option =
        TaskFile.extensions
        |> List.map (fun ext -> Path.Combine(root, split, task + ext))
        |> List.tryFind File.Exists

    /// Loads every example of a split of a task (`.json` or `.jsonl`). Errors name the file and the problem.
    let load (root: string) (split: string) (task: string) : Example[] =
        match tryFile root split task with
        | Some file -> TaskFile.load file
        | None ->
            let file = path root split task
            raise (FileNotFoundException($"{file}: task file not found (expected <root>/{split}/{task}.json or {task}.jsonl)", file))

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

    /// The shared Long Sequence benchmark root (`<benchmarks>/long_sequence`), found by `locate`
    /// from the current folder, then from the program's folder; a clear error when neither finds it.
    let defaultRoot () : string =
        match locate Environment.CurrentDirectory |> Option.orElse (locate AppContext.BaseDirectory) with
        | Some b -> Path.Combine(b, "long_sequence")
        | None -> raise (DirectoryNotFoundException "no benchmark given and no shared/benchmarks found above the current folder (give --benchmark DIR or set KLF_BENCHMARKS)")
