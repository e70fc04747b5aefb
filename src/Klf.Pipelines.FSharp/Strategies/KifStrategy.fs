namespace Klf.Pipelines

open System.IO
open Klf.Training
open Klf.Kif
open Klf.Training.Regularizers

/// KIF strategies: the reference and its presets (`KifSettings`), built by `kifWith`.
[<RequireQualifiedAccess>]
module KifStrategy =
    let private plain = StrategyRun.plain

    /// A KIF strategy named `name` from its settings: the session of `KifSettings.toOptions`, a LoRA
    /// adapter with the orthogonality term when the settings have one, and the replay memory when
    /// `Memory` > 0.
    let kifWith (name: string) (settings: KifSettings) : Strategy =
        let options = KifSettings.toOptions settings
        { Name = name
          Start = fun model ->
            let lora = settings.Lora |> Option.map (fun l -> LoraAdapter.applyWith (LoraSettings.config model "default" l) model)
            let session = new KifSession(model, options)
            let run =
                { plain with
                    BeginTask = fun t ->
                        let hooks = session.BeginTask t.Name
                        match lora with
                        | Some l when settings.Orthogonality > 0.0 -> Orthogonality.AddTo(hooks, l, "default", settings.Orthogonality)
                        | _ -> hooks
                    EndTask = fun _ -> session.EndTask() |> ignore
                    SaveState = session.SaveState
                    LoadState = session.RestoreState
                    WriteOutputs = fun dir -> Kif.saveLayerImportance (Path.Combine(dir, Kif.LayerImportanceFile)) (Kif.importanceByLayer session)
                    Dispose = session.Dispose }
            if settings.Memory > 0.0 then Replay.attach settings.MemorySeed settings.Memory run else run }

    /// KIF with full fine-tuning and the reference settings (`KifSettings.reference`).
    let kif : Strategy = kifWith "kif" KifSettings.reference

    /// `kif-neuron` (`KifSettings.neuron`): neuron-16 and head units, per-module-type normalisation,
    /// λ = 1 for units important to neither distribution.
    let kifNeuron : Strategy = kifWith "kif-neuron" KifSettings.neuron

    /// KIF-LoRA (`KifSettings.lora r`): rank-1 units of a LoRA of rank r, second-order importance,
    /// the adaptive rule and the orthogonality term (λ_orth = 0.1).
    let kifLora (r: int) : Strategy = kifWith "kif-lora" (KifSettings.lora r)

    /// KIF (reference settings) with the replay memory; identification and fusion are unchanged.
    let kifReplay : Strategy = kifWith "kif-replay" KifSettings.replay
