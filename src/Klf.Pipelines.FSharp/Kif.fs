namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Klf.Models
open Klf.Training
open Klf.Checkpoints
open Klf.Formats
open Klf.Kif

/// Mean normalised unit importance per layer label, one row per completed task.
type LayerImportance =
    { /// The layer labels of the unit map (SkillUnit.Layer), in natural order (see Kif.sortLayers).
      Layers: string list
      /// The completed tasks, in order.
      Tasks: string list
      /// task × layer: the mean of Ŝ_k (normalised unit scores) over the layer's units.
      Scores: float[][]
      /// Per layer: the mean of Â (accumulated importance) after the last task over the layer's units.
      Accumulated: float[] }

/// KIF for F# pipelines: a session around a model, and one call per task.
[<RequireQualifiedAccess>]
module Kif =
    /// A KIF session for a model (dispose it when the sequence ends).
    let session (options: KifOptions) (model: ILanguageModel) : KifSession = new KifSession(model, options)

    /// Trains one task inside the session — begin (snapshot, tracking), fit, end (score, fuse,
    /// accumulate) — with `configure` adding further hooks (e.g. the orthogonality term).
    let taskWith (configure: StepHooks -> unit) (session: KifSession) (name: string) (options: TrainerOptions)
                 (examples: LmExample[]) (model: ILanguageModel) : KifTaskResult =
        let hooks = session.BeginTask name
        configure hooks
        Trainer.Fit(model, examples, options, hooks) |> ignore
        session.EndTask()

    /// Trains one task inside the session (see taskWith).
    let task (session: KifSession) (name: string) (options: TrainerOptions) (examples: LmExample[]) (model: ILanguageModel) : KifTaskResult =
        taskWith ignore session name options examples model

    /// Layer labels in natural order: `embeddings` first, then numbered layers (`model.layers.3`,
    /// `encoder.block.1`) by index ascending (encoder blocks before decoder blocks), then
    /// `final_norm`, `head`, and any other label (ordinal); duplicates removed.
    let sortLayers (layers: string seq) : string list =
        let key (label: string) =
            let segs = label.Split('.')
            let last = segs[segs.Length - 1]
            if label = "embeddings" then 0, 0, "", 0L, label
            elif segs.Length > 1 && last.Length > 0 && last.Length <= 18 && Seq.forall Char.IsAsciiDigit last then
                let prefix = String.Join('.', segs[.. segs.Length - 2])
                1, (if prefix.StartsWith("decoder", StringComparison.Ordinal) then 1 else 0), prefix, int64 last, label
            elif label = "final_norm" then 2, 0, "", 0L, label
            elif label = "head" then 3, 0, "", 0L, label
            else 4, 0, "", 0L, label
        layers |> Seq.distinct |> Seq.sortWith (fun a b -> compare (key a) (key b)) |> List.ofSeq

    /// Mean normalised unit importance per layer (each unit counts once, whatever its size), from
    /// the session's unit map and the history of its completed tasks: Ŝ_k per task and Â after the
    /// last task. Throws when no task has been completed.
    let importanceByLayer (session: KifSession) : LayerImportance =
        let map = session.Map
        if isNull map || session.History.Count = 0 then invalidOp "no task has been completed in the KIF session"
        let layers = sortLayers [ for u in map.Units -> u.Layer ]
        let members =
            [| for l in layers -> [| for i in 0 .. map.Count - 1 do if map.Units[i].Layer = l then yield i |] |]
        let means (scores: double[]) =
            if scores.Length <> map.Count then invalidOp $"{scores.Length} unit scores for a map of {map.Count} units"
            members |> Array.map (fun idx -> idx |> Array.averageBy (fun i -> scores[i]))
        let history = List.ofSeq session.History
        { Layers = layers
          Tasks = [ for h in history -> h.Task ]
          Scores = [| for h in history -> means h.Normalised |]
          Accumulated = means (List.last history).Accumulated }

    /// File name of the importance per layer a KIF run writes into its folder.
    [<Literal>]
    let LayerImportanceFile = "importance-layers.json"

    let [<Literal>] private LayerImportanceFormat = "klf-layer-importance/1"

    /// Writes `li` as JSON to `path` atomically ({format, layers, tasks, scores, accumulated}; a
    /// non-finite score is written as null).
    let saveLayerImportance (path: string) (li: LayerImportance) : unit =
        let number (x: float) = if Double.IsFinite x then JsonValue.Create x :> JsonNode else null
        let strings (xs: string list) = JsonArray([| for x in xs -> JsonValue.Create x :> JsonNode |])
        let numbers (xs: float[]) = JsonArray(Array.map number xs)
        let json = JsonObject()
        json["format"] <- JsonValue.Create LayerImportanceFormat
        json["layers"] <- strings li.Layers
        json["tasks"] <- strings li.Tasks
        json["scores"] <- JsonArray([| for row in li.Scores -> numbers row :> JsonNode |])
        json["accumulated"] <- numbers li.Accumulated
        AtomicFile.WriteAllText(path, json.ToJsonString(JsonSerializerOptions(WriteIndented = true)))

    /// Reads a file written by saveLayerImportance (null scores become NaN). A missing file, invalid
    /// JSON or a wrong shape is an error naming the file.
    let loadLayerImportance (path: string) : LayerImportance =
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: layer importance file not found", path))
        let bad (what: string) = raise (InvalidDataException($"{path}: {what}"))
        use doc =
            try JsonDocument.Parse(File.ReadAllText path)
            with :? JsonException as e -> bad $"not valid JSON ({e.Message})"
        let root = doc.RootElement
        if root.ValueKind <> JsonValueKind.Object then bad $"expected an object, found {root.ValueKind}"
        let field (name: string) (kind: JsonValueKind) =
            match root.TryGetProperty name with
            | true, v when v.ValueKind = kind -> v
            | true, v -> bad $"\"{name}\" must be {kind}, found {v.ValueKind}"
            | _ -> bad $"missing \"{name}\""
        match (field "format" JsonValueKind.String).GetString() with
        | LayerImportanceFormat -> ()
        | other -> bad $"format \"{other}\" is not {LayerImportanceFormat}"
        let strings name =
            [ for e in (field name JsonValueKind.Array).EnumerateArray() ->
                if e.ValueKind = JsonValueKind.String then e.GetString() else bad $"\"{name}\" must hold strings, found {e.ValueKind}" ]
        let numbers (where: string) (a: JsonElement) =
            if a.ValueKind <> JsonValueKind.Array then bad $"{where} must be an array of numbers, found {a.ValueKind}"
            [| for e in a.EnumerateArray() ->
                match e.ValueKind with
                | JsonValueKind.Number -> e.GetDouble()
                | JsonValueKind.Null -> nan
                | k -> bad $"{where} must hold numbers or null, found {k}" |]
        let layers, tasks = strings "layers", strings "tasks"
        let scores = [| for i, row in Seq.indexed ((field "scores" JsonValueKind.Array).EnumerateArray()) -> numbers $"scores row {i}" row |]
        let accumulated = numbers "accumulated" (field "accumulated" JsonValueKind.Array)
        if scores.Length <> tasks.Length then bad $"{scores.Length} score rows for {tasks.Length} tasks"
        scores |> Array.iteri (fun i row ->
            if row.Length <> layers.Length then bad $"scores row {i} has {row.Length} values for {layers.Length} layers")
        if accumulated.Length <> layers.Length then bad $"\"accumulated\" has {accumulated.Length} values for {layers.Length} layers"
        { Layers = layers; Tasks = tasks; Scores = scores; Accumulated = accumulated }
