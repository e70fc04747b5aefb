namespace Klf.Pipelines

open System
open TorchSharp
open Klf.Models
open Klf.Tokenizers
open Klf.Adapters
open Klf.Training
open Klf.Checkpoints

/// Tokenizers for F# pipelines.
[<RequireQualifiedAccess>]
module Tokenizer =
    /// Loads the tokenizer of a model folder (SentencePiece or GPT-2-style BPE).
    let load (folder: string) : ITextTokenizer = TokenizerLoader.FromFolder folder

    /// Token ids of a text, without special tokens.
    let encode (tok: ITextTokenizer) (text: string) : int[] = tok.Encode text

    /// Text of token ids, special tokens skipped.
    let decode (tok: ITextTokenizer) (ids: int[]) : string = tok.Decode ids
