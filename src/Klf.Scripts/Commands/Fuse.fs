/// `klf fuse`: offline KIF fusion of two checkpoints (the model before a task and after it) with
/// their importance profiles, into a new checkpoint plus the accumulated importance profile.
module Klf.Cli.Fuse

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Klf.Models
open Klf.Adapters
open Klf.Checkpoints
open Klf.Formats
open Klf.SkillUnits
open Klf.Importance
open Klf.Fusion
open Klf.Kif
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common

let private previous =
    req<string> "--previous" "The model before the current task (θ̄_{k−1}): a checkpoint folder (klf train / klf fuse), or a LoRA adapter folder."
let private current =
    req<string> "--current" "The model after training the current task from --previous (θ_k): same architecture (or a LoRA adapter of the same shape)."
let private previousImportance =
    req<string> "--previous-importance" "Importance profile of the earlier tasks (Â_{k−1}): from klf train --importance, or OUT/importance.json of an earlier klf fuse."
let private currentImportance =
    req<string> "--current-importance" "Importance profile of the current task (Ŝ_k): from klf train --importance."
let private out = req<string> "--out" "Output folder: the fused checkpoint (manifest with the fusion's settings and counts), tokenizer files and importance.json."
let private ruleList () = String.Join(", ", Fusion.ruleNames ())
let private rule =
    opt<string> "--rule" $"Fusion rule: static, adaptive or any registered rule ({ruleList ()}); default static, adaptive for lora-rank1 units." None
let private partitionerList = String.Join(", ", SkillUnitPartitioners.Names)
let private units = opt<string> "--units" $"Skill-unit partitioner ({partitionerList}); default: the one recorded in the profiles." None
let private top = opt<float> "--top" "Fraction of units counted important for each distribution (strictly above its (1 − F) percentile)." (Some 0.2)
let private tau = opt<float> "--tau" "τ of the adaptive rule (the same as --param tau=X)." (Some 0.25)
let private ruleParams = opt<string> "--param" "Parameters of the rule, comma-separated key=value (e.g. shared=0.5,neither=1 for the static rule); klf list shows each rule's parameters." None
let private gamma = opt<float> "--gamma" "γ of the accumulation Â_k = normalise(γ·Â_{k−1} + (1−γ)·Ŝ_k)." (Some 0.7)
let private normalisation = opt<string> "--normalisation" "Groups of the accumulation's min-max: global, layer or module-type (as the profiles were normalised)." (Some "global")
let private seed = opt<int> "--seed" "Seed of stochastic rules (DARE); unit seeds derive from it and the unit id." (Some 0)
let private baseModel =
    opt<string> "--base" "Base model folder of LoRA adapters (default: the adapters' base_model_name_or_path, when that is a folder)." None

/// The rule named on the command line, built by the rule registry (`FusionRules`, where `static`
/// and `adaptive` are aliases) with the parameters of `--param` and, for the adaptive rule, τ.
/// `tauGiven` says whether --tau was on the command line: it is an error with any rule but the
/// adaptive one.
let ruleOf (name: string) (parameters: (string * float) list) (tau: float) (tauGiven: bool) : IFusionRule =
    let definition = FusionRules.Definition name
    let adaptive = definition.Name = "kif-adaptive"
    if tauGiven && not adaptive then raise (ArgumentException $"--tau sets τ of the adaptive rule; the rule here is {definition.Name}")
    if adaptive && not (tau > 0.0 && Double.IsFinite tau) then raise (ArgumentException $"--tau must be positive and finite, got {tau}")
    let ps = if adaptive && not (parameters |> List.exists (fst >> (=) "tau")) then parameters @ [ "tau", tau ] else parameters
    Fusion.ruleWith definition.Name ps

/// `key=value,key=value` as pairs; errors name the flag.
let parseParams (text: string) : (string * float) list =
    [ for part in text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) ->
        match part.Split('=') with
        | [| k; v |] ->
            match Double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture) with
            | true, x -> k.Trim(), x
            | _ -> raise (ArgumentException $"--param: \"{v}\" is not a number ({part})")
        | _ -> raise (ArgumentException $"--param: \"{part}\" must read key=value") ]

/// The partitioner and fingerprint recorded in an importance profile file, read without a unit
/// map. Errors name the file.
let profileHeader (path: string) : string * string =
    if not (File.Exists path) then raise (FileNotFoundException($"{path}: importance profile not found", path))
    let root =
        try JsonNode.Parse(File.ReadAllText path)
        with :? JsonException as e -> raise (InvalidDataException($"{path}: importance profile is not valid JSON ({e.Message})"))
    let field (key: string) =
        match root with
        | :? JsonObject as o ->
            match o[key] with
            | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
            | _ -> raise (InvalidDataException($"{path}: importance profile has no string field \"{key}\""))
        | _ -> raise (InvalidDataException($"{path}: an importance profile is a JSON object"))
    let format = field "format"
    if format <> ImportanceProfile.FormatName then
        raise (InvalidDataException($"{path}: format \"{format}\" is not an importance profile ({ImportanceProfile.FormatName})"))
    field "partitioner", field "fingerprint"

/// Loads an importance profile for `map` and returns it with its scores aligned with the map. A
/// profile of another unit map is an error naming the file and both fingerprints; a malformed file
/// or a non-finite score is an error naming the file.
let loadProfile (path: string) (map: SkillUnitMap) : ImportanceProfile * double[] =
    try
        let profile = ImportanceProfile.Load(path, map)
        let scores = profile.AlignTo map
        match scores |> Array.tryFindIndex (Double.IsFinite >> not) with
        | Some i -> raise (InvalidDataException($"{path}: unit {map.Units[i].Id} has score {scores[i]}"))
        | None -> profile, scores
    with
    | :? InvalidDataException | :? FileNotFoundException -> reraise ()
    | e -> raise (InvalidDataException($"{path}: malformed importance profile ({e.Message})", e))

/// The names of the top-level config fields in which two model configs differ.
let private configDifferences (a: JsonObject) (b: JsonObject) : string list =
    let keys = Seq.append (a |> Seq.map (fun kv -> kv.Key)) (b |> Seq.map (fun kv -> kv.Key)) |> Seq.distinct |> Seq.sort
    [ for k in keys do
        if not (JsonNode.DeepEquals(a[k], b[k])) then yield k ]

/// What one offline fusion did: the unit map, each unit's category, the fusion report and the
/// accumulated profile Â_k = minmax(γ·Â_{k−1} + (1−γ)·Ŝ_k) with both inputs' task histories.
type FuseOutcome =
    { Map: SkillUnitMap
      Categories: UnitCategory[]
      Report: FusionReport
      Accumulated: ImportanceProfile }

/// KIF fusion of `model` (holding θ_k, written in place) with `previousWeights` (θ̄_{k−1}) over the
/// units of `map` by the KIF step of `KifSession` (`KifStep.Fuse`): the previous profile's top fraction
/// (Â_{k−1}) and the current one's (Ŝ_k) give the categories, the rule fuses, and the accumulated
/// profile is returned. Profiles are checked against the map before the model changes.
let fuseInPlace (options: KifOptions) (seed: int64) (previousProfile: string) (currentProfile: string)
                (map: SkillUnitMap) (previousWeights: ParameterSnapshot) (model: ILanguageModel) : FuseOutcome =
    let prevProfile, prevScores = loadProfile previousProfile map
    let curProfile, curScores = loadProfile currentProfile map
    let step = KifStep.Fuse(model, previousWeights, null, map, prevScores, curScores, options, seed)
    let history =
        [ for p in [ prevProfile; curProfile ] do
            for i in 0 .. p.History.Count - 1 -> TaskImportance(p.History[i].Task, p.HistoryAlignedTo(map, i)) ]
    { Map = map; Categories = step.Categories; Report = step.Report; Accumulated = ImportanceProfile.FromMap(map, step.Accumulated, history) }

let private invariant (x: float) = x.ToString("0.####", CultureInfo.InvariantCulture)

/// λ per unit grouped by value (4 decimals) when there are at most 8 distinct values; None otherwise
/// (continuous λ, e.g. the adaptive rule) or when the rule has no single λ (NaN).
let private lambdaCounts (report: FusionReport) : (string * int) list option =
    let lambdas = report.Units |> Seq.map (fun u -> u.Lambda) |> Array.ofSeq
    if lambdas |> Array.exists Double.IsNaN then None
    else
        let groups = lambdas |> Array.countBy (fun l -> Math.Round(l, 4)) |> Array.sortBy fst
        if groups.Length > 8 then None else Some [ for l, c in groups -> invariant l, c ]

let private categoryNames =
    [ UnitCategory.Shared, "shared"; UnitCategory.PreviousOnly, "previous_only"; UnitCategory.CurrentOnly, "current_only"; UnitCategory.Neither, "neither" ]

/// The manifest's extra data: settings, inputs, units per category, λ counts, the task history.
let private extraJson (outcome: FuseOutcome) (options: KifOptions) (parameters: (string * float) list) (seed: int) (inputs: (string * string) list) =
    let r = outcome.Report
    let topFraction, gamma = options.TopFraction, options.Gamma
    let fusion = JsonObject()
    fusion["rule"] <- JsonValue.Create r.Rule
    match options.Rule with
    | :? KifAdaptiveRule as a -> fusion["tau"] <- JsonValue.Create a.Temperature
    | _ -> ()
    if not parameters.IsEmpty then
        fusion["parameters"] <- JsonObject(dict [ for k, v in parameters -> k, JsonValue.Create v :> JsonNode ])
    fusion["normalisation"] <- JsonValue.Create(KifSettings.scopeName options.Normalisation)
    fusion["partitioner"] <- JsonValue.Create outcome.Map.Partitioner
    fusion["fingerprint"] <- JsonValue.Create outcome.Map.Fingerprint
    fusion["units"] <- JsonValue.Create outcome.Map.Count
    fusion["top_fraction"] <- JsonValue.Create topFraction
    fusion["gamma"] <- JsonValue.Create gamma
    fusion["seed"] <- JsonValue.Create seed
    for key, path in inputs do fusion[key] <- JsonValue.Create(Path.GetFullPath path)
    fusion["categories"] <- JsonObject(dict [ for c, name in categoryNames -> name, JsonValue.Create(r.CountOf c) :> JsonNode ])
    match lambdaCounts r with
    | Some counts -> fusion["lambda_counts"] <- JsonObject(dict [ for l, c in counts -> l, JsonValue.Create c :> JsonNode ])
    | None -> ()
    fusion["elements"] <- JsonValue.Create r.ElementCount
    fusion["elapsed_ms"] <- JsonValue.Create r.Elapsed.TotalMilliseconds
    let extra = JsonObject()
    extra["fusion"] <- fusion
    extra["tasks"] <- JsonArray([| for h in outcome.Accumulated.History -> JsonValue.Create h.Task :> JsonNode |])
    extra

/// Prints units per category with their λ, the λ counts and the time taken.
let private printSummary (outcome: FuseOutcome) (topFraction: float) (total: TimeSpan) =
    let r = outcome.Report
    printfn "fused with %s: %d units (partitioner %s, map %s), top %s%% important per distribution"
        r.Rule outcome.Map.Count outcome.Map.Partitioner outcome.Map.Fingerprint (invariant (100.0 * topFraction))
    printfn "  %-14s %6s  %s" "category" "units" "λ"
    for c, name in categoryNames do
        let ls = r.Units |> Seq.filter (fun u -> u.Category = c) |> Seq.map (fun u -> u.Lambda) |> Array.ofSeq
        let lambda =
            if ls.Length = 0 then "-"
            elif ls |> Array.exists Double.IsNaN then "n/a"
            elif Array.min ls = Array.max ls then invariant ls[0]
            else $"{invariant (Array.min ls)}..{invariant (Array.max ls)} (mean {invariant (Array.average ls)})"
        printfn "  %-14s %6d  %s" (name.Replace('_', '-')) ls.Length lambda
    match lambdaCounts r with
    | Some counts -> printfn "λ counts: %s" (String.Join(", ", [ for l, c in counts -> $"λ={l}: {c}" ]))
    | None -> ()
    printfn "fusion %.1f ms for %d elements; total %.1f s" r.Elapsed.TotalMilliseconds r.ElementCount total.TotalSeconds

/// Whether a folder holds a LoRA adapter (PEFT layout) rather than a model; errors name the folder
/// and the option it came from.
let private isAdapter (flag: string) (dir: string) : bool =
    if not (Directory.Exists dir) then raise (DirectoryNotFoundException($"{dir}: folder not found ({flag})"))
    if File.Exists(Path.Combine(dir, "config.json")) then false
    elif File.Exists(Path.Combine(dir, "adapter_config.json")) then true
    else raise (FileNotFoundException($"{dir}: neither a model folder (config.json) nor a LoRA adapter folder (adapter_config.json) ({flag})"))

/// Loads a model folder, verifying the file hashes first when it is a Klf checkpoint (manifest.json).
let private loadChecked (dir: string) (dev: TorchSharp.torch.Device) : ILanguageModel =
    if File.Exists(Path.Combine(dir, Checkpoint.ManifestFile)) then Checkpoint.ReadManifest dir |> ignore
    ModelFolder.Load(dir, dev)

/// The parameter names the units of a map touch.
let private unitParameters (map: SkillUnitMap) =
    map.Units |> Seq.collect (fun u -> u.Slices) |> Seq.map (fun s -> s.Parameter) |> Seq.distinct |> Array.ofSeq

let private requireUnits (map: SkillUnitMap) (dir: string) =
    if map.Count = 0 then
        raise (ArgumentException $"{dir}: the partitioner {map.Partitioner} finds no skill units in this model (LoRA partitioners need LoRA adapters)")

/// A LoRA adapter's settings as text, to compare two adapters.
let private adapterShape (dir: string) =
    let c = LoraModel.ReadConfig dir
    let targets = match c.TargetRegex with null -> String.Join(",", c.EffectiveTargets) | rx -> rx
    $"r={c.R}, alpha={c.Alpha}, targets={targets}"

let cmd =
    command "fuse" "KIF fusion of two checkpoints (before and after a task) with their importance profiles: unit categories from the top fractions, a fusion rule per unit, a new checkpoint with the accumulated importance."
        [ previous; current; previousImportance; currentImportance; out; rule; ruleParams; units; top; tau; gamma; normalisation; seed; baseModel; deviceOption ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let clock = Stopwatch.StartNew()
        let prevDir, curDir, outDir = pr.GetValue previous, pr.GetValue current, pr.GetValue out
        let prevFile, curFile = pr.GetValue previousImportance, pr.GetValue currentImportance
        let full (p: string) = Path.GetFullPath(p).TrimEnd(Path.DirectorySeparatorChar)
        if full outDir = full prevDir || full outDir = full curDir then
            raise (ArgumentException $"--out {outDir} would replace an input checkpoint: choose another folder")
        let prevIsAdapter, curIsAdapter = isAdapter "--previous" prevDir, isAdapter "--current" curDir
        if prevIsAdapter <> curIsAdapter then
            raise (ArgumentException $"--previous {prevDir} and --current {curDir} must both be model folders or both LoRA adapter folders")
        let topFraction = pr.GetValue top
        if not (topFraction >= 0.0 && topFraction <= 1.0) then raise (ArgumentException $"--top must lie in [0, 1], got {topFraction}")
        // The partitioner: --units, else the one both profiles record.
        let prevPartitioner, _ = profileHeader prevFile
        let curPartitioner, _ = profileHeader curFile
        let partitionerName =
            match pr.GetValue units with
            | null | "" ->
                if prevPartitioner <> curPartitioner then
                    raise (InvalidDataException
                        $"the importance profiles use different skill units: {prevFile} was computed with partitioner {prevPartitioner}, {curFile} with {curPartitioner}")
                prevPartitioner
            | u -> u
        let partitioner = SkillUnitPartitioners.ByName partitionerName
        let parameters = match pr.GetValue ruleParams with null | "" -> [] | t -> parseParams t
        let theRule =
            let name = match pr.GetValue rule with null | "" -> (if partitionerName = LoraRank1Partitioner.PartitionerName then "adaptive" else "static") | r -> r
            let tauResult = pr.GetResult tau
            ruleOf name parameters (pr.GetValue tau) (not (isNull tauResult) && not tauResult.Implicit)
        let gammaValue = pr.GetValue gamma
        if not (gammaValue >= 0.0 && gammaValue <= 1.0) then raise (ArgumentException $"--gamma must lie in [0, 1], got {gammaValue}")
        let scope =
            match (pr.GetValue normalisation).Trim().ToLowerInvariant() with
            | "global" -> NormalisationScope.Global
            | "layer" -> NormalisationScope.Layer
            | "module-type" -> NormalisationScope.ModuleType
            | other -> raise (ArgumentException $"--normalisation must be global, layer or module-type, not \"{other}\"")
        let options = KifOptions(Partitioner = partitioner, TopFraction = topFraction, Gamma = gammaValue, Rule = theRule, Normalisation = scope)
        let s = pr.GetValue seed
        let dev = device (pr.GetValue deviceOption)
        let inputs = [ "previous", prevDir; "current", curDir; "previous_importance", prevFile; "current_importance", curFile ]
        let tmp = Directory.CreateTempSubdirectory "klf-fuse-"
        try
            let profilePath = Path.Combine(tmp.FullName, "importance.json")
            if not curIsAdapter then
                // θ̄_{k−1}: load, copy the units' parameters, free the model; then θ_k, fused in place.
                let prevModel = loadChecked prevDir dev
                let prevConfig, prevMap, snapshot =
                    try
                        let map = partitioner.Partition prevModel
                        requireUnits map prevDir
                        prevModel.ConfigJson(), map, ParameterSnapshot.Take(prevModel, unitParameters map)
                    finally prevModel.Dispose()
                use snapshot = snapshot
                let model = loadChecked curDir dev
                try
                    match configDifferences prevConfig (model.ConfigJson()) with
                    | [] -> ()
                    | keys -> raise (InvalidDataException $"""{curDir}: not the architecture of {prevDir}: the model configs differ in {String.Join(", ", keys)}""")
                    let map = partitioner.Partition model
                    if map.Fingerprint <> prevMap.Fingerprint then
                        raise (InvalidDataException $"{curDir}: its skill units (map {map.Fingerprint}) differ from those of {prevDir} (map {prevMap.Fingerprint})")
                    let outcome = fuseInPlace options (int64 s) prevFile curFile map snapshot model
                    outcome.Accumulated.Save profilePath
                    let tok = if List.isEmpty (tokenizerFiles curDir) then null else Klf.Tokenizers.TokenizerLoader.FromFolder curDir
                    Checkpoint.Save(model, outDir, extraJson outcome options parameters s inputs, tokenizerFiles curDir @ [ profilePath ], tokenizer = tok) |> ignore
                    printSummary outcome topFraction clock.Elapsed
                    printfn "saved fused checkpoint to %s (with importance.json: %s)" (Path.GetFullPath outDir)
                        (String.Join(" -> ", [ for h in outcome.Accumulated.History -> h.Task ]))
                finally model.Dispose()
            else
                // LoRA: one base model; the previous adapter is loaded and copied, then the current one
                // is loaded over it and fused in place; the fused adapter is saved in PEFT layout.
                if adapterShape prevDir <> adapterShape curDir then
                    raise (InvalidDataException $"{curDir}: adapter ({adapterShape curDir}) differs from {prevDir} ({adapterShape prevDir})")
                let baseDir =
                    match pr.GetValue baseModel with
                    | null | "" ->
                        let config = JsonNode.Parse(File.ReadAllText(Path.Combine(curDir, "adapter_config.json")))
                        match config["base_model_name_or_path"] with
                        | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String && Directory.Exists(v.GetValue<string>()) -> v.GetValue<string>()
                        | _ -> raise (ArgumentException $"{curDir}: the adapter's base model is not a folder here: give --base DIR")
                    | b -> b
                let model = loadChecked baseDir dev
                try
                    let lora = Lora.LoadAdapter(model.Module, prevDir)
                    let map = partitioner.Partition model
                    requireUnits map prevDir
                    use snapshot = ParameterSnapshot.Take(model, unitParameters map)
                    lora.LoadAdapter(curDir, "default")
                    let outcome = fuseInPlace options (int64 s) prevFile curFile map snapshot model
                    let extra = extraJson outcome options parameters s (inputs @ [ "base", baseDir ])
                    let taskType = if model.Family = ModelFamily.DecoderOnly then "CAUSAL_LM" else "SEQ_2_SEQ_LM"
                    AtomicFile.WriteFolder(outDir, fun dir ->
                        lora.SaveAdapter(dir, "default", taskType, Path.GetFullPath baseDir)
                        for f in tokenizerFiles curDir do File.Copy(f, Path.Combine(dir, Path.GetFileName f))
                        outcome.Accumulated.Save(Path.Combine(dir, "importance.json"))
                        AtomicFile.WriteAllText(Path.Combine(dir, "fusion.json"), extra.ToJsonString(JsonSerializerOptions(WriteIndented = true))))
                    printSummary outcome topFraction clock.Elapsed
                    printfn "saved fused LoRA adapter to %s (with importance.json and fusion.json)" (Path.GetFullPath outDir)
                finally model.Dispose()
        finally
            try tmp.Delete true with _ -> ()
        0)
