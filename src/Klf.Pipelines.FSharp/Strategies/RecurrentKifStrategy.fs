namespace Klf.Pipelines

open System
open System.IO
open System.Text.Json.Nodes
open Klf.Kif

/// Recurrent-KIF strategies (`RecurrentKifSettings`), built by `recurrentKifWith`, and their merge record.
[<RequireQualifiedAccess>]
module RecurrentKifStrategy =
    let private plain = StrategyRun.plain

    /// File of a Recurrent-KIF run's merge reports (per task) in its folder and task states.
    [<Literal>]
    let MergesFile = "rkif-merges.json"

    let private mergesJson (merges: (string * RecurrentMergeReport list) seq) =
        JsonArray(
            [| for task, ms in merges ->
                let o = JsonObject()
                o["task"] <- JsonValue.Create task
                o["merges"] <- JsonArray(
                    [| for m in ms ->
                        let x = JsonObject()
                        x["round"] <- JsonValue.Create m.Round
                        x["inner-threshold"] <- JsonValue.Create m.InnerThreshold
                        x["outer-threshold"] <- JsonValue.Create m.OuterThreshold
                        x["both"] <- JsonValue.Create m.Both
                        x["inner-only"] <- JsonValue.Create m.InnerOnly
                        x["outer-only"] <- JsonValue.Create m.OuterOnly
                        x["neither"] <- JsonValue.Create m.Neither
                        x :> JsonNode |])
                o :> JsonNode |])

    let private readMerges (path: string) : (string * RecurrentMergeReport list) list =
        if not (File.Exists path) then raise (FileNotFoundException($"no Recurrent-KIF merge record at {path}", path))
        try
            [ for t in JsonNode.Parse(File.ReadAllText path).AsArray() ->
                t["task"].GetValue<string>(),
                [ for m in t["merges"].AsArray() ->
                    RecurrentMergeReport(m["round"].GetValue<int>(), m["inner-threshold"].GetValue<float>(), m["outer-threshold"].GetValue<float>(),
                                         m["both"].GetValue<int64>(), m["inner-only"].GetValue<int64>(), m["outer-only"].GetValue<int64>(), m["neither"].GetValue<int64>()) ] ]
        with
        | :? Text.Json.JsonException | :? InvalidOperationException | :? NullReferenceException as e ->
            raise (InvalidDataException $"{path}: not a Recurrent-KIF merge record ({e.Message})")

    /// A Recurrent-KIF strategy named `name` from its settings: task 1 trains plainly; from task 2 on,
    /// every Q steps on the task are followed by M steps on batches of the replay memory (2 % of each
    /// earlier task) and a merge by the masks of the inner and outer importance (`RecurrentKifSession`).
    /// Writes `rkif-merges.json` (thresholds and element counts per merge) into the run's folder.
    let recurrentKifWith (name: string) (settings: RecurrentKifSettings) : Strategy =
        let options = RecurrentKifSettings.toOptions settings
        options.Validate()
        { Name = name
          Start = fun model ->
            settings.Lora |> Option.iter (fun l -> LoraAdapter.applyWith (LoraSettings.config model "default" l) model |> ignore)
            let session = new RecurrentKifSession(model, options)
            let memories = ResizeArray<Example[]>()
            let merges = ResizeArray<string * RecurrentMergeReport list>()
            { plain with
                BeginTask = fun _ -> session.BeginTask()
                Interleave = fun _ ->
                    if memories.Count = 0 then None
                    else Some { Examples = Array.concat memories; Steps = fun seed encoded -> session.Interleave(encoded, settings.OuterBatch, seed) }
                EndTask = fun t ->
                    session.EndTask()
                    merges.Add((t.Name, List.ofSeq session.Merges))
                    memories.Add(Replay.memory settings.MemorySeed settings.Memory t)
                SaveState = fun dir ->
                    session.SaveState dir
                    Replay.save (Path.Combine(dir, Replay.StateFile)) (List.ofSeq memories)
                    Klf.Formats.AtomicFile.WriteAllText(Path.Combine(dir, MergesFile), (mergesJson merges).ToJsonString())
                LoadState = fun dir ->
                    session.RestoreState dir
                    memories.Clear()
                    memories.AddRange(Replay.load (Path.Combine(dir, Replay.StateFile)))
                    merges.Clear()
                    merges.AddRange(readMerges (Path.Combine(dir, MergesFile)))
                WriteOutputs = fun dir ->
                    Klf.Formats.AtomicFile.WriteAllText(Path.Combine(dir, MergesFile), (mergesJson merges).ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))
                Dispose = session.Dispose } }

    /// Recurrent-KIF with full fine-tuning and the reference constants.
    let rkif : Strategy = recurrentKifWith "rkif" RecurrentKifSettings.full

    /// Recurrent-KIF on a LoRA of rank r (α = 4r, the authors' 32 at r = 8).
    let rkifLora (r: int) : Strategy = recurrentKifWith "rkif-lora" (RecurrentKifSettings.lora r)
