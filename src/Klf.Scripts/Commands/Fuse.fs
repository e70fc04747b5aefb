/// `klf fuse`: offline KIF fusion of two checkpoints (the model before a task and after it) with
/// their importance profiles, into a new checkpoint plus the accumulated importance profile. The
/// flags become a `CheckpointFusionRequest`; `CheckpointFusion.Run` (Klf.Core) does the work.
module Klf.Cli.Fuse

open System
open System.Collections.Generic
open System.Diagnostics
open System.Globalization
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
let private out = req<string> "--out" "Output folder: the fused checkpoint (manifest with the fusion's settings and counts), tokenizer files and importance.json." |> check folderToWrite
let private ruleList () = String.Join(", ", Fusion.ruleNames ())
let private rule =
    opt<string> "--rule" $"Fusion rule: static, adaptive or any registered rule ({ruleList ()}); default static, adaptive for lora-rank1 units." None
let private partitionerList = String.Join(", ", SkillUnitPartitioners.Names)
let private units = opt<string> "--units" $"Skill-unit partitioner ({partitionerList}); default: the one recorded in the profiles." None
let private top = opt<float> "--top" "Fraction of units counted important for each distribution (strictly above its (1 − F) percentile)." (Some 0.2) |> check (within 0.0 1.0)
let private tau = opt<float> "--tau" "τ of the adaptive rule (the same as --param tau=X)." (Some 0.25) |> check (within 0.0 1.0)
let private ruleParams = opt<string> "--param" "Parameters of the rule, comma-separated key=value (e.g. shared=0.5,neither=1 for the static rule); klf list shows each rule's parameters." None
let private gamma = opt<float> "--gamma" "γ of the accumulation Â_k = normalise(γ·Â_{k−1} + (1−γ)·Ŝ_k)." (Some 0.7) |> check (within 0.0 1.0)
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

let private invariant (x: float) = x.ToString("0.####", CultureInfo.InvariantCulture)

/// Prints units per category with their λ, the λ counts and the time taken.
let private printSummary (result: CheckpointFusionResult) (topFraction: float) (total: TimeSpan) =
    let r = result.Report
    printfn "fused with %s: %d units (partitioner %s, map %s), top %s%% important per distribution"
        r.Rule result.Map.Count result.Map.Partitioner result.Map.Fingerprint (invariant (100.0 * topFraction))
    printfn "  %-14s %6s  %s" "category" "units" "λ"
    for struct (c, name) in CheckpointFusion.CategoryNames do
        let ls = r.Units |> Seq.filter (fun u -> u.Category = c) |> Seq.map (fun u -> u.Lambda) |> Array.ofSeq
        let lambda =
            if ls.Length = 0 then "-"
            elif ls |> Array.exists Double.IsNaN then "n/a"
            elif Array.min ls = Array.max ls then invariant ls[0]
            else $"{invariant (Array.min ls)}..{invariant (Array.max ls)} (mean {invariant (Array.average ls)})"
        printfn "  %-14s %6d  %s" (name.Replace('_', '-')) ls.Length lambda
    match CheckpointFusion.LambdaCounts r with
    | null -> ()
    | counts -> printfn "λ counts: %s" (String.Join(", ", [ for struct (l, c) in counts -> $"λ={invariant l}: {c}" ]))
    printfn "fusion %.1f ms for %d elements; total %.1f s" r.Elapsed.TotalMilliseconds r.ElementCount total.TotalSeconds

let cmd =
    command "fuse" "KIF fusion of two checkpoints (before and after a task) with their importance profiles: unit categories from the top fractions, a fusion rule per unit, a new checkpoint with the accumulated importance."
        [ previous; current; previousImportance; currentImportance; out; rule; ruleParams; units; top; tau; gamma; normalisation; seed; baseModel; deviceOption ] (fun pr ->
        Klf.Native.TorchNative.EnsureLoaded()
        let clock = Stopwatch.StartNew()
        let prevDir, curDir, outDir = pr.GetValue previous, pr.GetValue current, pr.GetValue out
        let prevFile, curFile = pr.GetValue previousImportance, pr.GetValue currentImportance
        let topFraction = pr.GetValue top
        if not (topFraction >= 0.0 && topFraction <= 1.0) then raise (ArgumentException $"--top must lie in [0, 1], got {topFraction}")
        // The partitioner: --units, else the one both profiles record.
        let partitionerName =
            match pr.GetValue units with
            | null | "" -> CheckpointFusion.RecordedPartitioner(prevFile, curFile)
            | u -> u
        let partitioner = SkillUnitPartitioners.ByName partitionerName
        let parameters = match pr.GetValue ruleParams with null | "" -> [] | t -> parseParams t
        let theRule =
            let name = match pr.GetValue rule with null | "" -> CheckpointFusion.DefaultRuleFor partitionerName | r -> r
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
        let request =
            CheckpointFusionRequest(
                Previous = prevDir, Current = curDir, PreviousImportance = prevFile, CurrentImportance = curFile, Output = outDir,
                Options = KifOptions(Partitioner = partitioner, TopFraction = topFraction, Gamma = gammaValue, Rule = theRule, Normalisation = scope),
                Seed = int64 (pr.GetValue seed),
                BaseModel = pr.GetValue baseModel,
                RuleParameters = [| for k, v in parameters -> KeyValuePair(k, v) |],
                Device = device (pr.GetValue deviceOption))
        let result = CheckpointFusion.Run request
        printSummary result topFraction clock.Elapsed
        if result.IsAdapter then
            printfn "saved fused LoRA adapter to %s (with %s and %s)" result.Output CheckpointFusion.ImportanceFile CheckpointFusion.AdapterRecordFile
        else
            printfn "saved fused checkpoint to %s (with %s: %s)" result.Output CheckpointFusion.ImportanceFile
                (String.Join(" -> ", [ for h in result.Accumulated.History -> h.Task ]))
        0)
