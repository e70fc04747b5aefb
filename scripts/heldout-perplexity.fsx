// The held-out loss and perplexity of a model on the pre-training corpus, measured exactly as
// `klf pretrain` measures it: the corpus's last --heldout-fraction of lines (default 1 %), each
// BOS + pieces + EOS, concatenated; at most --windows consecutive windows of --seq-len tokens,
// next-token loss on every token. For a model that went through later stages (the embedded
// model's multiple-choice stages) it says how much of its language modelling they kept.
//
//   scripts/pack.sh && dotnet fsi scripts/heldout-perplexity.fsx --model DIR [--corpus FILE]
//                         [--heldout-fraction 0.01] [--seq-len 256] [--windows 256] [--batch 8]
//
// Defaults: --corpus .cache/corpus/corpus.txt (scripts/fetch-corpus.sh). The tokenizer is the
// model folder's. Klf.Pipelines comes from the local feed scripts/pack.sh writes.
#r "nuget: Klf.Pipelines"
#load "lib/ScriptOptions.fsx"

open System
open System.IO
open Klf.Checkpoints
open Klf.Pipelines
open ScriptOptions
open Klf.Tokenizers

let repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))
let modelDir =
    match option "--model" "" args with
    | "" -> eprintfn "heldout-perplexity: give --model DIR"; exit 2
    | m -> Path.GetFullPath m
let corpus = Path.GetFullPath(option "--corpus" (Path.Combine(repo, ".cache", "corpus", "corpus.txt")) args)
let fraction = float (option "--heldout-fraction" "0.01" args)
let seqLen = int (option "--seq-len" "256" args)
let windows = int (option "--windows" "256" args)
let batch = int (option "--batch" "8" args)

try
    Klf.Native.TorchNative.EnsureLoaded()
    let tok = TokenizerLoader.FromFolder modelDir
    let streams = Pretrain.readCorpus corpus |> Pretrain.encodeLines tok |> Pretrain.split fraction
    let model = ModelFolder.Load modelDir
    try
        let loss = Pretrain.evaluate seqLen batch windows streams.HeldOut model
        printfn "%s on %s: %d held-out tokens (%d lines), %d windows of %d: loss %.4f nats/token, perplexity %.2f"
            modelDir corpus streams.HeldOut.Length streams.HeldOutLines windows seqLen loss (Math.Exp loss)
    finally
        model.Dispose()
with e ->
    eprintfn "heldout-perplexity: %s" e.Message
    exit 1
