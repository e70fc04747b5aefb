module TokenizerJsonTests

open System
open System.Collections.Generic
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open Klf.Tokenizers
open BenchmarkData
open TokenizerTests

// ---------------------------------------------------------------- a byte-level BPE trained here

let gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
let llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

/// The matches of a regex and the text between them, in order: HF's "Isolated" split, computed independently.
let isolate (pattern: string) (text: string) =
    let pieces = ResizeArray<string>()
    let mutable at = 0
    for m in Regex(pattern).Matches text do
        if m.Length > 0 then
            if m.Index > at then pieces.Add(text.Substring(at, m.Index - at))
            pieces.Add m.Value
            at <- m.Index + m.Length
    if at < text.Length then pieces.Add(text.Substring at)
    List.ofSeq pieces

/// GPT-2 style BPE training on real text: count pre-tokens, repeatedly merge the most frequent pair.
let trainBpe (lines: string list) (numMerges: int) =
    let counts = Dictionary<string, int>()
    for line in lines do
        for m in Regex(gpt2Pattern).Matches line do
            let w = String(Encoding.UTF8.GetBytes m.Value |> Array.map (fun b -> byteChars[int b]))
            counts[w] <- (match counts.TryGetValue w with | true, c -> c + 1 | _ -> 1)
    let words = [| for kv in counts -> ResizeArray(kv.Key |> Seq.map string), kv.Value |]
    let merges = ResizeArray<string * string>()
    let mutable go = true
    while go && merges.Count < numMerges do
        let pairs = Dictionary<struct (string * string), int>()
        for syms, c in words do
            for i in 0 .. syms.Count - 2 do
                let k = struct (syms[i], syms[i + 1])
                pairs[k] <- (match pairs.TryGetValue k with | true, v -> v + c | _ -> c)
        if pairs.Count = 0 then go <- false
        else
            let (KeyValue (struct (a, b), _)) = pairs |> Seq.maxBy (fun kv -> kv.Value)
            merges.Add((a, b))
            for syms, _ in words do
                let mutable i = 0
                while i < syms.Count - 1 do
                    if syms[i] = a && syms[i + 1] = b then
                        syms[i] <- a + b
                        syms.RemoveAt(i + 1)
                    i <- i + 1
    let vocab = Dictionary<string, int>()
    for c in byteChars do vocab[string c] <- vocab.Count
    for a, b in merges do
        if not (vocab.ContainsKey(a + b)) then vocab[a + b] <- vocab.Count
    vocab["<|endoftext|>"] <- vocab.Count
    vocab, List.ofSeq merges

let bpe =
    lazy (
        let lines = trainTasks |> List.collect (inputLines "train" >> List.truncate 300)
        trainBpe lines 600)

let heldOutLines =
    lazy (heldOutTasks |> List.collect (inputLines "test" >> List.truncate 100))

/// Writes a tokenizer.json: a BPE model over vocab/merges with the given pre-tokenizer and added tokens.
let writeTokenizerJson (dir: string) (vocab: Dictionary<string, int>) (merges: (string * string) list)
                       (mergesAsArrays: bool) (ignoreMerges: bool) (preTokenizer: JsonNode) (added: (int * string * bool) list) =
    let mergeNodes: obj list =
        merges |> List.map (fun (a, b) -> if mergesAsArrays then box [| a; b |] else box (a + " " + b))
    let json =
        {| version = "1.0"
           added_tokens =
               [ for id, content, special in added ->
                   {| id = id; content = content; single_word = false; lstrip = false; rstrip = false
                      normalized = false; special = special |} ]
           pre_tokenizer = preTokenizer
           decoder = JsonNode.Parse """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"""
           model =
               {| ``type`` = "BPE"; fuse_unk = false; byte_fallback = false; ignore_merges = ignoreMerges
                  vocab = vocab; merges = mergeNodes |} |}
    Directory.CreateDirectory dir |> ignore
    File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize json)
    dir

let byteLevelPre = JsonNode.Parse """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"""
let llama3Pre () =
    JsonSerializer.SerializeToNode
        {| ``type`` = "Sequence"
           pretokenizers =
               [ JsonSerializer.SerializeToNode {| ``type`` = "Split"; pattern = {| Regex = llama3Pattern |}; behavior = "Isolated"; invert = false |}
                 JsonNode.Parse """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}""" ] |}

/// Folders: GPT-2 files (vocab.json + merges.txt) and the equivalent tokenizer.json with chat tokens.
let gpt2Folders =
    lazy (
        let vocab, merges = bpe.Value
        let dir = tempDir "klf-tokjson-"
        let files = Path.Combine(dir, "files")
        Directory.CreateDirectory files |> ignore
        File.WriteAllText(Path.Combine(files, "vocab.json"), JsonSerializer.Serialize vocab)
        writeLines (Path.Combine(files, "merges.txt")) ("#version: 0.2" :: [ for a, b in merges -> a + " " + b ])
        let eot = vocab["<|endoftext|>"]
        let added = [ eot, "<|endoftext|>", true; vocab.Count, "<|im_start|>", true; vocab.Count + 1, "<|im_end|>", true ]
        let json = writeTokenizerJson (Path.Combine(dir, "json")) vocab merges false false byteLevelPre added
        let jsonArrays = writeTokenizerJson (Path.Combine(dir, "json-arrays")) vocab merges true false byteLevelPre added
        dir, files, json, jsonArrays)

/// A BPE with no pre-tokenization at all, from Microsoft.ML.Tokenizers: the reference for one pre-token.
let wholePieceBpe =
    lazy (
        let _, files, _, _ = gpt2Folders.Value
        Microsoft.ML.Tokenizers.BpeTokenizer.Create(
            Microsoft.ML.Tokenizers.BpeOptions(Path.Combine(files, "vocab.json"), Path.Combine(files, "merges.txt"),
                ByteLevel = true, PreTokenizer = Microsoft.ML.Tokenizers.RegexPreTokenizer(Regex(@"(?s).+"), null))))

let compareLines (a: ITextTokenizer) (b: ITextTokenizer) (lines: string list) =
    let differing = lines |> List.filter (fun l -> a.Encode l <> b.Encode l)
    Expect.isEmpty (differing |> List.truncate 3) (sprintf "%d of %d lines differ between %s and %s" differing.Length lines.Length a.Name b.Name)
    lines.Length

let sameIds (a: ITextTokenizer) (b: ITextTokenizer) what =
    fun (text: string) -> Expect.equal (a.Encode text) (b.Encode text) $"%s{what}: %A{text}"

/// bpe-raw.model (an spm_train BPE model with byte fallback) converted to tokenizer.json's vocab and
/// merges the way HF's converter does it.
let convertedSpmBpe =
    lazy (
        let t = trained.Value
        // The .vocab spm_train wrote beside bpe-raw.model: one piece per line, in id order.
        let pieces = File.ReadAllLines(Path.Combine(t.Dir, "bpe-raw.vocab")) |> Array.map (fun l -> l.Split('\t')[0])
        let vocab = Dictionary<string, int>()
        pieces |> Array.iteri (fun i p -> vocab[p] <- i)
        let special (p: string) = p.StartsWith "<" && p.EndsWith ">" && p.Length > 2
        // As HF's converter: every split of a piece into two pieces is a merge, ordered by the merged piece's id.
        let merges =
            [ for id, p in Array.indexed pieces do
                if not (special p) then
                    for i in 1 .. p.Length - 1 do
                        let a, b = p.Substring(0, i), p.Substring i
                        match vocab.TryGetValue a, vocab.TryGetValue b with
                        | (true, ia), (true, ib) when not (special a || special b) -> yield (id, ia, ib), (a, b)
                        | _ -> () ]
            |> List.sortBy fst |> List.map snd
        vocab, merges)

// ---------------------------------------------------------------- tests

[<Tests>]
let tests =
    testList "tokenizer.json" [
        testList "gpt2-style byte-level bpe" [
            test "ids equal vocab.json + merges.txt (Microsoft.ML.Tokenizers) on real held-out lines; merges as strings or arrays" {
                let _, files, json, jsonArrays = gpt2Folders.Value
                let reference = TokenizerLoader.FromFolder files
                let fromJson = TokenizerLoader.FromFolder json
                let lines = heldOutLines.Value @ edgeLines
                let n = compareLines reference fromJson lines
                compareLines fromJson (TokenizerLoader.FromFolder jsonArrays) lines |> ignore
                for line in lines do
                    Expect.equal (fromJson.Decode(fromJson.Encode line)) line $"round trip of %A{line}"
                printfn "tokenizer.json: %s: %d lines (%d real held-out) equal to vocab.json + merges.txt through Microsoft.ML.Tokenizers, and round-trip"
                    fromJson.Name n heldOutLines.Value.Length
                Expect.isGreaterThanOrEqual heldOutLines.Value.Length 900 "about a thousand real lines" }
            test "added tokens are whole strings with their ids, never split; special ones are skipped when decoding" {
                let _, files, json, _ = gpt2Folders.Value
                let vocab, _ = bpe.Value
                let reference = TokenizerLoader.FromFolder files
                let tok = TokenizerLoader.FromFolder json
                let eot, imStart, imEnd = vocab["<|endoftext|>"], vocab.Count, vocab.Count + 1
                Expect.equal tok.VocabSize (vocab.Count + 2) "the chat tokens extend the vocabulary"
                let text = "<|im_start|>user\nIs this review positive?<|im_end|><|endoftext|>"
                let expected =
                    Array.concat [ [| imStart |]; reference.Encode "user\nIs this review positive?"; [| imEnd; eot |] ]
                Expect.equal (tok.Encode text) expected "added tokens matched before BPE"
                Expect.notEqual (reference.Encode "<|im_start|>") [| imStart |] "without tokenizer.json the literal is ordinary text"
                Expect.equal (tok.Decode(tok.Encode text)) "user\nIs this review positive?" "special tokens skipped"
                Expect.equal (tok.EosId, tok.BosId, tok.PadId) (eot, Nullable eot, eot) "<|endoftext|> from added_tokens"
                Expect.equal (tok.Encode("<|im_end|x", addEos = true)) (Array.append (reference.Encode "<|im_end|x") [| eot |])
                    "a partial literal is ordinary text" }
            test "a tokenizer.json wins over vocab.json + merges.txt in the same folder; added_tokens_decoder adds non-special tokens" {
                let dir, files, json, _ = gpt2Folders.Value
                let vocab, _ = bpe.Value
                let both = Path.Combine(dir, "both")
                Directory.CreateDirectory both |> ignore
                for f in [ Path.Combine(files, "vocab.json"); Path.Combine(files, "merges.txt"); Path.Combine(json, "tokenizer.json") ] do
                    File.Copy(f, Path.Combine(both, Path.GetFileName f), true)
                File.WriteAllText(Path.Combine(both, "tokenizer_config.json"),
                    sprintf """{"added_tokens_decoder": {"%d": {"content": "[SEP]", "special": false}}, "eos_token": "<|im_end|>"}""" (vocab.Count + 2))
                let tok = TokenizerLoader.FromFolder both
                Expect.stringContains tok.Name "tokenizer.json" "loaded from tokenizer.json"
                Expect.equal tok.VocabSize (vocab.Count + 3) "three ids beyond the BPE vocabulary"
                Expect.equal tok.EosId (vocab.Count + 1) "eos_token resolved among added tokens"
                let ids = tok.Encode "a[SEP]b"
                Expect.contains ids (vocab.Count + 2) "[SEP] has its id"
                Expect.equal (tok.Decode ids) "a[SEP]b" "a non-special added token decodes to its text" }
        ]
        testList "llama3-style split regex" [
            test "pre-tokens follow the file's regex: digits in groups of up to 3, case-insensitive contractions" {
                let dir, _, _, _ = gpt2Folders.Value
                let vocab, merges = bpe.Value
                let folder = writeTokenizerJson (Path.Combine(dir, "llama3")) vocab merges false true (llama3Pre ()) []
                let tok = TokenizerLoader.FromFolder folder :?> TokenizerJsonTextTokenizer
                let cases =
                    [ "We'LL pay 1234567 dollars", [ "We"; "'LL"; " pay"; " "; "123"; "456"; "7"; " dollars" ]
                      "I'm 42!\n\nOK", [ "I"; "'m"; " "; "42"; "!\n\n"; "OK" ]
                      "don't  stop 12", [ "don"; "'t"; " "; " stop"; " "; "12" ] ]
                for text, expected in cases do
                    Expect.equal (List.ofSeq (tok.PreTokenize text)) expected $"hand-computed split of %A{text}"
                    Expect.equal (isolate llama3Pattern text) expected $".NET Regex split of %A{text}"
                    let perPiece = expected |> List.collect (fun p -> List.ofSeq (wholePieceBpe.Value.EncodeToIds p)) |> Array.ofList
                    Expect.equal (tok.Encode text) perPiece $"BPE of each pre-token of %A{text}" }
            test "on real lines, ids are the BPE of each regex piece" {
                let dir, _, _, _ = gpt2Folders.Value
                let vocab, merges = bpe.Value
                let folder = writeTokenizerJson (Path.Combine(dir, "llama3-merges")) vocab merges false false (llama3Pre ()) []
                let tok = TokenizerLoader.FromFolder folder
                let lines = heldOutLines.Value
                let expected (line: string) =
                    isolate llama3Pattern line |> List.collect (fun p -> List.ofSeq (wholePieceBpe.Value.EncodeToIds p)) |> Array.ofList
                let differing = lines |> List.filter (fun l -> tok.Encode l <> expected l)
                Expect.isEmpty (differing |> List.truncate 3) $"{differing.Length} lines differ"
                Expect.isTrue (lines |> List.exists (fun l -> Regex.IsMatch(l, @"\d{4}"))) "some lines have 4+ digit numbers"
                printfn "tokenizer.json: llama3-style Split regex: %d real lines equal to .NET Regex pieces + Microsoft.ML.Tokenizers BPE" lines.Length }
            test "ignore_merges takes a whole pre-token from the vocabulary; bos/eos from added tokens" {
                let dir, _, _, _ = gpt2Folders.Value
                let vocab0, merges = bpe.Value
                let vocab = Dictionary<string, int>(vocab0)
                let zz = vocab.Count
                vocab["Ġzzqx"] <- zz   // no merge builds it
                vocab.Remove "<|endoftext|>" |> ignore   // Llama 3 has none; its end is <|end_of_text|>
                let added = [ zz + 1, "<|begin_of_text|>", true; zz + 2, "<|end_of_text|>", true; zz + 3, "<|eot_id|>", true ]
                let withIgnore = writeTokenizerJson (Path.Combine(dir, "llama3-ignore")) vocab merges false true (llama3Pre ()) added
                let without = writeTokenizerJson (Path.Combine(dir, "llama3-noignore")) vocab merges false false (llama3Pre ()) added
                let tok = TokenizerLoader.FromFolder withIgnore
                Expect.equal (tok.Encode "a zzqx") (Array.append (tok.Encode "a") [| zz |]) "the pre-token ' zzqx' is one id"
                Expect.isFalse (Array.contains zz ((TokenizerLoader.FromFolder without).Encode "a zzqx")) "without ignore_merges BPE cannot reach it"
                Expect.equal (tok.BosId, tok.EosId, tok.PadId) (Nullable(zz + 1), zz + 2, zz + 2) "bos/eos by content among added tokens"
                File.WriteAllText(Path.Combine(withIgnore, "special_tokens_map.json"), """{"eos_token": "<|eot_id|>"}""")
                Expect.equal (TokenizerLoader.FromFolder withIgnore).EosId (zz + 3) "special_tokens_map.json names an added token"
                let ids = tok.Encode("Hi", addBos = true, addEos = true)
                Expect.equal (ids[0], ids[ids.Length - 1]) (zz + 1, zz + 2) "framed"
                Expect.equal (tok.Decode ids) "Hi" "bos/eos skipped" }
            test "ML.Tokenizers 3.0.0 BpeTokenizer has no ignore_merges (\"a zzqx\"): Klf looks a whole pre-token up before the library" {
                let dir, _, _, _ = gpt2Folders.Value
                let vocab0, merges = bpe.Value
                let vocab = Dictionary<string, int>(vocab0)
                let zz = vocab.Count
                vocab["Ġzzqx"] <- zz   // no merge builds it
                let folder = writeTokenizerJson (Path.Combine(dir, "llama3-ignore-pin")) vocab merges false true (llama3Pre ()) []
                let tok = TokenizerLoader.FromFolder folder
                let lib =
                    Microsoft.ML.Tokenizers.BpeTokenizer.Create(
                        Microsoft.ML.Tokenizers.BpeOptions(vocab, Merges = [ for a, b in merges -> a + " " + b ], ByteLevel = true,
                            PreTokenizer = Microsoft.ML.Tokenizers.RegexPreTokenizer(Regex llama3Pattern, null)))
                let libIds (text: string) = lib.EncodeToIds text |> Seq.toArray
                // HF: with ignore_merges the pre-token " zzqx" is looked up whole.
                let expected = Array.append (libIds "a") [| zz |]
                Expect.equal (tok.Encode "a zzqx") expected "Klf gives HF's ids"
                Expect.notEqual (libIds "a zzqx") expected "the library splits the pre-token (if this fails, it has learnt ignore_merges: drop Klf's lookup)"
                let lines = heldOutLines.Value
                let differing = lines |> List.filter (fun l -> tok.Encode l <> libIds l)
                printfn "tokenizer.json: ignore_merges: %d of %d real lines have the same ids with and without it (the trained merges build every vocabulary token)"
                    (lines.Length - differing.Length) lines.Length }
        ]
        testList "sentencepiece folders" [
            test "T5: <extra_id_N> after the pieces, extra_id_0 highest; literals map to their ids; skipped when decoding" {
                let t = trained.Value
                let dir = Path.Combine(t.Dir, "t5-extra")
                Directory.CreateDirectory dir |> ignore
                File.Copy(Path.Combine(t.T5Folder, "spiece.model"), Path.Combine(dir, "spiece.model"), true)
                File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "t5", "pad_token_id": 0, "eos_token_id": 1}""")
                let plain = TokenizerLoader.FromFolder t.T5Folder
                let tok = TokenizerLoader.FromFolder dir
                Expect.equal plain.VocabSize 2000 "a bare spiece.model keeps its pieces"
                Expect.equal tok.VocabSize 2100 "config.json model_type t5: 100 extra ids"
                File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "t5", "vocab_size": 2000}""")
                Expect.equal (TokenizerLoader.FromFolder dir).VocabSize 2000 "no extra ids when the model's vocab_size has no room (Klf's presets)"
                File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "t5", "vocab_size": 2128, "pad_token_id": 0, "eos_token_id": 1}""")
                let text = "The <extra_id_0> walks in <extra_id_1> park <extra_id_99>"
                let expected =
                    Array.concat [ plain.Encode "The "; [| 2099 |]; plain.Encode " walks in "; [| 2098 |]; plain.Encode " park "; [| 2000 |] ]
                Expect.equal (tok.Encode(text, addEos = true)) (Array.append expected [| 1 |]) "extra_id_0 = 2099 … extra_id_99 = 2000, eos last"
                Expect.equal (tok.Decode expected) "The walks in park" "extra ids are special: skipped, the text around them decoded as one"
                Expect.equal (tok.Decode [| 2099 |]) "" "a lone extra id decodes to nothing"
                for line in heldOutLines.Value |> List.truncate 200 do
                    Expect.equal (tok.Encode line) (plain.Encode line) "text without extra ids encodes as before"
                File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"extra_ids": 3}""")
                File.WriteAllText(Path.Combine(dir, "added_tokens.json"), """{"<sep>": 2003}""")
                let few = TokenizerLoader.FromFolder dir
                Expect.equal few.VocabSize 2004 "extra_ids from tokenizer_config.json, plus added_tokens.json"
                Expect.equal (few.Encode "<extra_id_2><extra_id_0>x<sep>") (Array.concat [ [| 2000; 2002 |]; plain.Encode "x"; [| 2003 |] ]) "ids"
                Expect.equal (few.Encode "<extra_id_3>") (plain.Encode "<extra_id_3>") "beyond extra_ids it is ordinary text"
                Expect.equal (few.Decode(few.Encode "a<sep>b")) "a<sep>b" "a non-special added token decodes to its literal" }
            test "tokenizer.model wins over a SentencePiece-style tokenizer.json, whose added tokens still count" {
                let t = trained.Value
                let dir = Path.Combine(t.Dir, "llama-json")
                Directory.CreateDirectory dir |> ignore
                File.Copy(Path.Combine(t.LlamaFolder, "tokenizer.model"), Path.Combine(dir, "tokenizer.model"), true)
                let json =
                    """{"version": "1.0",
                        "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
                                         {"id": 2, "content": "</s>", "special": true}, {"id": 2000, "content": "<pad>", "special": true}],
                        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
                        "pre_tokenizer": null,
                        "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}, "merges": []}}"""
                File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json)
                File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), """{"pad_token": "<pad>"}""")
                let plain = TokenizerLoader.FromFolder t.LlamaFolder
                let tok = TokenizerLoader.FromFolder dir
                Expect.equal tok.Kind TokenizerKind.SentencePieceBpe "loaded from tokenizer.model"
                Expect.equal (tok.VocabSize, tok.PadId, tok.BosId, tok.EosId) (2001, 2000, Nullable 1, 2) "<pad> added after the pieces"
                Expect.equal (tok.Encode "Hello there</s>") (Array.append (plain.Encode "Hello there") [| 2 |]) "</s> matched whole, as HF does"
                let lines = heldOutLines.Value |> List.truncate 300
                for line in lines do Expect.equal (tok.Encode line) (plain.Encode line) "same ids as the .model alone" }
            test "a SentencePiece-style tokenizer.json converted from an spm_train BPE model gives spm_encode's ids" {
                let t = trained.Value
                let vocab, merges = convertedSpmBpe.Value
                let write name (normalizer: string) (preTokenizer: string) =
                    let dir = Path.Combine(t.Dir, name)
                    Directory.CreateDirectory dir |> ignore
                    let json =
                        {| version = "1.0"
                           added_tokens = [ for id, c in [ 0, "<unk>"; 1, "<s>"; 2, "</s>" ] -> {| id = id; content = c; special = true |} ]
                           normalizer = JsonNode.Parse normalizer
                           pre_tokenizer = JsonNode.Parse preTokenizer
                           model = {| ``type`` = "BPE"; unk_token = "<unk>"; fuse_unk = true; byte_fallback = t.ByteFallback
                                      vocab = vocab; merges = [ for a, b in merges -> a + " " + b ] |} |}
                    File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize json)
                    TokenizerLoader.FromFolder dir
                let legacy =   // Llama 2 as converted by older transformers
                    write "llama2-json" """{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}""" "null"
                let metaspace =   // newer conversions
                    write "llama2-json-metaspace" "null" """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}"""
                let reference = spmIds t.LlamaRawFolder "tokenizer.model" t
                for tok in [ legacy; metaspace ] do
                    Expect.equal tok.Kind TokenizerKind.SentencePieceBpe "kind"
                    Expect.equal (tok.BosId, tok.EosId, tok.UnkId, tok.PadId) (Nullable 1, 2, 0, 0) "LLaMA's ids; pad falls back to unk"
                    // HF's Metaspace prepends "▁" only when the text does not start with one already, so a
                    // line starting with a space loses SentencePiece's dummy prefix there (HF's behaviour, kept).
                    let comparable (line: string) = tok.Name.Contains "metaspace" |> not || not (line.StartsWith " ")
                    let differing =
                        List.zip t.HeldOut reference |> List.filter (fun (line, ids) -> comparable line && tok.Encode line <> ids)
                    Expect.isEmpty (differing |> List.truncate 3) $"{differing.Length} of {t.HeldOut.Length} lines differ from spm_encode ({tok.Name})"
                    for line in t.HeldOut |> List.filter comparable do
                        Expect.equal (tok.Decode(tok.Encode(line, addBos = true, addEos = true))) line $"round trip of %A{line}"
                Expect.equal (metaspace.Encode "  leading") (legacy.Encode " leading") "Metaspace: no second dummy prefix before a leading space"
                printfn "tokenizer.json: SentencePiece-style (Prepend/Replace and Metaspace forms, %d merges): %d lines (%d real held-out) equal to spm_encode and round-trip (Metaspace form: lines starting with a space excepted)"
                    merges.Length t.HeldOut.Length (t.HeldOut.Length - edgeLines.Length) }
            test "ML.Tokenizers 3.0.0 BpeTokenizer has no byte_fallback (\"^^\"): Klf spells the library's unknown pieces as bytes" {
                let t = trained.Value
                let vocab, merges = convertedSpmBpe.Value
                let dir = Path.Combine(t.Dir, "llama2-json-pin")
                Directory.CreateDirectory dir |> ignore
                let json =
                    {| version = "1.0"
                       normalizer = JsonNode.Parse """{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}"""
                       pre_tokenizer = null
                       model = {| ``type`` = "BPE"; unk_token = "<unk>"; fuse_unk = true; byte_fallback = t.ByteFallback
                                  vocab = vocab; merges = [ for a, b in merges -> a + " " + b ] |} |}
                File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize json)
                let tok = TokenizerLoader.FromFolder dir
                // The library over the same vocabulary and merges, given the text as the normalizer leaves it.
                let lib =
                    Microsoft.ML.Tokenizers.BpeTokenizer.Create(
                        Microsoft.ML.Tokenizers.BpeOptions(vocab, Merges = [ for a, b in merges -> a + " " + b ], UnknownToken = "<unk>",
                            FuseUnknownTokens = true, PreTokenizer = Microsoft.ML.Tokenizers.RegexPreTokenizer(Regex @"(?s).+", null)))
                let libIds (text: string) = if text = "" then [||] else lib.EncodeToIds("▁" + text.Replace(" ", "▁")) |> Seq.toArray
                let modelPath = Path.Combine(t.LlamaRawFolder, "tokenizer.model")
                if t.ByteFallback then
                    libraryStillDiffers libIds tok modelPath "^^"
                    // A character outside the BMP (a surrogate pair in .NET) is one unknown piece of four bytes.
                    Expect.equal (tok.Encode "x \U0001F600 y") (spmEncodeText modelPath "x \U0001F600 y") "an emoji as spm_encode spells it"
                    Expect.equal (tok.Decode(tok.Encode "x \U0001F600 y")) "x \U0001F600 y" "and back"
                let differing = libraryAgreement "BpeTokenizer, SentencePiece-style tokenizer.json (converted bpe-raw.model)" (fun t -> t.LlamaRawFolder) "tokenizer.model" libIds
                if t.ByteFallback then Expect.isNonEmpty differing "the library still departs from SentencePiece here (if not, switch to it)" }
        ]
        testList "errors" [
            let unsupported name (json: string) (parts: string list) =
                test name {
                    let dir = tempDir "klf-tokjson-bad-"
                    File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json)
                    expectThrowsMessage<InvalidDataException> (fun () -> TokenizerLoader.FromFolder dir |> ignore)
                        (Path.Combine(dir, "tokenizer.json") :: parts) name }
            unsupported "WordPiece is named" """{"model": {"type": "WordPiece", "vocab": {"a": 0}}}""" [ "WordPiece" ]
            unsupported "Unigram in JSON is named" """{"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}""" [ "Unigram"; "spiece.model" ]
            unsupported "an unknown pre-tokenizer is named" """{"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""" [ "Whitespace" ]
            unsupported "BPE that is neither byte-level nor SentencePiece-style is named" """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""" [ "ByteLevel"; "Metaspace" ]
            unsupported "an unknown normalizer is named" """{"normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""" [ "BertNormalizer" ]
            unsupported "a merge outside the vocabulary is named" """{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}""" [ "'a' 'b'" ]
            unsupported "byte_fallback without an unk_token is named" """{"normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, "model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0}, "merges": []}}""" [ "byte_fallback"; "unk_token" ]
            unsupported "invalid JSON is named" """{"model": """ [ "not valid JSON" ]
        ]
    ]
