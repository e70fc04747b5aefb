namespace Klf.Pipelines

open Klf.Models
open Klf.Tokenizers
open Klf.Training

/// Evaluating a model on a task's examples: batched greedy generation (Prompt.generate, with the
/// KV cache by default) scored by a Metric, in percent. Encoder-only models choose among each example's
/// choices instead (Prompt.choose); the chosen label is scored the same way.
[<RequireQualifiedAccess>]
module Evaluate =

    /// Per-task cap on generated tokens: the longest reference answer (Output) in tokens, plus one
    /// (room for the end-of-sequence token or one extra piece). 1 when there are no examples.
    let maxNewTokensFor (tok: ITextTokenizer) (examples: Example[]) : int =
        let longest = examples |> Array.fold (fun m e -> max m (tok.Encode(e.Output).Length)) 0
        longest + 1

    /// Greedy answers of the model to the examples' inputs, decoded to text, with explicit
    /// generation options (batch size, KV cache on or off, cap on new tokens).
    let predictionsWith (model: ILanguageModel) (tok: ITextTokenizer) (options: GenerationOptions) (examples: Example[]) : string[] =
        if model.Family = ModelFamily.EncoderOnly then Prompt.choose model tok PromptTruncation.DropMiddle 0 options.BatchSize examples
        else Prompt.generate model tok options (examples |> Array.map (fun e -> e.Input))

    /// Score (percent) of the model on the examples with explicit generation options: the mean of
    /// the metric's per-example scores of the generated answers against the examples' Outputs.
    let taskWith (model: ILanguageModel) (tok: ITextTokenizer) (options: GenerationOptions) (metric: Metric) (examples: Example[]) : float =
        let predictions = predictionsWith model tok options examples
        Scoring.score metric predictions (examples |> Array.map (fun e -> e.Output))

    /// Score (percent) of the model on the examples: batched greedy generation with the KV cache,
    /// at most `maxNewTokens` new tokens per answer (see maxNewTokensFor), then Scoring.score.
    /// Raises ArgumentException when there are no examples.
    let task (model: ILanguageModel) (tok: ITextTokenizer) (metric: Metric) (maxNewTokens: int) (examples: Example[]) : float =
        taskWith model tok (GenerationOptions(MaxNewTokens = maxNewTokens, UseCache = true)) metric examples

    /// Greedy answers (at most `maxNewTokens` new tokens, KV cache) to prompts cut like training cuts
    /// them (`Prompt.truncate` by the trainer's Truncation to its MaxLength), in example order; an
    /// encoder-only model's chosen answers.
    let predictionsWithin (options: TrainerOptions) (model: ILanguageModel) (tok: ITextTokenizer) (maxNewTokens: int) (examples: Example[]) : string[] =
        if model.Family = ModelFamily.EncoderOnly then Prompt.choose model tok options.Truncation options.MaxLength 32 examples else
        let prompts = examples |> Array.map (fun e -> Prompt.ids model.Family tok e.Input |> Prompt.truncate model.Family options.Truncation options.MaxLength maxNewTokens)
        Prompt.generateIds model tok (GenerationOptions(MaxNewTokens = maxNewTokens, UseCache = true)) prompts

    /// As `task`, with prompts cut like training cuts them (`predictionsWithin`), so a long input is
    /// scored on what the model was trained to read.
    let taskWithin (options: TrainerOptions) (model: ILanguageModel) (tok: ITextTokenizer) (metric: Metric) (maxNewTokens: int) (examples: Example[]) : float =
        if examples.Length = 0 then invalidArg "examples" "no examples to evaluate"
        let predictions = predictionsWithin options model tok maxNewTokens examples
        Scoring.score metric predictions (examples |> Array.map (fun e -> e.Output))
