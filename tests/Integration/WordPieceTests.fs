/// The WordPiece tokenizer on the BERT uncased vocabulary of the imported MiniLM: what Hugging Face's
/// BertTokenizer does where the other references part from it (OnnxAgreementTests compares whole
/// sentences), each case from the steps of its basic tokenization, and the folder's files.
module WordPieceTests

open System
open System.IO
open Expecto
open Klf.Tokenizers
open SentenceEncoderKit

let private words (s: string) = List.ofSeq ((BertPreTokenizer()).Split s)

let private tokens (tok: WordPieceTextTokenizer) (s: string) = tok.Encode s |> Array.map tok.TokenOf |> List.ofArray

let private withFolder (files: (string * string) list) (f: string -> unit) =
    let dir = Directory.CreateTempSubdirectory("klf-wordpiece-").FullName
    try
        for name, text in files do File.WriteAllText(Path.Combine(dir, name), text)
        f dir
    finally Directory.Delete(dir, true)

let private vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\nHello\n!\n"

[<Tests>]
let tests =
    testList "wordpiece" [
        test "basic tokenization: case, accents of every script, final sigma, İ" {
            Expect.equal (words "Café naïve Über") [ "cafe"; "naive"; "uber" ] "Latin-1 accents"
            Expect.equal (words "Giżycko Łódź Crișului") [ "gizycko"; "łodz"; "crisului" ] "NFD removes every combining mark (ł has none to remove)"
            Expect.equal (words "ΟΔΟΣ Ελληνικά") [ "οδος"; "ελληνικα" ] "Greek lower case with the final sigma (ς), accent stripped"
            Expect.equal (words "İstanbul") [ "istanbul" ] "İ lower-cases to i + U+0307, then the dot is stripped"
            Expect.equal (words "নাম্বার") [ "নামবার" ] "a nonspacing virama is removed as any accent"
        }

        test "basic tokenization: whitespace, control and format characters, CJK, punctuation and symbols" {
            Expect.equal (words "tab\there\nnew\r\nline\u2028sep") [ "tab"; "here"; "new"; "line"; "sep" ] "tabs, newlines and line separators split"
            Expect.equal (words "soft\u00ADhyphen zero\u200Bwidth a\u0000b \uFFFDc") [ "softhyphen"; "zerowidth"; "ab"; "c" ] "control and format characters vanish"
            Expect.equal (words "日本語テスト") [ "日"; "本"; "語"; "テスト" ] "CJK ideographs stand alone, kana do not"
            Expect.equal (words "$50 a+b=c `x` “hi”…") [ "$"; "50"; "a"; "+"; "b"; "="; "c"; "`"; "x"; "`"; "“"; "hi"; "”"; "…" ] "ASCII symbols and Unicode punctuation split"
            Expect.equal (words "£5 ©2004 ±3") [ "£5"; "©2004"; "±3" ] "other symbols stay inside their word"
        }

        test "WordPiece on the MiniLM vocabulary: continuations, unknown words, the special tokens' text, decoding" {
            let tok = tokenizer miniLm :?> WordPieceTextTokenizer
            Expect.equal (tokens tok "unaffable") [ "una"; "##ffa"; "##ble" ] "greedy longest match with ## continuations"
            Expect.equal (tokens tok "😀 ok") [ "[UNK]"; "ok" ] "a word it cannot spell is [UNK]"
            Expect.equal (tokens tok (String('a', 101))) [ "[UNK]" ] "a word of more than 100 characters is [UNK]"
            Expect.equal (tokens tok "one[SEP]two") [ "one"; "[SEP]"; "two" ] "the special tokens' text maps to them"
            Expect.equal (tokens tok "[sep]") [ "["; "sep"; "]" ] "lower-case text is no special token"
            Expect.equal (tok.Encode("hi", addBos = true, addEos = true) |> Array.map tok.TokenOf) [| "[CLS]"; "hi"; "[SEP]" |] "BOS is [CLS], EOS [SEP]"
            Expect.equal (tok.Decode(tok.Encode("Unaffable people, don't they?", addBos = true, addEos = true))) "unaffable people, don't they?" "decoding joins continuations and drops the special tokens"
            Expect.equal (tok.Kind, tok.PadId, tok.UnkId, tok.MaskId) (TokenizerKind.WordPiece, 0, 100, 103) "ids of the BERT uncased vocabulary"
        }

        test "ML.Tokenizers 3.0.0 still differs from Hugging Face's BertTokenizer on symbols, line breaks and unknown characters (Klf's pre-tokenization is kept)" {
            let tok = tokenizer miniLm :?> WordPieceTextTokenizer
            let library = Microsoft.ML.Tokenizers.BertTokenizer.Create(Path.Combine(miniLm.Value, "vocab.txt"),
                                                                       Microsoft.ML.Tokenizers.BertOptions(LowerCaseBeforeTokenization = true, RemoveNonSpacingMarks = true))
            for text, expected in [ "costs $50 a+b", [ "costs"; "$"; "50"; "a"; "+"; "b" ]
                                    "tab\there\nnow", [ "tab"; "here"; "now" ]
                                    "😀 x", [ "[UNK]"; "x" ] ] do
                Expect.equal (tokens tok text) expected $"Klf: {text}"
                let libraryTokens = library.EncodeToIds(text, addSpecialTokens = false) |> Seq.map tok.TokenOf |> List.ofSeq
                Expect.notEqual libraryTokens expected $"the library alone still gives {libraryTokens} for {text}: if it is right now, use it"
        }

        test "tokenizer_config.json: do_lower_case false keeps the case; special tokens must be in the vocabulary; errors name the file" {
            withFolder [ "vocab.txt", vocab; "tokenizer_config.json", """{"do_lower_case": false}""" ] (fun dir ->
                let tok = TokenizerLoader.FromFolder dir :?> WordPieceTextTokenizer
                Expect.equal (tokens tok "Hello hello!") [ "Hello"; "hello"; "!" ] "cased")
            withFolder [ "vocab.txt", vocab ] (fun dir ->
                let tok = TokenizerLoader.FromFolder dir :?> WordPieceTextTokenizer
                Expect.equal (tokens tok "Hello worlds") [ "hello"; "world"; "##s" ] "lower case by default")
            withFolder [ "vocab.txt", vocab.Replace("[CLS]\n", "") ] (fun dir ->
                let e = Expect.throwsC (fun () -> TokenizerLoader.FromFolder dir |> ignore) (fun e -> e.Message)
                Expect.stringContains e "vocab.txt" "names the file"
                Expect.stringContains e "[CLS]" "and the missing token")
            withFolder [ "vocab.txt", vocab; "tokenizer_config.json", """{"do_lower_case": "yes"}""" ] (fun dir ->
                let e = Expect.throwsC (fun () -> TokenizerLoader.FromFolder dir |> ignore) (fun e -> e.Message)
                Expect.stringContains e "do_lower_case" "a setting of the wrong type is named")
            let dir = Directory.CreateTempSubdirectory("klf-wordpiece-").FullName
            try
                File.WriteAllBytes(Path.Combine(dir, "vocab.txt"), [| 0x5Buy; 0xFFuy; 0x0Auy |])
                let e = Expect.throwsC (fun () -> TokenizerLoader.FromFolder dir |> ignore) (fun e -> e.Message)
                Expect.stringContains e "not UTF-8" "bytes that are no text"
            finally Directory.Delete(dir, true)
        }
    ]
