namespace Klf.Pipelines

open Klf.Training
open Klf.Training.Regularizers

/// Strategies that protect earlier tasks by a penalty on the weights: EWC (O-LoRA's penalty is in `IncrementalLora`).
[<RequireQualifiedAccess>]
module Regularizers =
    let private plain = StrategyRun.plain

    /// EWC with full fine-tuning: after each task the empirical diagonal Fisher over `samples`
    /// seeded training examples (batches of one) is added to the accumulated Fisher and θ* is set to
    /// the current weights; later tasks add the ExtraLoss (λ/2) · Σ F · (θ − θ*)² (see `ElasticWeightConsolidation`).
    let ewcWith (lambda: float) (samples: int) : Strategy =
        { Name = "ewc"
          Start = fun model ->
            let ewc = new ElasticWeightConsolidation(model, lambda, samples, 17)
            { plain with
                BeginTask = fun _ ->
                    let hooks = StepHooks()
                    if ewc.Fisher.Count > 0 then hooks.ExtraLosses.Add(fun _ -> ewc.Penalty())
                    hooks
                AfterFit = fun f -> ewc.Consolidate(f.Train, f.Options)
                SaveState = ewc.Save
                LoadState = ewc.Load
                Dispose = fun () -> ewc.Dispose() } }

    /// EWC with the project's choices λ = 5000 and 32 Fisher examples per task (no KIF reference fixes them).
    let ewc : Strategy = ewcWith ElasticWeightConsolidation.DefaultLambda ElasticWeightConsolidation.DefaultSamples
