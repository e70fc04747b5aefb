namespace Klf.Pipelines

open Klf.Models
open Klf.Tokenizers
open Klf.Training

/// Turning text examples into token ids for a model family, the same way for training and generation.
/// Decoder-only: BOS (when the tokenizer has one) + input, then the answer (batching appends EOS and
/// takes the loss on the answer only). Encoder-decoder: input + EOS to the encoder, answer + EOS as labels.
[<RequireQualifiedAccess>]
module Prompt =

    /// Prompt ids of an input as the model sees them at generation time.
    let ids (family: ModelFamily) (tok: ITextTokenizer) (input: string) : int[] =
        match family with
        | ModelFamily.DecoderOnly -> tok.Encode(input, addBos = tok.BosId.HasValue)
        | _ -> tok.Encode(input, addEos = true)

    /// A training example: prompt ids and answer ids (without EOS; batching appends it).
    let example (family: ModelFamily) (tok: ITextTokenizer) (e: Example) : LmExample =
        match family with
        | ModelFamily.DecoderOnly -> LmExample(tok.Encode(e.Input, addBos = tok.BosId.HasValue), tok.Encode e.Output)
        // Batching appends EOS to encoder-decoder inputs itself.
        | _ -> LmExample(tok.Encode e.Input, tok.Encode e.Output)

    /// Encodes many examples.
    let examples (family: ModelFamily) (tok: ITextTokenizer) (es: Example seq) : LmExample[] =
        es |> Seq.map (example family tok) |> Array.ofSeq

    /// Prompt ids cut the way training cuts them (`Batching` with the same `PromptTruncation`): a
    /// decoder-only prompt keeps `maxLength − maxNewTokens` tokens, so that prompt and answer fit in
    /// `maxLength`; an encoder-decoder input (ending with EOS) keeps `maxLength` tokens, its EOS last.
    /// `maxLength` ≤ 0 keeps everything.
    let truncate (family: ModelFamily) (truncation: PromptTruncation) (maxLength: int) (maxNewTokens: int) (ids: int[]) : int[] =
        if maxLength <= 0 then ids
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
