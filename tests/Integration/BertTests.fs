/// The BERT sentence encoder on its own: Hugging Face keys and shapes (approved snapshots), padding,
/// the similarity loss and the choice against naive references, checkpoints with sentence-transformers'
/// pooling files, the keys Hugging Face checkpoints carry, and bad inputs.
module BertTests

open System
open System.IO
open Expecto
open TorchSharp
open Klf.Checkpoints
open Klf.Models
open Klf.Models.Bert
open Klf.Training
open SentenceEncoderKit

let private withTemp (f: string -> unit) =
    let dir = Directory.CreateTempSubdirectory("klf-bert-").FullName
    try f dir finally Directory.Delete(dir, true)

/// Examples of three "tasks": their own label sets (two share one), token ids from the real tokenizer.
let private examples () =
    let tok = tokenizer miniLm
    let frame (s: string) = tok.Encode(s, addBos = true, addEos = true)
    let make (text: string) (labels: string list) (answer: string) =
        let choices = labels |> List.map frame |> Array.ofList
        LmExample(frame text, frame answer, choices)
    [| make "the team won the final in extra time" [ "sports"; "business"; "world" ] "sports"
       make "shares fell after the quarterly report" [ "sports"; "business"; "world" ] "business"
       make "a wonderful, moving film" [ "good"; "bad" ] "good"
       make "the plant flowers in spring and grows in wet soil" [ "plant"; "animal"; "village"; "album" ] "plant" |]

let private cosine (a: float32[]) (b: float32[]) =
    let dot = Array.fold2 (fun s (x: float32) (y: float32) -> s + float x * float y) 0.0 a b
    let norm (v: float32[]) = sqrt (v |> Array.sumBy (fun x -> float x * float x))
    dot / (norm a * norm b)

[<Tests>]
let tests =
    testSequenced <| testList "bert" [
        for preset in BertConfig.PresetNames do
            test $"{preset}: Hugging Face keys and shapes as approved, the state dict holds the parameters only" {
                use m = BertSentenceEncoder.Create(BertConfig.Preset preset, torch.META)
                LlamaTestKit.approveShapes preset m
                Expect.equal (m.state_dict().Keys |> Seq.toArray) (m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Seq.toArray) "no buffers"
                if preset = "minilm-l6" then
                    Expect.equal (m.parameters() |> Seq.sumBy (fun p -> p.numel())) 22565376L "all-MiniLM-L6-v2 without its pooler"
            }

        test "padding changes no embedding: a batch of different lengths equals each sentence alone (mean and CLS pooling)" {
            use m = tiny 3L
            let tok = tokenizer miniLm
            let ids = [| for s in [ "a short one"; "a somewhat longer sentence with more words in it"; "x" ] -> tok.Encode(s, addBos = true, addEos = true) |]
            for pooling in [ SentencePooling.Mean; SentencePooling.Cls ] do
                m.Pooling <- pooling
                let batched = m.Encode(ids, 3)
                let alone = ids |> Array.map (fun i -> (m.Encode([| i |], 1)).[0])
                for b, a in Array.zip batched alone do
                    Expect.isLessThan (Array.map2 (fun (x: float32) y -> abs (x - y)) b a |> Array.max) 1e-6f $"{pooling}: same embedding"
                    Expect.floatClose { absolute = 1e-5; relative = 1e-5 } (sqrt (b |> Array.sumBy (fun x -> float x * float x))) 1.0 "unit length"
        }

        test "the loss is the mean cross-entropy of 20 × cosine over each example's own choices (a naive reference)" {
            use m = tiny 4L
            m.eval()
            let ex = examples ()
            use batch = Batching.Build(ex, BatchLayout.For(m, 64))
            let loss = (use _ = torch.no_grad() in use l = m.ComputeLoss batch in l.ToDouble())
            let naive =
                ex |> Array.averageBy (fun e ->
                    let p = (m.Encode([| e.PromptIds |])).[0]
                    let logits = e.Choices |> Array.map (fun c -> 20.0 * cosine p ((m.Encode([| c |])).[0]))
                    let gold = e.Choices |> Array.findIndex (fun c -> c = e.AnswerIds)
                    let mx = Array.max logits
                    mx + log (logits |> Array.sumBy (fun z -> exp (z - mx))) - logits[gold])
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } loss naive "cross-entropy over the example's own choices"
            Expect.equal batch.Choices.Ids.shape[0] 9L "the batch holds each distinct choice once"
            Expect.equal (batch.Labels.data<int64>().ToArray()) [| 0L; 1L; 3L; 5L |] "answers as indices into the batch's choices"
            Expect.equal (batch.Choices.Allowed.sum().ToInt64()) 12L "each example may pick only its own choices"
        }

        test "Choose picks the most similar of each example's own choices" {
            use m = tiny 5L
            let ex = examples ()
            let picks = m.Choose([| for e in ex -> e.PromptIds |], [| for e in ex -> e.Choices |], 2)
            for e, k in Array.zip ex picks do
                let p = (m.Encode([| e.PromptIds |])).[0]
                let scores = e.Choices |> Array.map (fun c -> cosine p ((m.Encode([| c |])).[0]))
                Expect.equal k (Array.findIndex ((=) (Array.max scores)) scores) "argmax of the cosine"
            Expect.isTrue m.training "training mode restored"
        }

        test "save → load: weights bit-exact, pooling and normalisation kept in sentence-transformers' files, no generation config" {
            withTemp (fun dir ->
                use m = tiny 6L
                m.Pooling <- SentencePooling.Cls
                let tok = tokenizer miniLm
                let files = [ for f in [ "vocab.txt"; "tokenizer_config.json"; "special_tokens_map.json" ] -> Path.Combine(miniLm.Value, f) ]
                let manifest = Checkpoint.Save(m, Path.Combine(dir, "saved"), alsoCopy = files, tokenizer = tok)
                Expect.contains manifest.Files.Keys "1_Pooling/config.json" "the pooling config is hashed with the rest"
                Expect.isFalse (File.Exists(Path.Combine(dir, "saved", "generation_config.json"))) "an encoder does not generate"
                use back = ModelFolder.Load(Path.Combine(dir, "saved")) :?> BertSentenceEncoder
                Expect.equal back.Pooling SentencePooling.Cls "pooling read back"
                Expect.isTrue back.Normalize "Normalize read back"
                let ids = [| tok.Encode("the same sentence", addBos = true, addEos = true) |]
                Expect.equal (back.Encode ids) (m.Encode ids) "bit-exact embeddings"
                File.WriteAllText(Path.Combine(dir, "saved", "1_Pooling", "config.json"), """{"pooling_mode_max_tokens": true}""")
                let e = Expect.throwsC (fun () -> ModelFolder.Load(Path.Combine(dir, "saved"), verify = false) |> ignore) (fun e -> e.Message)
                Expect.stringContains e "pooling_mode_max_tokens" "an unsupported pooling is named")
        }

        test "a Hugging Face BERT checkpoint's pooler and position_ids load as ignored keys; another unknown key is refused" {
            withTemp (fun dir ->
                use m = tiny 7L
                Checkpoint.Save(m, dir) |> ignore
                let weights = Klf.Formats.SafeTensors.Load(Path.Combine(dir, HfWeights.SingleFile))
                weights["pooler.dense.weight"] <- torch.zeros(64, 64)
                weights["pooler.dense.bias"] <- torch.zeros(64)
                weights["embeddings.position_ids"] <- torch.arange(128L).unsqueeze(0)
                File.Delete(Path.Combine(dir, Checkpoint.ManifestFile))
                Klf.Formats.SafeTensors.Save(Path.Combine(dir, HfWeights.SingleFile), weights)
                use back = ModelFolder.Load dir :?> BertSentenceEncoder
                Expect.equal (back.named_parameters() |> Seq.length) (m.named_parameters() |> Seq.length) "the same parameters"
                weights["cls.predictions.bias"] <- torch.zeros(30522)
                Klf.Formats.SafeTensors.Save(Path.Combine(dir, HfWeights.SingleFile), weights)
                let e = Expect.throwsC (fun () -> ModelFolder.Load dir |> ignore) (fun e -> e.Message)
                Expect.stringContains e "cls.predictions.bias" "the unexpected key is named"
                for t in weights.Values do t.Dispose())
        }

        test "bad inputs: generation, an input beyond the positions, a batch without choices, an answer not among them, unsupported configs" {
            use m = tiny 8L
            Expect.throwsT<NotSupportedException> (fun () -> m.GenerateGreedy([| [| 101; 102 |] |], GenerationOptions()) |> ignore) "an encoder does not generate"
            let long = Array.append [| 101 |] (Array.append (Array.create 200 1037) [| 102 |])
            let e = Expect.throwsC (fun () -> m.Encode([| long |]) |> ignore) (fun e -> e.Message)
            Expect.stringContains e "max_position_embeddings" "the limit is named"
            Expect.equal (Batching.EncoderSequence(long, 128)).Length 128 "batching cuts to the cap"
            Expect.equal (Batching.EncoderSequence(long, 128)).[127] 102 "keeping [SEP] last"
            let layout = BatchLayout.For(m, 64)
            let e = Expect.throwsC (fun () -> Batching.Build([| LmExample([| 101; 102 |], [| 101; 102 |]) |], layout) |> ignore) (fun e -> e.Message)
            Expect.stringContains e "no choices" "a generation example"
            let e = Expect.throwsC (fun () -> Batching.Build([| LmExample([| 101; 102 |], [| 9 |], [| [| 7 |]; [| 8 |] |]) |], layout) |> ignore) (fun e -> e.Message)
            Expect.stringContains e "not one of its 2 choices" "an answer outside the choices"
            for field, value in [ "position_embedding_type", "\"relative_key\""; "hidden_act", "\"swish\""; "hidden_size", "100"; "hidden_dropout_prob", "1.5" ] do
                let json = Text.Json.Nodes.JsonNode.Parse($"""{{"model_type": "bert", "num_attention_heads": 12, "{field}": {value}}}""").AsObject()
                let e = Expect.throwsC (fun () -> BertConfig.FromJson(json, "config.json") |> ignore) (fun e -> e.Message)
                Expect.stringContains e field $"{field} is named"
        }

        test "importing something that is not a SentenceTransformers package or an ONNX BERT fails naming the file" {
            withTemp (fun dir ->
                let junk = Path.Combine(dir, "junk.dll")
                File.WriteAllBytes(junk, Text.Encoding.UTF8.GetBytes "not an assembly")
                let e = Expect.throwsC (fun () -> SentenceTransformersPackage.ReadResources junk |> ignore) (fun e -> e.Message)
                Expect.stringContains e junk "a file that is no assembly"
                let core = typeof<ILanguageModel>.Assembly.Location
                let e = Expect.throwsC (fun () -> SentenceTransformersPackage.ReadResources core |> ignore) (fun e -> e.Message)
                Expect.stringContains e "no embedded model.onnx" "an assembly without the resources"
                let e = Expect.throwsC (fun () -> OnnxBertImport.Read(Array.init 100 byte, "x.onnx") |> ignore) (fun e -> e.Message)
                Expect.stringContains e "x.onnx" "bytes that are no ONNX model"
                let e = Expect.throwsC (fun () -> SentenceTransformersPackage.Named "bert-large" |> ignore) (fun e -> e.Message)
                Expect.stringContains e "minilm" "an unknown package lists the known ones")
        }
    ]
