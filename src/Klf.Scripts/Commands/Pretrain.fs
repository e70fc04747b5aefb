/// `klf pretrain`: causal-LM pre-training of a LLaMA-family model on a plain-text corpus, saved
/// as a Hugging Face folder with the tokenizer, the loss curve and a model card.
module Klf.Cli.Pretrain

open System
open System.IO
open System.CommandLine
open System.Security.Cryptography
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open Klf.Models
open Klf.Models.Llama
open Klf.Tokenizers
open Klf.Checkpoints
open Klf.Pipelines
open Klf.Cli.Cli
open Klf.Cli.Common
open Klf.Reports

let private corpus = req<string> "--corpus" "Plain-text UTF-8 corpus, one document or paragraph per line (scripts/fetch-corpus.sh makes one)."
let private tokenizer = req<string> "--tokenizer" "Tokenizer folder (scripts/train-tokenizer.sh makes one); its files are copied beside the weights."
let private preset = opt<string> "--preset" "Start from a LLaMA preset's shape (vocabulary = the tokenizer's)." None
let private configJson = opt<string> "--config-json" "Start from a LLaMA config.json's shape." None
let private hidden = opt<int> "--hidden" "hidden_size (overrides the preset's or config's)." None |> check (atLeast 1)
let private layers = opt<int> "--layers" "num_hidden_layers." None |> check (atLeast 1)
let private heads = opt<int> "--heads" "num_attention_heads (head_dim = hidden / heads)." None |> check (atLeast 1)
let private kvHeads = opt<int> "--kv-heads" "num_key_value_heads (default: --heads; fewer = grouped-query attention)." None |> check (atLeast 1)
let private intermediate = opt<int> "--intermediate" "intermediate_size of the SwiGLU MLP (default without preset or config: 8/3 × hidden, rounded to a multiple of 16)." None |> check (atLeast 1)
let private maxPositions = opt<int> "--max-positions" "max_position_embeddings (default without preset or config: 512; at least seq-len + 1)." None |> check (atLeast 1)
let private tied = opt<Nullable<bool>> "--tie-embeddings" "Tie the LM head to the token embeddings (default without preset or config: true)." None
let private steps = req<int> "--steps" "Optimizer steps." |> check (atLeast 1)
let private batch = opt<int> "--batch" "Windows per step." (Some 16) |> check (atLeast 1)
let private seqLen = opt<int> "--seq-len" "Predicted tokens per window (windows hold seq-len + 1 tokens)." (Some 128) |> check (atLeast 1)
let private lr = opt<float> "--lr" "Peak learning rate (AdamW)." (Some 3e-3) |> check (finitePositive)
let private warmup = opt<int> "--warmup" "Linear warm-up steps before the cosine decay." (Some 100) |> check (atLeast 0)
let private minLr = opt<float> "--min-lr-ratio" "The cosine decay's floor, as a fraction of --lr." (Some 0.1) |> check (within 0.0 1.0)
let private weightDecay = opt<float> "--weight-decay" "AdamW decoupled weight decay." (Some 0.01) |> check (finiteNonNegative)
let private beta2 = opt<float> "--beta2" "AdamW β2." (Some 0.95) |> check (within 0.0 0.999999)
let private seed = opt<int> "--seed" "Seeds the initialisation and the window sampler." (Some 1)
let private heldOut = opt<float> "--heldout-fraction" "Fraction of the corpus's lines (the last ones) held out for evaluation." (Some 0.01) |> check (between 0.0 1.0)
let private evalEvery = opt<int> "--eval-every" "Held-out evaluation (and a loss.csv row) every this many steps." (Some 100) |> check (atLeast 1)
let private evalWindows = opt<int> "--eval-windows" "At most this many held-out windows per evaluation, evenly spaced (0 = all)." (Some 256) |> check (atLeast 1)
let private logEvery = opt<int> "--log-every" "A progress line every this many steps." (Some 10) |> check (atLeast 1)
let private saveDtype = opt<string> "--save-dtype" "Weights' storage type: fp32 or bf16 (training is always float32)." (Some "fp32")
let private threads = opt<int> "--threads" "Torch intra-op threads (0: torch's default)." (Some 0) |> check (atLeast 0)
let private out = req<string> "--out" "Output folder (written atomically): config.json, model.safetensors, manifest.json, tokenizer files, loss.csv, loss.png, MODEL_CARD.md." |> check folderToWrite

let private sha256 (path: string) =
    use s = File.OpenRead path
    Convert.ToHexString(SHA256.HashData s).ToLowerInvariant()

/// A positive integer option's value, or None when it was not given (0).
let private given (pr: ParseResult) (o: Option<int>) =
    match pr.GetValue o with
    | 0 -> None
    | v when v < 0 -> raise (ArgumentException $"{o.Name} must be positive, got {v}")
    | v -> Some v

/// The model's config.json: a preset's, a file's or a fresh LLaMA shape, with the shape flags
/// applied, the tokenizer's vocabulary and special ids, and the storage dtype.
let private modelConfig (pr: ParseResult) (tok: ITextTokenizer) : JsonObject =
    let fresh () =
        let h = given pr hidden |> Option.defaultWith (fun () -> raise (ArgumentException "give --preset, --config-json, or the shape: --hidden, --layers and --heads"))
        let c = JsonObject()
        c["architectures"] <- JsonArray(JsonValue.Create "LlamaForCausalLM")
        c["model_type"] <- "llama"
        c["hidden_size"] <- h
        c["intermediate_size"] <- int (Math.Round(8.0 / 3.0 * float h / 16.0)) * 16
        c["num_hidden_layers"] <- given pr layers |> Option.defaultWith (fun () -> raise (ArgumentException "--layers is required without --preset or --config-json"))
        c["num_attention_heads"] <- given pr heads |> Option.defaultWith (fun () -> raise (ArgumentException "--heads is required without --preset or --config-json"))
        c["max_position_embeddings"] <- 512
        c["tie_word_embeddings"] <- true
        c["rms_norm_eps"] <- 1e-5
        c["rope_theta"] <- 10000.0
        c["initializer_range"] <- 0.02
        c["pad_token_id"] <- null
        c
    let c =
        match pr.GetValue preset, pr.GetValue configJson with
        | (null | ""), (null | "") -> fresh ()
        | p, (null | "") -> LlamaConfig.Preset(p, tok.VocabSize).ToJson()
        | (null | ""), f ->
            if not (File.Exists f) then raise (FileNotFoundException($"{f}: config file not found", f))
            try
                match JsonNode.Parse(File.ReadAllText f) with
                | :? JsonObject as o -> o
                | _ -> raise (InvalidDataException $"{f}: the top level is not a JSON object")
            with :? JsonException as e -> raise (InvalidDataException $"{f}: not valid JSON ({e.Message})")
        | _ -> raise (ArgumentException "give either --preset or --config-json, not both")
    let set (name: string) (v: int option) = v |> Option.iter (fun v -> c[name] <- v)
    set "hidden_size" (given pr hidden)
    set "num_hidden_layers" (given pr layers)
    set "num_attention_heads" (given pr heads)
    set "intermediate_size" (given pr intermediate)
    set "max_position_embeddings" (given pr maxPositions)
    c["num_key_value_heads"] <- given pr kvHeads |> Option.defaultValue (c["num_attention_heads"].GetValue<int>())
    if (given pr hidden).IsSome || (given pr heads).IsSome || isNull c["head_dim"] then
        let h, a = c["hidden_size"].GetValue<int>(), c["num_attention_heads"].GetValue<int>()
        if h % a <> 0 then raise (ArgumentException $"hidden_size {h} is not a multiple of num_attention_heads {a}")
        if (h / a) % 2 <> 0 then raise (ArgumentException $"head_dim = hidden / heads = {h / a} must be even (rotary embeddings rotate pairs)")
        c["head_dim"] <- h / a
    let t = pr.GetValue tied
    if t.HasValue then c["tie_word_embeddings"] <- t.Value
    match c["vocab_size"] with
    | null -> c["vocab_size"] <- tok.VocabSize
    | v when v.GetValue<int>() < tok.VocabSize -> raise (ArgumentException $"vocab_size {v} is smaller than the tokenizer's {tok.VocabSize} ids")
    | _ -> ()
    c["bos_token_id"] <- tok.BosId.Value
    c["eos_token_id"] <- tok.EosId
    c["torch_dtype"] <- (if pr.GetValue saveDtype = "bf16" then "bfloat16" else "float32")
    let positions, window = c["max_position_embeddings"].GetValue<int>(), pr.GetValue seqLen + 1
    if positions < window then
        raise (ArgumentException $"max_position_embeddings {positions} is shorter than a window of seq-len + 1 = {window} tokens")
    LlamaConfig.FromJson(c, "the model configuration") |> ignore   // validates (errors name the field)
    c

/// The command line as a user would type it again (`klf pretrain …`, arguments quoted when needed).
let private commandLine (pr: ParseResult) =
    let quote (s: string) =
        if s <> "" && s |> Seq.forall (fun ch -> Char.IsAsciiLetterOrDigit ch || "-_./=:,+@".Contains ch) then s
        else "'" + s.Replace("'", "'\\''") + "'"
    "./klf " + String.Join(" ", pr.Tokens |> Seq.map (fun t -> quote t.Value))

/// The `klf pretrain` command.
let cmd =
    command "pretrain" "Pre-train a LLaMA-family model on a plain-text corpus (causal LM, loss on every token) and save it with its tokenizer, loss curve and model card."
        [ corpus; tokenizer; preset; configJson; hidden; layers; heads; kvHeads; intermediate; maxPositions; tied; steps; batch; seqLen
          lr; warmup; minLr; weightDecay; beta2; seed; heldOut; evalEvery; evalWindows; logEvery; saveDtype; threads; deviceOption; out ] (fun pr ->
        let wall = Diagnostics.Stopwatch.StartNew()
        let corpusPath = pr.GetValue corpus
        if not (File.Exists corpusPath) then raise (FileNotFoundException($"{corpusPath}: corpus file not found", corpusPath))
        savesBf16 (pr.GetValue saveDtype) |> ignore // an unknown value fails before any work
        let fraction = pr.GetValue heldOut
        if not (fraction >= 0.0 && fraction < 1.0) then raise (ArgumentException $"--heldout-fraction must lie in [0, 1), got {fraction}")
        if not (pr.GetValue lr > 0.0) then raise (ArgumentException $"--lr must be positive, got {pr.GetValue lr}")
        let options =
            { Steps = pr.GetValue steps; Batch = pr.GetValue batch; SeqLen = pr.GetValue seqLen; LearningRate = pr.GetValue lr
              Warmup = pr.GetValue warmup; MinLrRatio = pr.GetValue minLr; WeightDecay = pr.GetValue weightDecay; Beta2 = pr.GetValue beta2
              Seed = pr.GetValue seed; EvalEvery = pr.GetValue evalEvery; EvalWindows = pr.GetValue evalWindows }
        if options.Steps < 1 || options.Batch < 1 || options.SeqLen < 1 || options.EvalEvery < 1 || options.Warmup < 0 then
            raise (ArgumentException "--steps, --batch, --seq-len and --eval-every must be at least 1, --warmup at least 0")
        if not (options.MinLrRatio >= 0.0 && options.MinLrRatio <= 1.0) then raise (ArgumentException $"--min-lr-ratio must lie in [0, 1], got {options.MinLrRatio}")
        Klf.Native.TorchNative.EnsureLoaded()
        if pr.GetValue threads > 0 then torch.set_num_threads (pr.GetValue threads)
        let tokDir = pr.GetValue tokenizer
        let tok = TokenizerLoader.FromFolder tokDir
        if not tok.BosId.HasValue then raise (ArgumentException $"{tok.Name}: pre-training needs a tokenizer with a BOS id (a LLaMA SentencePiece model)")
        let config = modelConfig pr tok
        let dev = device (pr.GetValue deviceOption)

        let lines = Pretrain.readCorpus corpusPath
        let clock = Diagnostics.Stopwatch.StartNew()
        let streams = lines |> Pretrain.encodeLines tok |> Pretrain.split fraction
        printfn "corpus      %s: %d lines, %d train tokens (%d lines), %d held-out tokens (%d lines); tokenized in %.1f s"
            corpusPath lines.Length streams.Train.Length streams.TrainLines streams.HeldOut.Length streams.HeldOutLines clock.Elapsed.TotalSeconds

        Klf.Training.Trainer.Seed(int64 options.Seed)
        let model = LanguageModels.FromConfig(config, "the model configuration", dev, torch.ScalarType.Float32)
        try
            let parameters = Model.parameterCount model
            printfn "model       llama, %d parameters: hidden %O, %O layers, %O heads (%O kv), MLP %O, vocab %O, tied %O"
                parameters config["hidden_size"] config["num_hidden_layers"] config["num_attention_heads"] config["num_key_value_heads"]
                config["intermediate_size"] config["vocab_size"] config["tie_word_embeddings"]
            printfn "training    %d steps x %d windows x %d tokens, lr %g (warm-up %d, cosine to %g x), %d threads, device %O"
                options.Steps options.Batch options.SeqLen options.LearningRate options.Warmup options.MinLrRatio (torch.get_num_threads ()) dev
            let every = max 1 (pr.GetValue logEvery)
            let progress (p: PretrainProgress) =
                if p.Step % every = 0 || p.Step = p.Steps then
                    printfn "step %6d/%d  loss %.4f  avg %.4f  lr %.2e  %.0f tokens/s" p.Step p.Steps p.Loss p.SmoothedLoss p.LearningRate p.TokensPerSecond
            let evaluated (p: PretrainPoint) =
                printfn "eval %6d  tokens %d  train %.4f  held-out %.4f  perplexity %.2f  (%.0f s)"
                    p.Step p.Tokens p.TrainLoss p.HeldOutLoss (Math.Exp p.HeldOutLoss) p.ElapsedSeconds
            let result = Pretrain.run options progress evaluated streams model
            let last = List.last result.Points
            printfn "throughput  %.0f tokens/s in optimizer steps (%.1f s), %.1f s with evaluations" (float result.Tokens / result.StepSeconds) result.StepSeconds result.TotalSeconds

            if pr.GetValue saveDtype = "bf16" then model.Module.``to``(torch.ScalarType.BFloat16) |> ignore
            let dir = pr.GetValue out
            let scratch = Directory.CreateTempSubdirectory("klf-pretrain-").FullName
            try
                let write name (bytes: byte[]) = File.WriteAllBytes(Path.Combine(scratch, name), bytes); Path.Combine(scratch, name)
                let csvFile = write "loss.csv" (Text.UTF8Encoding(false).GetBytes(Pretrain.csv result.Points))
                SkiaNative.ensure ()
                let pngFile = write "loss.png" (Plots.lossCurve "pre-training loss" result.Points)
                let sourcesFile =
                    let s = Path.Combine(Path.GetDirectoryName(Path.GetFullPath corpusPath), "SOURCES.md")
                    if File.Exists s then Some s else None
                let tokFiles = tokenizerFiles tokDir
                let card : ModelCard.Card =
                    { Config = config
                      Parameters = parameters
                      Tokenizer = tok.Name
                      TokenizerVocab = tok.VocabSize
                      TokenizerFiles = tokFiles |> List.map (fun f -> Path.GetFileName f, sha256 f)
                      Corpus = corpusPath
                      CorpusBytes = FileInfo(corpusPath).Length
                      CorpusLines = lines.Length
                      CorpusSha256 = sha256 corpusPath
                      Sources = sourcesFile |> Option.map Path.GetFileName
                      TrainTokens = streams.Train.Length
                      HeldOutTokens = streams.HeldOut.Length
                      TrainLines = streams.TrainLines
                      HeldOutLines = streams.HeldOutLines
                      Options = options
                      HeldOutFraction = fraction
                      SaveDtype = pr.GetValue saveDtype
                      Result = result
                      WallSeconds = wall.Elapsed.TotalSeconds
                      LossPlot = "loss.png"
                      LossCsv = "loss.csv"
                      Command = commandLine pr
                      Versions = [ "klf", (typeof<ModelCard.Card>.Assembly.GetName().Version |> string); "TorchSharp", (typeof<torch>.Assembly.GetName().Version |> string) ] }
                let cardFile = write "MODEL_CARD.md" (Text.UTF8Encoding(false).GetBytes(ModelCard.render card))
                let extra = JsonObject()
                extra["kind"] <- "pretrain"
                extra["steps"] <- options.Steps
                extra["tokens"] <- result.Tokens
                extra["train_loss"] <- (if Double.IsFinite last.TrainLoss then JsonValue.Create last.TrainLoss else null)
                extra["heldout_loss"] <- (if Double.IsFinite last.HeldOutLoss then JsonValue.Create last.HeldOutLoss else null)
                extra["seed"] <- options.Seed
                extra["corpus_sha256"] <- card.CorpusSha256
                extra["command"] <- card.Command
                let files = tokFiles @ [ csvFile; pngFile; cardFile ] @ Option.toList sourcesFile
                Checkpoint.Save(model, dir, extra, files, tokenizer = tok) |> ignore
            finally
                try Directory.Delete(scratch, true) with _ -> ()
            printfn "final       train %.4f, held-out %.4f (perplexity %.2f), %d tokens seen" last.TrainLoss last.HeldOutLoss (Math.Exp last.HeldOutLoss) result.Tokens
            printfn "saved       %s (%.0f s in all)" (Path.GetFullPath dir) wall.Elapsed.TotalSeconds
            0
        finally
            model.Dispose())
