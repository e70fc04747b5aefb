namespace Klf.Pipelines

open System
open System.IO
open System.Text.Encodings.Web
open System.Text.Json
open System.Text.Json.Nodes
open Klf.Checkpoints
open Klf.Formats

/// What `OLoraImport.run` wrote: per dataset, its category and the examples per split.
type ImportedTask = { Task: string; Category: string; Counts: (string * int) list; Labels: string list }

/// Imports the original O-LoRA `CL_Benchmark` layout into a benchmark folder Klf reads.
/// Source: `<src>/<Category>/<Dataset>/{train,dev,test}.json` (JSON arrays of `{sentence, label}`)
/// and `<src>/<Category>/<Dataset>/labels.json` (the label strings), with the instructions of O-LoRA's
/// `configs/instruction_config.json` (`{ "<Category>": [ { "instruction": "..." }, ... ] }`; the first
/// instruction of a category is used, O-LoRA's "single" instruction strategy). Each example becomes
/// `{ id: "<dataset>_<index>", input: <prompt>, output: <label> }` with O-LoRA's prompt:
/// `[Task:<Category>\n][Dataset:<dataset>\n]<instruction>Option: <label>, <label>, … \n<sentence>\nAnswer:`
/// (the optional prefixes are O-LoRA's add_task_name / add_dataset_name; a category without an
/// instruction gets `<sentence>\nAnswer:`). Writes `<out>/{train,dev,test}/<dataset>.json` and a
/// `benchmark.json` (exact match), all at once: the folder appears complete or not at all.
[<RequireQualifiedAccess>]
module OLoraImport =

    /// The splits read, when present (train and test are required).
    let splits = [ "train"; "dev"; "test" ]

    /// Reads `configs/instruction_config.json`: category → its first instruction. Errors name the file.
    let instructions (file: string) : Map<string, string> =
        if not (File.Exists file) then raise (FileNotFoundException($"{file}: instruction config not found (give --instructions FILE, O-LoRA's configs/instruction_config.json)", file))
        let root =
            try JsonNode.Parse(File.ReadAllText file)
            with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))
        match root with
        | :? JsonObject as o ->
            Map [ for KeyValue(category, v) in o ->
                    match v with
                    | :? JsonArray as a when a.Count > 0 ->
                        match a[0] with
                        | :? JsonObject as first when (first["instruction"] :? JsonValue) -> category, first["instruction"].GetValue<string>()
                        | _ -> raise (InvalidDataException($"{file}: \"{category}\"[0] must be an object with an \"instruction\" string"))
                    | _ -> raise (InvalidDataException($"{file}: \"{category}\" must be a non-empty array of {{\"instruction\": ...}} objects")) ]
        | _ -> raise (InvalidDataException($"{file}: expected an object of category to instructions"))

    /// O-LoRA's prompt for one sentence (see the module summary).
    let prompt (category: string) (dataset: string) (instruction: string option) (labels: string list) (addTaskName: bool) (addDatasetName: bool) (sentence: string) =
        let prefix = (if addTaskName then $"Task:{category}\n" else "") + (if addDatasetName then $"Dataset:{dataset}\n" else "")
        match instruction with
        | Some i -> prefix + i + "Option: " + String.Join(", ", labels) + " \n" + sentence + "\nAnswer:"
        | None -> prefix + sentence + "\nAnswer:"

    let private labelsOf (file: string) : string list =
        if not (File.Exists file) then raise (FileNotFoundException($"{file}: labels.json not found (every dataset folder holds one)", file))
        match (try JsonNode.Parse(File.ReadAllText file) with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))) with
        | :? JsonArray as a ->
            [ for i, x in Seq.indexed a ->
                match x with
                | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
                | _ -> raise (InvalidDataException($"{file}: element {i} is not a label string")) ]
        | _ -> raise (InvalidDataException($"{file}: expected a JSON array of label strings"))

    let private instances (file: string) (labels: Set<string>) : (string * string)[] =
        let doc =
            try JsonNode.Parse(File.ReadAllText file)
            with :? JsonException as e -> raise (InvalidDataException($"{file}: not valid JSON ({e.Message})"))
        match doc with
        | :? JsonArray as a ->
            [| for i, x in Seq.indexed a ->
                let field (name: string) =
                    match x with
                    | :? JsonObject as o ->
                        match o[name] with
                        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
                        | null -> raise (InvalidDataException($"{file}: element {i}: missing \"{name}\""))
                        | _ -> raise (InvalidDataException($"{file}: element {i}: \"{name}\" must be a string"))
                    | _ -> raise (InvalidDataException($"{file}: element {i}: expected an object {{sentence, label}}"))
                let sentence, label = field "sentence", field "label"
                if not (labels.Contains label) then
                    raise (InvalidDataException($"{file}: element {i}: label \"{label}\" is not in the dataset's labels.json"))
                sentence, label |]
        | _ -> raise (InvalidDataException($"{file}: expected a JSON array of {{sentence, label}} objects"))

    /// Imports every `<Category>/<Dataset>` under `src` into `out` (see the module summary); `out` must
    /// not exist yet. Returns what was written, by dataset name.
    let run (src: string) (instructionFile: string) (addTaskName: bool) (addDatasetName: bool) (out: string) : ImportedTask list =
        if not (Directory.Exists src) then raise (DirectoryNotFoundException($"{src}: no such folder (expected O-LoRA's CL_Benchmark: <Category>/<Dataset>/{{train,dev,test}}.json)"))
        if Directory.Exists out || File.Exists out then raise (InvalidOperationException($"{out} exists already; give a new folder"))
        let byCategory = instructions instructionFile
        let datasets =
            [ for c in Directory.GetDirectories src |> Array.sort do
                for d in Directory.GetDirectories c |> Array.sort do
                    if splits |> List.exists (fun s -> File.Exists(Path.Combine(d, s + ".json"))) then yield Path.GetFileName c, d ]
        if datasets.IsEmpty then raise (InvalidDataException($"{src}: no <Category>/<Dataset>/train.json found"))
        let names = datasets |> List.map (fun (_, d) -> Path.GetFileName d)
        match names |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) with
        | Some(dup, _) -> raise (InvalidDataException($"{src}: dataset \"{dup}\" appears under two categories"))
        | None -> ()
        let options = JsonSerializerOptions(Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping)
        // Every file is read and checked before anything is written.
        let prepared =
            [ for category, dir in datasets ->
                let dataset = Path.GetFileName dir
                let labels = labelsOf (Path.Combine(dir, "labels.json"))
                for required in [ "train"; "test" ] do
                    let f = Path.Combine(dir, required + ".json")
                    if not (File.Exists f) then raise (FileNotFoundException($"{f}: missing (train and test are required)", f))
                let instruction = Map.tryFind category byCategory
                let bySplit =
                    [ for s in splits do
                        let f = Path.Combine(dir, s + ".json")
                        if File.Exists f then
                            let examples =
                                instances f (set labels)
                                |> Array.mapi (fun i (sentence, label) ->
                                    let o = JsonObject()
                                    o["id"] <- JsonValue.Create $"{dataset}_{i}"
                                    o["input"] <- JsonValue.Create(prompt category dataset instruction labels addTaskName addDatasetName sentence)
                                    o["output"] <- JsonValue.Create label
                                    o.ToJsonString options)
                            yield s, examples ]
                { Task = dataset; Category = category; Counts = [ for s, xs in bySplit -> s, xs.Length ]; Labels = labels }, bySplit ]
        AtomicFile.WriteFolder(out, fun tmp ->
            for info, bySplit in prepared do
                for s, lines in bySplit do
                    let dir = Path.Combine(tmp, s)
                    Directory.CreateDirectory dir |> ignore
                    File.WriteAllText(Path.Combine(dir, info.Task + ".json"), "[\n" + String.Join(",\n", lines) + "\n]\n")
            let info = JsonObject()
            info["name"] <- JsonValue.Create(Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath out)))
            info["metric"] <- JsonValue.Create Benchmark.DefaultMetric
            info["imported-from"] <- JsonValue.Create "O-LoRA CL_Benchmark"
            File.WriteAllText(Path.Combine(tmp, "benchmark.json"), info.ToJsonString(JsonSerializerOptions(WriteIndented = true)) + "\n"))
        prepared |> List.map fst
