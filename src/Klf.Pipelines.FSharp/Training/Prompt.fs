namespace Klf.Pipelines

open Klf.Models
open Klf.Tokenizers
open Klf.Training

/// Turning text examples into token ids for a model family, the same way for training and generation.
/// Decoder-only: BOS (when the tokenizer has one) + input, then the answer (batching appends EOS and
/// takes the loss on the answer only). Encoder-decoder: input + EOS to the encoder, answer + EOS as labels.
/// Encoder-only: the input and each of the example's choices framed by the tokenizer (BOS … EOS, BERT's
/// [CLS] … [SEP]); the answer is the choice equal to the output.
[<RequireQualifiedAccess>]
module Prompt =

    /// Prompt ids of an input as the model sees them at generation (or choosing) time.
    let ids (family: ModelFamily) (tok: ITextTokenizer) (input: string) : int[] =
        match family with
        | ModelFamily.DecoderOnly -> tok.Encode(input, addBos = tok.BosId.HasValue)
        | ModelFamily.EncoderOnly -> tok.Encode(input, addBos = tok.BosId.HasValue, addEos = true)
        | _ -> tok.Encode(input, addEos = true)

    /// The index of an example's output among its choices (trimmed, compared lower-cased, as exact match
    /// compares). Raises ArgumentException naming the example when it has no choices or the output is not one.
    let answerIndex (e: Example) : int =
        if e.Choices.Length = 0 then
            raise (System.ArgumentException $"example {e.Id}: an encoder-only model chooses among an example's choices, and it has none (the examples of a classification task get its label set from Task.withChoices; a generation task cannot be scored this way)")
        let norm (s: string) = (if isNull s then "" else s).Trim().ToLowerInvariant()
        match e.Choices |> Array.tryFindIndex (fun c -> norm c = norm e.Output) with
        | Some k -> k
        | None -> raise (System.ArgumentException $"example {e.Id}: its output \"{e.Output}\" is not one of its {e.Choices.Length} choices")

    /// A training example: prompt ids and answer ids (without EOS; batching appends it). Encoder-only:
    /// the framed input, the framed answer and the framed choices.
    let example (family: ModelFamily) (tok: ITextTokenizer) (e: Example) : LmExample =
        match family with
        | ModelFamily.DecoderOnly -> LmExample(tok.Encode(e.Input, addBos = tok.BosId.HasValue), tok.Encode e.Output)
        | ModelFamily.EncoderOnly ->
            let k = answerIndex e
            let choices = e.Choices |> Array.map (ids family tok)
            LmExample(ids family tok e.Input, choices[k], choices)
        // Batching appends EOS to encoder-decoder inputs itself.
        | _ -> LmExample(tok.Encode e.Input, tok.Encode e.Output)

    /// Encodes many examples.
    let examples (family: ModelFamily) (tok: ITextTokenizer) (es: Example seq) : LmExample[] =
        es |> Seq.map (example family tok) |> Array.ofSeq

    /// Prompt ids cut the way training cuts them (`Batching` with the same `PromptTruncation`): a
    /// decoder-only prompt keeps `maxLength − maxNewTokens` tokens, so that prompt and answer fit in
    /// `maxLength`; an encoder-decoder input (ending with EOS) keeps `maxLength` tokens, its EOS last.
    /// An encoder-only input keeps its first and last token (`Batching.EncoderSequence`). `maxLength` ≤ 0
    /// keeps everything.
    let truncate (family: ModelFamily) (truncation: PromptTruncation) (maxLength: int) (maxNewTokens: int) (ids: int[]) : int[] =
        if maxLength <= 0 then ids
        elif family = ModelFamily.EncoderOnly then Batching.EncoderSequence(ids, maxLength, truncation)
        elif family = ModelFamily.DecoderOnly then PromptCut.Apply(ids, max 1 (maxLength - maxNewTokens), truncation)
        elif ids.Length > maxLength then
            // The encoder input already ends with EOS; cut the prompt before it, as Batching does.
            Array.append (PromptCut.Apply(ids[.. ids.Length - 2], max 0 (maxLength - 1), truncation)) [| ids[ids.Length - 1] |]
        else ids

    /// Greedy answers to prompts given as ids (batched, KV cache per the options).
    let generateIds (model: ILanguageModel) (tok: ITextTokenizer) (options: GenerationOptions) (prompts: int[][]) : string[] =
        model.GenerateGreedy(prompts, options) |> Array.map (fun out -> tok.Decode out)

    /// Greedy answers to inputs, decoded to text (batched, KV cache per the options).
    let generate (model: ILanguageModel) (tok: ITextTokenizer) (options: GenerationOptions) (inputs: string seq) : string[] =
        let prompts = inputs |> Seq.map (ids model.Family tok) |> Array.ofSeq
        model.GenerateGreedy(prompts, options) |> Array.map (fun out -> tok.Decode out)

    /// The longest input a model reads: its config's `max_position_embeddings` (512 when it names none).
    let positions (model: ILanguageModel) : int =
        match model.ConfigJson()["max_position_embeddings"] with
        | null -> 512
        | n -> n.GetValue<int>()

    /// The choice the model picks for each example (encoder-only models, `IChoiceModel`), input and choices
    /// cut to `maxLength` as training cuts them (≤ 0: to the model's `positions`), in example order.
    let choose (model: ILanguageModel) (tok: ITextTokenizer) (truncation: PromptTruncation) (maxLength: int) (batchSize: int) (examples: Example[]) : string[] =
        let chooser =
            match box model with
            | :? IChoiceModel as c -> c
            | _ -> invalidArg "model" $"a {model.ModelType} model does not choose among answers"
        let cut = truncate model.Family truncation (if maxLength > 0 then min maxLength (positions model) else positions model) 0
        let encoded = System.Collections.Generic.Dictionary<string, int[]>()
        let choiceIds (c: string) =
            match encoded.TryGetValue c with
            | true, v -> v
            | _ -> let v = cut (ids model.Family tok c) in encoded[c] <- v; v
        let prompts = examples |> Array.map (fun e -> cut (ids model.Family tok e.Input))
        let choices = examples |> Array.map (fun e -> (answerIndex e |> ignore; e.Choices |> Array.map choiceIds))
        chooser.Choose(prompts, choices, batchSize) |> Array.mapi (fun i k -> examples[i].Choices[k])
