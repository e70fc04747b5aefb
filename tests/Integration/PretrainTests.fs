/// Pre-training: the schedule and packed windows (in process), `klf pretrain` end to end on a small
/// corpus with a tokenizer made by scripts/train-tokenizer.sh, the corpus builder on hand-made
/// packages, and the embedded Standard CL excerpt (data/standard-cl).
module PretrainTests

open System
open System.Diagnostics
open System.IO
open System.Text
open Expecto
open TorchSharp
open Klf.Checkpoints
open Klf.Models
open Klf.Tokenizers
open Klf.Training
open Klf.Pipelines

let private repo = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))

let private klf (args: string list) = CliTests.klfWithin 600000 args

/// Runs a program with an environment change; returns exit code and stdout + stderr.
let private runWith (env: (string * string) list) (exe: string) (args: string list) =
    let psi = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    for k, v in env do psi.Environment[k] <- v
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 120000) then
        p.Kill true
        failtestf "%s %A timed out" exe args
    p.WaitForExit()
    p.ExitCode, out.Result + err.Result

/// A few paragraphs of plain English written for the tests.
let private paragraphs =
    [ "The river rose slowly through the night, and by morning the lower fields were under water."
      "She kept a small notebook in which she wrote the names of every bird she saw on her walks."
      "Bread is made from flour, water, salt and yeast; the dough is left to rise before it is baked."
      "The old clock in the hall struck twelve, and the house fell silent except for the wind outside."
      "A good map shows roads, rivers and towns, and a scale that tells how far apart they really are."
      "He learned to sail as a boy, and in later years he crossed the bay alone in all kinds of weather."
      "Trains leave the station every hour, and the journey to the coast takes a little under three hours."
      "The library opens at nine; its reading room is quiet, bright and full of long wooden tables." ]

/// The stand-in corpus: the paragraphs above, then the first lines of a few benchmark TRAIN inputs
/// (never the test split), one per line.
let private corpusLines =
    lazy (paragraphs @ ([ "agnews"; "yelp"; "dbpedia" ] |> List.collect (BenchmarkData.inputLines "train" >> List.truncate 120)))

let private tempDir prefix =
    let d = Directory.CreateTempSubdirectory(prefix).FullName
    if Environment.GetEnvironmentVariable "KLF_KEEP_TEMP" <> "1" then
        AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(d, true) with _ -> ())
    d

/// Corpus file and a tokenizer trained on it by scripts/train-tokenizer.sh (vocabulary 600).
let private prepared =
    lazy (
        TokenizerTests.spmTool "spm_train" |> ignore   // a clear failure when SentencePiece is missing
        let dir = tempDir "klf-pretrain-"
        let corpus = Path.Combine(dir, "corpus.txt")
        File.WriteAllText(corpus, String.Join("\n", corpusLines.Value) + "\n", UTF8Encoding false)
        let tok = Path.Combine(dir, "tok")
        let code, out = NativeTests.run "bash" [ Path.Combine(repo, "scripts", "train-tokenizer.sh"); corpus; tok; "600" ] 300000
        if code <> 0 then failtestf "train-tokenizer.sh failed (%d):\n%s" code out
        dir, corpus, tok, out)

let private csvRows (path: string) =
    File.ReadAllLines path |> Array.skip 1 |> Array.map (fun l -> l.Split(','))

/// Writes UTF-8 text (no BOM) to DIR/REL, creating the folders on the way.
let private writeUnder (dir: string) (rel: string) (text: string) =
    let p = Path.Combine(dir, rel)
    Directory.CreateDirectory(Path.GetDirectoryName p) |> ignore
    File.WriteAllText(p, text, UTF8Encoding false)

[<Tests>]
let tests =
    testSequenced <| testList "pretrain" [
        test "the cosine schedule warms up linearly, peaks at W and falls to the floor at T" {
            let m s = Schedules.WarmupCosine(s, 10, 110, 0.1)
            Expect.equal (m 0) 0.0 "starts at 0"
            Expect.floatClose Accuracy.veryHigh (m 5) 0.5 "half way through warm-up"
            Expect.floatClose Accuracy.veryHigh (m 10) 1.0 "peak at W"
            Expect.floatClose Accuracy.veryHigh (m 60) 0.55 "half way through the decay: (1 + r) / 2"
            Expect.floatClose Accuracy.veryHigh (m 110) 0.1 "the floor at T"
            Expect.floatClose Accuracy.veryHigh (m 500) 0.1 "and after it"
            for s in 10 .. 109 do Expect.isTrue (m (s + 1) <= m s) "non-increasing after warm-up"
            let o = OptimizerOptions(LearningRate = 2e-3, WarmupSteps = 10, TotalSteps = 110, Schedule = LearningRateSchedule.Cosine, MinLearningRateRatio = 0.1)
            Expect.floatClose Accuracy.veryHigh (o.LearningRateAt 110) 2e-4 "OptimizerOptions uses it"
            Expect.floatClose Accuracy.veryHigh (OptimizerOptions(LearningRate = 1e-3, WarmupSteps = 10, TotalSteps = 110).LearningRateAt 60) 5e-4 "linear stays the default"
        }

        test "packed windows: labels equal the inputs, no padding, evaluation windows predict each token once" {
            let stream = Array.init 50 id
            use b = CausalWindows.Batch(stream, [| 0L; 7L; 40L |], 9)
            Expect.sequenceEqual b.InputIds.shape [| 3L; 10L |] "(B, seq-len + 1)"
            Expect.sequenceEqual (b.InputIds[1].data<int64>().ToArray()) [| 7L .. 16L |] "window 1 starts at 7"
            Expect.isTrue (b.Labels.eq(b.InputIds).all().item<bool>()) "labels = inputs: the loss is on every next token"
            Expect.equal (b.AttentionMask.sum().item<int64>()) 30L "no padding"
            Expect.throws (fun () -> CausalWindows.Batch(stream, [| 41L |], 9) |> ignore) "a window past the end is refused"
            let starts = CausalWindows.EvaluationStarts(50, 9)
            Expect.sequenceEqual starts [| 0L; 9L; 18L; 27L; 36L |] "stride seq-len"
            let targets = starts |> Array.collect (fun s -> [| s + 1L .. s + 9L |])
            Expect.sequenceEqual targets [| 1L .. 45L |] "every token after the first predicted once (the partial tail dropped)"
            Expect.equal (CausalWindows.EvaluationStarts(50, 9, 2)) [| 0L; 18L |] "capped: evenly spaced"
            let draw () = CausalWindows.SampleStarts(Random 5, 50, 9, 100)
            Expect.sequenceEqual (draw ()) (draw ()) "seeded starts repeat"
            Expect.isTrue (draw () |> Array.forall (fun s -> s >= 0L && s + 10L <= 50L)) "every sampled window fits"
        }

        test "the corpus split holds out the last lines and marks every line with BOS and EOS" {
            let tok = TokenizerLoader.FromFolder TokenizerTests.trained.Value.LlamaFolder
            let lines = Array.ofList paragraphs
            let encoded = Pretrain.encodeLines tok lines
            Expect.equal encoded[3] (tok.Encode(lines[3], addBos = true, addEos = true)) "line order kept"
            let s = Pretrain.split 0.25 encoded
            Expect.equal (s.TrainLines, s.HeldOutLines) (6, 2) "the last quarter of 8 lines"
            Expect.equal s.HeldOut (Array.append encoded[6] encoded[7]) "held-out = the last lines, concatenated"
            Expect.equal s.Train.Length (encoded[.. 5] |> Array.sumBy Array.length) "the rest trains"
            Expect.equal (Pretrain.split 0.0 encoded).HeldOut.Length 0 "fraction 0 holds nothing out"
        }

        test "klf pretrain: the loss falls, the folder loads as a model with its tokenizer, card, CSV and plot" {
            let dir, corpus, tok, spmOut = prepared.Value
            Expect.stringContains spmOut "spm_train --input=corpus.txt" "train-tokenizer.sh prints the command it ran"
            let t = TokenizerLoader.FromFolder tok
            Expect.equal (t.UnkId, t.BosId.Value, t.EosId, t.VocabSize) (0, 1, 2, 600) "unk 0, bos 1, eos 2, the asked vocabulary"
            let out = Path.Combine(dir, "model")
            let code, log =
                klf [ "pretrain"; "--corpus"; corpus; "--tokenizer"; tok; "--hidden"; "32"; "--layers"; "1"; "--heads"; "2"
                      "--steps"; "30"; "--batch"; "8"; "--seq-len"; "32"; "--lr"; "1e-2"; "--warmup"; "3"; "--eval-every"; "10"
                      "--heldout-fraction"; "0.05"; "--seed"; "3"; "--out"; out ]
            Expect.equal code 0 log
            Expect.stringContains log "tokens/s" "progress lines carry throughput"
            let rows = csvRows (Path.Combine(out, "loss.csv"))
            Expect.sequenceEqual (rows |> Array.map (fun r -> int r[0])) [| 0; 10; 20; 30 |] "a row before training and every 10 steps"
            let held = rows |> Array.map (fun r -> float r[3])
            Expect.isTrue (held |> Array.forall Double.IsFinite) "held-out loss finite"
            Expect.isLessThan held[3] (held[0] - 0.5) "held-out loss falls"
            Expect.isLessThan (float rows.[3].[2]) (float rows.[1].[2]) "training loss (moving average) falls"
            Expect.equal (int64 rows.[3].[1]) (30L * 8L * 32L) "tokens seen = steps x batch x seq-len"
            for f in [ "MODEL_CARD.md"; "loss.csv"; "loss.png"; "config.json"; "model.safetensors"; "tokenizer.model"; "manifest.json" ] do
                Expect.isTrue (File.Exists(Path.Combine(out, f))) $"{f} written"
            let card = File.ReadAllText(Path.Combine(out, "MODEL_CARD.md"))
            for s in [ "./klf pretrain --corpus"; "loss.png"; "tokens seen"; "held-out, final"; "parameters" ] do
                Expect.stringContains card s $"the card states {s}"
            Klf.Checkpoints.Checkpoint.ReadManifest out |> ignore   // every file hashed and intact
            let m = ModelFolder.Load out
            let reloaded = TokenizerLoader.FromFolder out
            Expect.equal reloaded.VocabSize 600 "the tokenizer beside the weights"
            let ids = reloaded.Encode("The river rose slowly", addBos = true)
            use batch = CausalWindows.Batch(ids, [| 0L |], ids.Length - 1)
            use loss = m.ComputeLoss batch
            Expect.isTrue (Double.IsFinite(loss.ToDouble())) "the loaded model scores text"
            m.Dispose()
            Expect.isEmpty (Directory.GetFileSystemEntries(dir) |> Array.filter (fun p -> Path.GetFileName(p).StartsWith ".model")) "no temporary folder left"
        }

        test "klf pretrain with a missing corpus exits 1, names the file and creates no output folder" {
            let dir = tempDir "klf-pretrain-bad-"
            let missing = Path.Combine(dir, "no-such-corpus.txt")
            let out = Path.Combine(dir, "out")
            let code, log = klf [ "pretrain"; "--corpus"; missing; "--tokenizer"; TokenizerTests.trained.Value.LlamaFolder; "--hidden"; "32"
                                  "--layers"; "1"; "--heads"; "2"; "--steps"; "5"; "--out"; out ]
            Expect.equal code 1 log
            Expect.stringContains log missing "the error names the file"
            Expect.isFalse (Directory.Exists out) "--out not created"
        }

        test "fetch-corpus.sh names the missing tools and fails" {
            let empty = tempDir "klf-nopath-"
            let code, out = runWith [ "PATH", empty ] "/bin/bash" [ Path.Combine(repo, "scripts", "fetch-corpus.sh"); Path.Combine(empty, "c") ]
            Expect.equal code 1 out
            Expect.stringContains out "missing tool(s): npm node apt-get dpkg-deb" "names the tools"
            Expect.isFalse (Directory.Exists(Path.Combine(empty, "c"))) "nothing created"
        }

        test "the corpus builder cleans, interleaves and counts (hand-made packages)" {
            let dir = tempDir "klf-corpus-"
            let write = writeUnder dir
            write "sotu/data/1790_a_b_n.json" """{"text":"Fellow citizens: we meet again. (Applause.) The   year was good.\u00a0[Laughter] Thank you."}"""
            write "sotu/data/1791_a_b_n.json" """{"text":"A second address."}"""
            write "moby/data/file_list.json" """["contents.txt","chapter_1.txt"]"""
            write "moby/data/contents.json" """{"text":"CONTENTS\n\nCHAPTER 1."}"""
            write "moby/data/chapter_1.json" """{"text":"Call me Ishmael.\n\nSome years ago."}"""
            let header = "  1 This software and database is provided.\n  2 WordNet 3.0 Copyright 2006 by Princeton University.\n"
            write "wn/usr/share/wordnet/data.noun" (header + "00001740 03 n 02 dog 0 domestic_dog 0 000 | a member of the genus Canis; \"the dog barked\"  \n")
            write "wn/usr/share/wordnet/data.verb" (header + "00001740 29 v 01 run 0 000 | move fast  \n")
            write "wn/usr/share/wordnet/data.adj" (header + "00001740 00 a 01 able(a) 0 000 | having the means  \n")
            write "wn/usr/share/wordnet/data.adv" header
            let meta = """{"sotu":{"title":"S","package":"p","version":"1","licence":"l","registry":"r","archive":"a","sha256":"h","taken":"t","licenceText":"x"},
                           "moby":{"title":"M","package":"p","version":"1","licence":"l","registry":"r","archive":"a","sha256":"h","taken":"t","licenceText":"x"},
                           "wordnet":{"title":"W","package":"p","version":"1","licence":"l","registry":"r","archive":"a","sha256":"h","taken":"t","licenceText":"x"}}"""
            write "meta.json" meta
            let run () =
                let code, out =
                    NativeTests.run "node" [ Path.Combine(repo, "scripts", "lib", "build-corpus.js"); Path.Combine(dir, "sotu"); Path.Combine(dir, "moby")
                                             Path.Combine(dir, "wn"); dir; Path.Combine(dir, "meta.json") ] 60000
                Expect.equal code 0 out
                File.ReadAllBytes(Path.Combine(dir, "corpus.txt.tmp"))
            let bytes = run ()
            let lines = Encoding.UTF8.GetString(bytes).TrimEnd('\n').Split('\n')
            Expect.sequenceEqual lines
                // positions (i + 0.5) / n: W 1/6, S 1/4, M 1/4, W 1/2, S 3/4, M 3/4, W 5/6 (ties in source order)
                [| "dog, domestic dog: a member of the genus Canis; \"the dog barked\""
                   "Fellow citizens: we meet again. The year was good. Thank you."
                   "Call me Ishmael."
                   "run: move fast"
                   "A second address."
                   "Some years ago."
                   "able: having the means" |] "annotations removed, whitespace normalised, sources interleaved in proportion"
            Expect.sequenceEqual (run ()) bytes "deterministic"
            let sources = File.ReadAllText(Path.Combine(dir, "SOURCES.md.tmp"))
            Expect.stringContains sources $"| **total** | | | | {bytes.Length} | 7 |" "SOURCES.md counts bytes and lines"
            Expect.stringContains sources "WordNet 3.0 Copyright 2006 by Princeton University." "carries the WordNet licence"
        }

        test "the question builder: every answer is one of its options, found in the text or the synset, deterministic" {
            let dir = tempDir "klf-questions-"
            let write = writeUnder dir
            // 120 paragraphs of 30 words over a vocabulary large enough for distractors, and glosses (skipped as paragraphs).
            let vocab = [| for a in [ "amber"; "basil"; "cedar"; "delta"; "ember"; "fjord"; "grove"; "harbor"; "inlet"; "juniper"; "kelp"; "lagoon" ] do
                             for b in [ "stone"; "field"; "river"; "tower"; "bridge" ] -> a + b |]
            let rnd = Random 7
            let paragraphs = [ for _ in 1 .. 120 -> String.Join(" ", [ for _ in 1 .. 30 -> if rnd.Next 3 = 0 then "the" else vocab[rnd.Next vocab.Length] ]) + "." ]
            write "corpus.txt" (String.Join("\n", paragraphs @ [ "dog, domestic dog: a member of the genus Canis" ]) + "\n")
            let header = "  1 This software and database is provided.\n"
            write "wn/usr/share/wordnet/data.noun"
                (header + String.Join("", [ "00001 05 n 01 dog 0 000 | a domesticated carnivorous mammal  "; "00002 20 n 01 oak 0 000 | a tree bearing acorns  "
                                            "00003 06 n 01 hammer 0 000 | a hand tool with a heavy head  "; "00004 18 n 01 baker 0 000 | someone who bakes bread  " ] |> List.map (fun l -> l + "\n")))
            write "wn/usr/share/wordnet/data.verb" (header + "00005 38 v 01 run 0 000 | move fast by using the legs  \n00006 30 v 01 melt 0 000 | become liquid when heated  \n")
            write "wn/usr/share/wordnet/data.adj" (header + "00007 00 a 01 able(a) 0 000 | having the means to do something  \n")
            write "wn/usr/share/wordnet/data.adv" header
            let build (file: string) (seed: string) =
                let code, out =
                    NativeTests.run "node" [ Path.Combine(repo, "scripts", "lib", "build-questions.js"); Path.Combine(dir, "corpus.txt"); Path.Combine(dir, "wn")
                                             Path.Combine(dir, file); "400"; seed ] 60000
                Expect.equal code 0 out
                Expect.stringContains out "400 questions (120 paragraphs, 7 synsets)" "reports what it read"
                File.ReadAllBytes(Path.Combine(dir, file))
            let bytes = build "q.jsonl" "3"
            Expect.sequenceEqual (build "again.jsonl" "3") bytes "same inputs and seed, same bytes"
            Expect.isFalse (build "other.jsonl" "4" = bytes) "another seed, other questions"
            let examples = TaskFile.load (Path.Combine(dir, "q.jsonl"))
            Expect.equal examples.Length 400 "COUNT questions, loadable as a task file"
            let category = dict [ "dog", "Animal"; "oak", "Plant"; "hammer", "Artifact"; "baker", "Person"; "run", "Motion"; "melt", "Change" ]
            let words (s: string) = " " + Text.RegularExpressions.Regex.Replace(s.ToLowerInvariant(), "[^a-z]+", " ") + " "
            let mutable kinds = Set.empty
            for e in examples do
                let m = Text.RegularExpressions.Regex.Match(e.Input, "(?:Option:|Options:|one of:) (.*)\\.\\n")
                Expect.isTrue m.Success $"{e.Id}: lists its options"
                let options = m.Groups[1].Value.Split(", ")
                Expect.contains options e.Output $"{e.Id}: the answer is one of the options, spelt the same"
                Expect.isGreaterThanOrEqual options.Length 2 $"{e.Id}: at least two options"
                Expect.equal (Array.distinct options).Length options.Length $"{e.Id}: no option twice"
                Expect.isTrue (e.Input.EndsWith "Answer:") $"{e.Id}: ends with the answer cue"
                let text = e.Input.Substring(e.Input.IndexOf "Text: " + 6)
                if e.Input.Contains "Title: " then
                    let title = e.Input.Substring(e.Input.IndexOf "Title: " + 7).Split('\n')[0]
                    Expect.equal e.Output category[title] $"{e.Id}: the category of {title}"
                    kinds <- kinds.Add "category"
                elif options |> Array.exists (fun o -> category.ContainsKey o || o = "able") then
                    kinds <- kinds.Add "word"
                else
                    let t = words text
                    Expect.stringContains t (words e.Output) $"{e.Id}: the answer occurs in the text"
                    for o in options do
                        if o <> e.Output then Expect.isFalse (t.Contains(words o)) $"{e.Id}: the distractor {o} does not"
                    kinds <- kinds.Add "appears"
            Expect.equal kinds (set [ "appears"; "category"; "word" ]) "all three kinds occur"
            let code, out =
                NativeTests.run "node" [ Path.Combine(repo, "scripts", "lib", "build-questions.js"); Path.Combine(dir, "corpus.txt"); Path.Combine(dir, "nowhere")
                                         Path.Combine(dir, "bad.jsonl") ] 60000
            Expect.equal code 1 out
            Expect.stringContains out "nowhere/usr/share/wordnet/data.noun: not found" "names the missing file"
            Expect.isFalse (File.Exists(Path.Combine(dir, "bad.jsonl"))) "writes nothing"
        }

        test "the stage-3 question builder: sentiment and polarity questions answer on the AFINN scale, among their options, deterministic" {
            let dir = tempDir "klf-questions3-"
            let write = writeUnder dir
            let vocab = [| "amberstone"; "basilfield"; "cedarriver"; "deltatower"; "emberbridge"; "fjordstone"; "grovefield"; "harborriver" |]
            let rnd = Random 11
            let paragraphs = [ for _ in 1 .. 120 -> String.Join(" ", [ for _ in 1 .. 40 -> if rnd.Next 3 = 0 then "the" else vocab[rnd.Next vocab.Length] ]) + "." ]
            write "corpus.txt" (String.Join("\n", paragraphs) + "\n")
            let header = "  1 This software and database is provided.\n"
            write "wn/usr/share/wordnet/data.noun" (header + "00001 05 n 01 dog 0 000 | a domesticated carnivorous mammal  \n")
            write "wn/usr/share/wordnet/data.verb" (header + "00005 38 v 01 run 0 000 | move fast by using the legs  \n")
            write "wn/usr/share/wordnet/data.adj" (header + "00007 00 a 01 able(a) 0 000 | having the means to do something  \n")
            write "wn/usr/share/wordnet/data.adv" header
            write "afinn.json" """[["amberstone", 3], ["basilfield", -3], ["cedarriver", 2], ["deltatower", -2], ["emberbridge", 1], ["fjordstone", -1], ["able", 2]]"""
            let build (file: string) =
                let code, out =
                    NativeTests.run "node" [ Path.Combine(repo, "scripts", "lib", "build-questions.js"); Path.Combine(dir, "corpus.txt"); Path.Combine(dir, "wn")
                                             Path.Combine(dir, file); "600"; "3"; Path.Combine(dir, "afinn.json") ] 60000
                Expect.equal code 0 out
                Expect.stringContains out "600 questions (120 paragraphs, 3 synsets, 7 AFINN words, 0 topic domains)" "reports what it read"
                File.ReadAllBytes(Path.Combine(dir, file))
            let bytes = build "q3.jsonl"
            Expect.sequenceEqual (build "again.jsonl") bytes "same inputs and seed, same bytes"
            let scale = set [ "very negative"; "negative"; "neutral"; "positive"; "very positive" ]
            let valence = dict [ "amberstone", 3; "basilfield", -3; "cedarriver", 2; "deltatower", -2; "emberbridge", 1; "fjordstone", -1 ]
            // The rule of scripts/lib/sentiment-lexicon.js (the fixture has no negators).
            let ruleClass (text: string) =
                let scores = [ for w in text.Split(' ') do
                                 match valence.TryGetValue(w.Trim('.')) with
                                 | true, v -> v
                                 | _ -> () ]
                let sum = List.sum scores
                if scores.IsEmpty then "neutral" elif sum <= -5 then "very negative" elif sum < 0 then "negative" elif sum >= 5 then "very positive" else "positive"
            let mutable fiveWay, twoWay, answers = 0, 0, Set.empty
            for e in TaskFile.load (Path.Combine(dir, "q3.jsonl")) do
                let m = Text.RegularExpressions.Regex.Match(e.Input, "(?:Option:|Options:|one of:) (.*)\\.\\n")
                Expect.isTrue m.Success $"{e.Id}: lists its options"
                let options = m.Groups[1].Value.Split(", ")
                Expect.contains options e.Output $"{e.Id}: the answer is one of the options"
                if options |> Array.forall scale.Contains then
                    answers <- answers.Add e.Output
                    if options.Length = 2 then twoWay <- twoWay + 1
                    if options.Length = 5 then
                        // Only the sentiment kind shows the whole scale: its answer is the rule's class of the text.
                        let text = e.Input.Substring(e.Input.IndexOf "Text: " + 6).Split('\n')[0]
                        Expect.equal e.Output (ruleClass text) $"{e.Id}: the AFINN rule's class of the passage"
                        fiveWay <- fiveWay + 1
            Expect.isGreaterThan fiveWay 50 "sentiment questions on the five-class scale"
            Expect.isGreaterThan twoWay 20 "two-class questions"
            Expect.equal answers scale "every class of the scale is an answer somewhere"
        }

        test "the lexicon ceiling: the stage-3 AFINN rule and its fitted thresholds, scored on a review-star task file" {
            let dir = tempDir "klf-lexicon-"
            let write = writeUnder dir
            write "afinn.json" """[["good", 3], ["bad", -3], ["awful", -4], ["great", 3], ["fine", 0]]"""
            let example (label: string) (text: string) =
                $"{{\"id\": \"r\", \"input\": \"What is the sentiment? Option: very negative, negative, neutral, positive, very positive.\\nTitle: t\\nText: {text}\\n\\nAnswer:\", \"output\": \"{label}\"}}"
            // Sums -11, -3 (negated), 0 (no scored word), 6, 9: the rule calls 6 very positive, the fitted cuts (-3, 0, 6, 9) do not.
            let rows = [ example "very negative" "awful awful bad"; example "negative" "it is not good"; example "neutral" "nothing fine here"
                         example "positive" "good and good"; example "very positive" "good good great" ]
            write "stars.json" ("[" + String.Join(",", rows) + "]")
            let script = Path.Combine(repo, "scripts", "lexicon-ceiling.js")
            let code, out = NativeTests.run "node" [ script; Path.Combine(dir, "afinn.json"); Path.Combine(dir, "stars.json") ] 60000
            Expect.equal code 0 out
            Expect.stringContains out "file\texamples\tcoverage\trule\tfitted\tpolarity\tmajority\tmedians" "the header"
            Expect.stringContains out "stars.json\t5\t80.0 %\t80.0 %\t100.0 %\t100.0 %\t20.0 %\t-11 / -3 / 0 / 6 / 9" "coverage, rule, fitted, polarity, majority, medians"
            write "topics.json" """[{"id": "a", "input": "Topic?\nText: good", "output": "Business"}]"""
            let code, out = NativeTests.run "node" [ script; Path.Combine(dir, "afinn.json"); Path.Combine(dir, "stars.json"); Path.Combine(dir, "topics.json") ] 60000
            Expect.equal code 1 out
            Expect.stringContains out "topics.json: label \"Business\" is not one of very negative" "names the file and the label"
            Expect.isFalse (out.Contains "examples\tcoverage") "no half table"
        }

        test "the embedded Standard CL excerpt: stated counts, train from train and test from test, loads as standard/order1" {
            let root = Path.Combine(repo, "data", "standard-cl")
            let orders = Orders.load (Path.Combine(root, "orders.json"))
            let sequence = TaskSequence.ofOrder root orders "standard" "order1"
            Expect.equal (TaskSequence.names sequence) [ "dbpedia"; "amazon"; "yahoo"; "agnews" ] "the Standard CL order 1"
            let key (e: Example) = e.Id, e.Input, e.Output
            for t in sequence.Tasks do
                Expect.equal t.Train.Length 300 $"{t.Name}: 300 training examples"
                Expect.equal t.Test.Length 200 $"{t.Name}: 200 test examples"
                let source split = Benchmark.load (Path.Combine(BenchmarkData.benchmarksRoot.Value, "long_sequence")) split t.Name |> Array.map key |> set
                let train, test = source "train", source "test"
                Expect.isTrue (t.Train |> Array.forall (fun e -> train.Contains(key e))) $"{t.Name}: every training example is in the benchmark's train split"
                Expect.isTrue (t.Test |> Array.forall (fun e -> test.Contains(key e))) $"{t.Name}: every test example is in the benchmark's test split"
                Expect.equal (t.Train |> Array.distinctBy key).Length 300 $"{t.Name}: no training example twice"
                for split, xs in [ "train", t.Train; "test", t.Test ] do
                    let counts = xs |> Array.countBy (fun e -> e.Output) |> Array.map snd
                    Expect.isLessThanOrEqual (Array.max counts - Array.min counts) 1 $"{t.Name} {split}: label-balanced"
            let provenance = File.ReadAllText(Path.Combine(root, "PROVENANCE.md"))
            for s in [ "make-default-stream.fsx"; "Seed"; "yahoo"; "dev/yahoo.json" ] do Expect.stringContains provenance s $"PROVENANCE.md mentions {s}"
        }
    ]
