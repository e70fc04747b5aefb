namespace Klf.Pipelines

open System
open System.IO
open Klf.Training
open Klf.Training.Regularizers

/// The LoRA-based strategies that add an adapter per task: IncLoRA and O-LoRA.
[<RequireQualifiedAccess>]
module IncrementalLora =
    let private plain = StrategyRun.plain

    /// Name of the adapter IncLoRA and O-LoRA add for task k (0-based): "task{k}".
    let adapterName (k: int) : string = $"task{k}"

    /// Shared by IncLoRA and O-LoRA: at each task a new adapter named task0, task1, …; every adapter
    /// stays active, only the new one trains.
    let private incremental (name: string) (lora: LoraSettings) (lambda1: float option) : Strategy =
        { Name = name
          Start = fun model ->
            let mutable k = 0
            let countFile dir = Path.Combine(dir, "adapters.txt")
            { plain with
                SaveState = fun dir -> Klf.Formats.AtomicFile.WriteAllText(countFile dir, string k)
                LoadState = fun dir ->
                    let path = countFile dir
                    let text = if File.Exists path then File.ReadAllText(path).Trim() else raise (FileNotFoundException($"{dir}: no {name} adapter count (adapters.txt)", path))
                    let n = match Int32.TryParse text with | true, v when v >= 0 -> v | _ -> raise (InvalidDataException $"{path}: expected an adapter count, found \"{text}\"")
                    for i in 0 .. n - 1 do
                        let l = LoraAdapter.applyWith (LoraSettings.config model (adapterName i) lora) model
                        l.SetTrainableAdapters(adapterName i)
                    k <- n
                BeginTask = fun _ ->
                    let current = adapterName k
                    let l = LoraAdapter.applyWith (LoraSettings.config model current lora) model
                    l.SetTrainableAdapters current
                    let previous = [ for i in 0 .. k - 1 -> adapterName i ]
                    k <- k + 1
                    let hooks = StepHooks()
                    match lambda1 with
                    | Some lam when not previous.IsEmpty -> hooks.ExtraLosses.Add(fun _ -> OLoraPenalty.Loss(l, current, previous, lam))
                    | _ -> ()
                    hooks } }

    /// IncLoRA with an adapter of the given settings per task (task0, task1, …), earlier ones frozen but active.
    let incLoraWith (lora: LoraSettings) : Strategy = incremental "inclora" lora None

    /// IncLoRA with rank r (α = 2r, dropout 0.05, on q and v).
    let incLora (r: int) : Strategy = incLoraWith (LoraSettings.ofRank r)

    /// O-LoRA: IncLoRA plus the ExtraLoss λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ| (`OLoraPenalty.Loss`).
    let oLoraWithSettings (lora: LoraSettings) (lambda1: float) : Strategy = incremental "olora" lora (Some lambda1)

    /// O-LoRA with rank r and λ1 (reference 0.5, `OLoraPenalty.DefaultLambda`).
    let oLoraWith (r: int) (lambda1: float) : Strategy = oLoraWithSettings (LoraSettings.ofRank r) lambda1

    /// O-LoRA with rank r and λ1 = 0.5.
    let oLora (r: int) : Strategy = oLoraWith r OLoraPenalty.DefaultLambda
