namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json

/// Reading benchmark task files laid out as `<root>/{train,dev,test}/<task>.json` (JSON arrays of
/// `{id, input, output}`, the Long Sequence / SuperNI layout, or `{instruction, input, output}`),
/// or `<root>/<split>/<task>.jsonl` (see `TaskFile`).
[<RequireQualifiedAccess>]
module Benchmark =

    /// The path of one split of one task, in the `.json` layout.
    let path (root: string) (split: string) (task: string) = Path.Combine(root, split, task + ".json")

    /// The file of one split of one task: `<task>.json`, `<task>.jsonl`, `<task>.json.gz` or `<task>.jsonl.gz`, the first that exists.
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
            raise (FileNotFoundException($"{file}: task file not found (expected <root>/{split}/{task}.json, {task}.jsonl, {task}.json.gz or {task}.jsonl.gz)", file))

    /// The metric a task has when its benchmark declares none: exact match after trimming and lower-casing.
    [<Literal>]
    let DefaultMetric = "exact-match"

    /// The metric names a benchmark may declare (canonical spelling).
    let metricNames = [ "exact-match"; "rouge-l" ]

    /// The canonical spelling of a metric name, ignoring case, '-' and '_' ("exact_match", "em",
    /// "ROUGE-L"); None for anything else.
    let canonicalMetric (name: string) : string option =
        match (if isNull name then "" else name.Trim().ToLowerInvariant().Replace("-", "").Replace("_", "")) with
        | "exactmatch" | "em" -> Some "exact-match"
        | "rougel" -> Some "rouge-l"
        | _ -> None

    /// The optional `benchmark.json` of a benchmark root, where it declares the metric of its tasks.
    let infoFile (root: string) = Path.Combine(root, "benchmark.json")

    /// The metrics a benchmark root declares in `benchmark.json`, of the form
    /// `{ "name": "...", "metric": "exact-match", "tasks": { "task1572": "rouge-l", ... } }`: the default
    /// metric of its tasks (`metric`, else DefaultMetric) and the tasks that differ from it. Without the
    /// file every task has DefaultMetric. A malformed file or an unknown metric name fails naming the file
    /// and the key.
    let metrics (root: string) : string * Map<string, string> =
        let file = infoFile root
        if not (File.Exists file) then DefaultMetric, Map.empty
        else
            use doc =
                try JsonDocument.Parse(File.ReadAllBytes file)
                with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))
            let root = doc.RootElement
            if root.ValueKind <> JsonValueKind.Object then
                raise (InvalidDataException($"{file}: expected an object with \"metric\" and \"tasks\", found {root.ValueKind}"))
            let metricAt (where: string) (e: JsonElement) =
                let name = if e.ValueKind = JsonValueKind.String then e.GetString() else null
                match canonicalMetric name with
                | Some m -> m
                | None ->
                    let shown = if isNull name then string e.ValueKind else $"\"{name}\""
                    let known = String.Join(", ", metricNames)
                    raise (InvalidDataException($"{file}: {where} is {shown}, expected one of {known}"))
            let fallback =
                match root.TryGetProperty "metric" with
                | true, e -> metricAt "\"metric\"" e
                | _ -> DefaultMetric
            let perTask =
                match root.TryGetProperty "tasks" with
                | true, e when e.ValueKind = JsonValueKind.Object ->
                    Map [ for p in e.EnumerateObject() -> p.Name, metricAt $"\"tasks.{p.Name}\"" p.Value ]
                | true, e -> raise (InvalidDataException($"{file}: \"tasks\" must be an object of task name to metric, found {e.ValueKind}"))
                | _ -> Map.empty
            fallback, perTask

    /// The metric of one task of a benchmark root: its entry in `benchmark.json`, else the file's default
    /// `metric`, else DefaultMetric (see `metrics`).
    let metricOf (root: string) (task: string) : string =
        let fallback, perTask = metrics root
        perTask |> Map.tryFind task |> Option.defaultValue fallback

    /// A seeded sample of at most n examples, in a random but reproducible order.
    let sample (seed: int) (n: int) (examples: Example[]) : Example[] =
        let rng = Random(seed)
        let copy = Array.copy examples
        rng.Shuffle copy
        copy[.. min n copy.Length - 1]

    /// The benchmark folder: `$KLF_BENCHMARKS`, else the repository's `benchmarks` folder (the one
    /// holding `long_sequence/`) in the nearest ancestor of `start`.
    let locate (start: string) : string option =
        match Environment.GetEnvironmentVariable "KLF_BENCHMARKS" with
        | null | "" ->
            let rec up (dir: DirectoryInfo) =
                if isNull dir then None
                else
                    let c = Path.Combine(dir.FullName, "benchmarks")
                    if Directory.Exists(Path.Combine(c, "long_sequence")) then Some c else up dir.Parent
            up (DirectoryInfo start)
        | p -> Some p

    /// The Long Sequence benchmark root (`<benchmarks>/long_sequence`), found by `locate` from the
    /// current folder, then from the program's folder; a clear error when neither finds it.
    let defaultRoot () : string =
        match locate Environment.CurrentDirectory |> Option.orElse (locate AppContext.BaseDirectory) with
        | Some b -> Path.Combine(b, "long_sequence")
        | None -> raise (DirectoryNotFoundException "no benchmark given and no benchmarks/long_sequence found above the current folder or the program (give --benchmark DIR or set KLF_BENCHMARKS)")
