namespace Klf.Pipelines

open System
open System.IO
open System.Reflection
open System.Text.Json.Nodes
open Klf.Models
open Klf.Checkpoints
open TorchSharp

/// What a run's manifest records besides its settings, so that its numbers can be reproduced and a
/// resume checked: library versions, source revision, the settings that define results, data and model hashes.
[<RequireQualifiedAccess>]
module RunProvenance =
    /// Versions of the libraries a run used and the runtime, for manifests.
    let packages () : JsonObject =
        let o = JsonObject()
        let version (a: Assembly) =
            match a.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
            | null -> string (a.GetName().Version)
            | v -> v.InformationalVersion.Split('+')[0]
        for name, t in [ "Klf.Core", typeof<ILanguageModel>; "Klf.Pipelines", typeof<RunKind>; "TorchSharp", typeof<torch.Tensor>
                         "Microsoft.ML.Tokenizers", typeof<Microsoft.ML.Tokenizers.Tokenizer>; "FSharp.Core", typeof<list<int>>
                         "YamlDotNet", typeof<YamlDotNet.RepresentationModel.YamlStream> ] do
            o[name] <- JsonValue.Create(version t.Assembly)
        o[".NET"] <- JsonValue.Create(Runtime.InteropServices.RuntimeInformation.FrameworkDescription)
        o["OS"] <- JsonValue.Create(Runtime.InteropServices.RuntimeInformation.OSDescription)
        o

    /// The source revision the library was built from (git commit of the build; "unknown" when the
    /// build had no repository).
    let revision () : string =
        match typeof<ILanguageModel>.Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
        | null -> "unknown"
        | v -> match v.InformationalVersion.Split('+') with [| _; r |] -> r | _ -> "unknown"

    /// The settings one run's results depend on (no strategy/seed/order lists, no name): what a
    /// resumed run must share with the interrupted one.
    let runIdentity (spec: ExperimentSpec) : JsonObject =
        let o = ExperimentSpec.toJson spec
        for k in [ "name"; "strategies"; "seeds"; "orders"; "fwt"; "zero-shot" ] do o.Remove k |> ignore
        o

    /// The SHA-256 of the examples a run uses, per task and split (id, input and output of each, in
    /// order): a run is reproduced only on the same data, whatever file format held it.
    let dataHashes (sequence: TaskSequence) : JsonObject =
        let hash (xs: Example[]) =
            let text = String.Join("\u0000", xs |> Array.map (fun e -> e.Id + "\u0001" + e.Input + "\u0001" + e.Output))
            Convert.ToHexString(Security.Cryptography.SHA256.HashData(Text.Encoding.UTF8.GetBytes text)).ToLowerInvariant()
        let o = JsonObject()
        for t in sequence.Tasks do
            let h = JsonObject()
            h["train"] <- JsonValue.Create(hash t.Train)
            h["validation"] <- JsonValue.Create(hash t.Validation)
            h["test"] <- JsonValue.Create(hash t.Test)
            o[t.Name] <- h
        o

    /// What besides the settings a run's numbers depend on: torch's thread count (reduction order),
    /// the processor, and the starting model's files (their SHA-256 from its manifest, when it has one).
    let environment (spec: ExperimentSpec) : JsonObject =
        let o = JsonObject()
        o["torch-threads"] <- JsonValue.Create(torch.get_num_threads ())
        o["processors"] <- JsonValue.Create Environment.ProcessorCount
        o["cpu"] <- JsonValue.Create(Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString())
        match spec.Model with
        | Folder d when File.Exists(Path.Combine(d, Checkpoint.ManifestFile)) ->
            let files = JsonObject()
            for KeyValue(f, h) in (Checkpoint.ReadManifest(d, verifyHashes = false)).Files do files[f] <- JsonValue.Create h
            o["model-files"] <- files
        | _ -> ()
        o
