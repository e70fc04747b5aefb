namespace Klf.Pipelines

open System
open Klf.Models
open Klf.Tokenizers
open Klf.Training

/// What one fine-tuning run measured.
type FinetuneReport =
    { Steps: StepMetrics[]
      TrainLossBefore: float
      TrainLossAfter: float
      HeldOutLossBefore: float
      HeldOutLossAfter: float
      TokensPerSecond: float
      /// With best-validation: every held-out loss measured during training and the step kept.
      Validation: ValidationPoint list
      Kept: ValidationPoint option }

/// Fine-tuning a model on one task's examples, with evaluation losses before and after.
[<RequireQualifiedAccess>]
module Finetune =

    /// Exact match after trimming and lower-casing, in percent.
    let exactMatch (predictions: string[]) (references: string[]) : float =
        if predictions.Length <> references.Length then invalidArg "predictions" "one prediction per reference"
        if references.Length = 0 then 0.0
        else
            let norm (s: string) = s.Trim().ToLowerInvariant()
            let hits = Array.map2 (fun p r -> if norm p = norm r then 1 else 0) predictions references |> Array.sum
            100.0 * float hits / float references.Length

    /// As `runWith`, and with `bestEvery` > 0 a best-validation checkpoint on the held-out examples:
    /// their loss is measured every `bestEvery` steps and at the end, and the model ends with the
    /// weights of the lowest one.
    let rec runBest (bestEvery: int) (hooks: StepHooks) (model: ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions)
                    (onStep: StepMetrics -> unit) (train: Example[]) (heldOut: Example[]) : FinetuneReport =
        let enc = Prompt.examples model.Family tok
        let trainEx, heldEx = enc train, enc heldOut
        let evalTrain = trainEx[.. min (trainEx.Length - 1) 63]
        let evalLoss (xs: LmExample[]) =
            if xs.Length = 0 then nan else Trainer.EvaluateLoss(model, xs, 16, options.MaxLength, options.MaxTargetLength, options.Truncation)
        let tb, hb = evalLoss evalTrain, evalLoss heldEx
        if bestEvery > 0 && heldEx.Length = 0 then invalidArg "heldOut" "best-validation needs held-out examples"
        let validation = if bestEvery > 0 then ValidationSet(heldEx, bestEvery) else null
        let result = Trainer.Run(model, trainEx, options, FitExtras(hooks, Action<StepMetrics>(onStep), validation))
        let steps = Array.ofSeq result.Steps
        let secs = steps |> Array.sumBy (fun s -> s.Elapsed.TotalSeconds)
        let tokens = steps |> Array.sumBy (fun s -> float s.ProcessedTokens)
        { Steps = steps
          TrainLossBefore = tb
          TrainLossAfter = evalLoss evalTrain
          HeldOutLossBefore = hb
          HeldOutLossAfter = evalLoss heldEx
          TokensPerSecond = if secs > 0.0 then tokens / secs else 0.0
          Validation = List.ofSeq result.Validation
          Kept = Option.ofObj result.Kept }

    /// As `run`, with step hooks for the trainer (e.g. a KifSession's importance tracking from
    /// `BeginTask`); null for none. The hooks see the training steps only, not the loss evaluations.
    and runWith (hooks: StepHooks) (model: ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (onStep: StepMetrics -> unit)
                (train: Example[]) (heldOut: Example[]) : FinetuneReport =
        runBest 0 hooks model tok options onStep train heldOut

    /// Trains on `train`, measuring the evaluation loss on (a prefix of) `train` and on `heldOut`
    /// before and after. `onStep` sees each step's metrics.
    let run (model: ILanguageModel) (tok: ITextTokenizer) (options: TrainerOptions) (onStep: StepMetrics -> unit)
            (train: Example[]) (heldOut: Example[]) : FinetuneReport =
        runWith null model tok options onStep train heldOut
