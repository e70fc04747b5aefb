namespace Klf.Pipelines

open System
open TorchSharp
open Klf.Models
open Klf.Tokenizers
open Klf.Adapters
open Klf.Training
open Klf.Checkpoints

/// Training for F# pipelines.
[<RequireQualifiedAccess>]
module Train =
    /// Default options with a batch size, a step count and a peak learning rate.
    let options (batchSize: int) (steps: int) (learningRate: float) : TrainerOptions =
        TrainerOptions(BatchSize = batchSize, MaxSteps = steps, Optimizer = OptimizerOptions(LearningRate = learningRate))

    /// Trains on examples; returns one metrics record per optimizer step.
    let fit (options: TrainerOptions) (examples: LmExample[]) (model: ILanguageModel) : StepMetrics[] =
        Trainer.Fit(model, examples, options) |> Array.ofSeq

    /// Mean evaluation loss over the answer tokens of examples.
    let evalLoss (examples: LmExample[]) (model: ILanguageModel) : float = Trainer.EvaluateLoss(model, examples)
