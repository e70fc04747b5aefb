/// Laws of BERT's basic tokenization (Klf's BertPreTokenizer) on generated text: it agrees with a naive
/// reference on ASCII, and on any text gives words without whitespace or control characters, each
/// punctuation character a word of its own, already lower-cased and idempotent under another pass.
module TokenizerLaws

open System
open System.Text
open Expecto
open Klf.Tokenizers
open PropertyConfig

/// The naive ASCII reference: split at whitespace, lower-case, cut out every ASCII punctuation character.
let private naive (s: string) =
    [ for w in s.Split([| ' '; '\t'; '\n'; '\r' |], StringSplitOptions.RemoveEmptyEntries) do
        let mutable cur = StringBuilder()
        for c in w.ToLowerInvariant() do
            if Char.IsAsciiLetterOrDigit c then cur.Append c |> ignore
            elif int c >= 33 && int c <= 126 then
                if cur.Length > 0 then yield cur.ToString()
                cur <- StringBuilder()
                yield string c
        if cur.Length > 0 then yield cur.ToString() ]

let private runes (w: string) = w.EnumerateRunes() |> Seq.toList

[<Tests>]
let tests =
    testList "tokenizer laws" [
        testPropertyWithConfig (config 500) "on printable ASCII the basic tokenization is the naive split, lower-case and punctuation cut" <| fun (xs: char list) ->
            let s = String(xs |> List.map (fun c -> char (32 + int c % 95)) |> Array.ofList)
            List.ofSeq ((BertPreTokenizer()).Split s) = naive s

        testPropertyWithConfig (config 500) "on any text: words are non-empty, hold no whitespace or control character, punctuation stands alone, and are lower case" <| fun (s: string) ->
            let s = if isNull s then "" else s
            let words = (BertPreTokenizer()).Split s
            words |> Seq.forall (fun w ->
                let rs = runes w
                w.Length > 0
                && rs |> List.forall (fun r -> not (Rune.IsWhiteSpace r) && not (BertPreTokenizer.IsControl r))
                && (rs.Length = 1 || rs |> List.forall (BertPreTokenizer.IsPunctuation >> not))
                && BertPreTokenizer.PythonLower w = w)

        testPropertyWithConfig (config 300) "splitting the words again gives the same words (Latin, Greek, Cyrillic and CJK text)" <| fun (xs: int list) ->
            // Code points of scripts whose NFD and NFC round trip (not Hangul, whose jamo recompose).
            let pool = [| 0x41; 0x5A; 0x61; 0xC0; 0xE9; 0xFF; 0x100; 0x17F; 0x391; 0x3A3; 0x3C2; 0x410; 0x44F; 0x4E00; 0x65E5; 0x2C; 0x2E; 0x2014; 0x201C; 0x20; 0x0A; 0x300; 0x301 |]
            let s = String.Join("", xs |> List.map (fun x -> Char.ConvertFromUtf32 pool[abs (x % pool.Length)]))
            let p = BertPreTokenizer()
            let once = List.ofSeq (p.Split s)
            List.ofSeq (p.Split(String.Join(" ", once))) = once
    ]
