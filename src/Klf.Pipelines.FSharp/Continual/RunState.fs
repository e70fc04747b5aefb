namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Checkpoints
open Klf.Formats

/// The per-task state folders of one continual run: `RUN/state/task-NN` (NN = 1-based task
/// position) holds everything needed to continue after task NN — the model's parameters and torch's
/// generator state (`model.safetensors`), the strategy's own state, and the matrix rows measured so
/// far (`rows.json`). Each folder is written atomically (temporary sibling, then rename), so a folder
/// that exists is complete; a run killed mid-write leaves only a temporary folder, removed on resume.
[<RequireQualifiedAccess>]
module RunState =
    /// File of the model's parameters inside a task state folder.
    [<Literal>]
    let ModelFile = "model.safetensors"

    /// File of the matrix rows inside a task state folder.
    [<Literal>]
    let RowsFile = "rows.json"

    /// `runDir/state`.
    let root (runDir: string) = Path.Combine(runDir, "state")

    /// The state folder after task j (0-based): `runDir/state/task-(j+1, two digits)`.
    let taskDir (runDir: string) (j: int) = Path.Combine(root runDir, sprintf "task-%02d" (j + 1))

    let private parseIndex (name: string) =
        if name.StartsWith "task-" then
            match Int32.TryParse(name.Substring 5) with
            | true, n when n >= 1 -> Some(n - 1)
            | _ -> None
        else None

    /// Completed task states, oldest first, as (0-based task index, folder).
    let completed (runDir: string) : (int * string) list =
        let r = root runDir
        if not (Directory.Exists r) then []
        else
            [ for d in Directory.GetDirectories r do
                match parseIndex (Path.GetFileName d) with
                | Some j when File.Exists(Path.Combine(d, RowsFile)) -> yield j, d
                | _ -> () ]
            |> List.sortBy fst

    /// The latest completed task state, if any.
    let latest (runDir: string) : (int * string) option = completed runDir |> List.tryLast

    /// Removes temporary folders a killed run left behind (names starting with '.' and ending '.tmp').
    let cleanTemporaries (runDir: string) =
        let r = root runDir
        if Directory.Exists r then
            for d in Directory.GetDirectories r do
                let n = Path.GetFileName d
                if n.StartsWith "." && n.EndsWith ".tmp" then Directory.Delete(d, true)

    /// Matrix rows as JSON arrays of exact doubles, NaN (not measured) as null.
    let rowsToJson (rows: float[][]) : JsonArray =
        JsonArray([| for r in rows -> JsonArray([| for x in r -> (if Double.IsNaN x then null else JsonValue.Create x :> JsonNode) |]) :> JsonNode |])

    /// Reads rows written by `rowsToJson` (null back to NaN).
    let rowsOfJson (rows: JsonArray) : float[][] =
        [| for r in rows -> [| for x in r.AsArray() -> (if isNull x then nan else x.GetValue<float>()) |] |]

    /// Writes the rows measured so far (exact doubles; NaN above the diagonal is written as null)
    /// with the task names, into a folder.
    let writeRows (folder: string) (strategy: string) (tasks: string list) (rows: float[][]) =
        let o = JsonObject()
        o["strategy"] <- JsonValue.Create strategy
        o["tasks"] <- JsonArray([| for t in tasks -> JsonValue.Create t :> JsonNode |])
        o["rows"] <- rowsToJson rows
        AtomicFile.WriteAllText(Path.Combine(folder, RowsFile), o.ToJsonString())

    /// Reads `rows.json`, checking it belongs to this strategy and task list; errors name the file.
    let readRows (folder: string) (strategy: string) (tasks: string list) : float[][] =
        let path = Path.Combine(folder, RowsFile)
        let bad what = raise (InvalidDataException($"{path}: {what}"))
        let json =
            try JsonNode.Parse(File.ReadAllText path)
            with :? Text.Json.JsonException as e -> bad $"not valid JSON ({e.Message})"
        let storedStrategy = match json["strategy"] with null -> "" | n -> n.GetValue<string>()
        if storedStrategy <> strategy then bad $"state of strategy \"{storedStrategy}\", not \"{strategy}\""
        let storedTasks = match json["tasks"] with :? JsonArray as a -> [ for t in a -> t.GetValue<string>() ] | _ -> bad "no tasks"
        if storedTasks <> tasks then
            let a, b = String.Join(",", storedTasks), String.Join(",", tasks)
            bad $"state of tasks [{a}], not [{b}]"
        match json["rows"] with
        | :? JsonArray as a -> rowsOfJson a
        | _ -> bad "no rows"

    /// Writes the state after task j atomically: `fill` writes into a temporary folder that then
    /// becomes `taskDir runDir j`. With `keepAll = false`, earlier task states are deleted afterwards.
    let save (runDir: string) (j: int) (keepAll: bool) (fill: string -> unit) =
        AtomicFile.WriteFolder(taskDir runDir j, fill)
        if not keepAll then
            for i, d in completed runDir do
                if i < j then Directory.Delete(d, true)
