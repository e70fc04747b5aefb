/// MODEL_CARD.md of a pre-trained model (`klf pretrain`): what was trained, on what, how, and the
/// command that reproduces it.
module Klf.Reports.ModelCard

open System
open System.Globalization
open System.Text
open System.Text.Json.Nodes
open Klf.Pipelines

/// Everything the card states.
type Card =
    { /// The model's config.json.
      Config: JsonObject
      /// Parameters (a tied embedding counted once).
      Parameters: int64
      /// The tokenizer's description (kind and file).
      Tokenizer: string
      /// Ids the tokenizer knows (the model's vocab_size may be larger).
      TokenizerVocab: int
      /// SHA-256 of each tokenizer file copied beside the weights, by file name.
      TokenizerFiles: (string * string) list
      /// The corpus file as given on the command line.
      Corpus: string
      /// Its size in bytes.
      CorpusBytes: int64
      /// Its non-blank lines.
      CorpusLines: int
      /// Its SHA-256.
      CorpusSha256: string
      /// The corpus's SOURCES.md copied into the model folder (its file name), when there was one.
      Sources: string option
      /// The token streams (sizes only are used).
      TrainTokens: int
      /// Held-out tokens.
      HeldOutTokens: int
      /// Training lines.
      TrainLines: int
      /// Held-out lines.
      HeldOutLines: int
      /// The training settings.
      Options: PretrainOptions
      /// The held-out fraction of lines.
      HeldOutFraction: float
      /// fp32 or bf16.
      SaveDtype: string
      /// The run's curve and timings.
      Result: PretrainResult
      /// Wall time of the whole command (reading, tokenizing, training, saving), seconds.
      WallSeconds: float
      /// The loss plot's file name.
      LossPlot: string
      /// The loss CSV's file name.
      LossCsv: string
      /// The command line that reproduces the model.
      Command: string
      /// Library versions (name, version).
      Versions: (string * string) list }

let private inv = CultureInfo.InvariantCulture
let private f4 (x: float) = if Double.IsFinite x then x.ToString("F4", inv) else "n/a"
let private ppl (x: float) = if Double.IsFinite x then Math.Exp(x).ToString("F2", inv) else "n/a"
let private g (x: float) = x.ToString("G4", inv)
let private n (x: int64) = x.ToString("N0", inv)
let private field (c: JsonObject) (name: string) = match c[name] with null -> "null" | v -> v.ToJsonString()

let private duration (s: float) =
    let t = TimeSpan.FromSeconds s
    if t.TotalHours >= 1.0 then $"{int t.TotalHours} h {t.Minutes} min" elif t.TotalMinutes >= 1.0 then $"{int t.TotalMinutes} min {t.Seconds} s" else $"{s:F1} s"

/// The card as Markdown.
let render (c: Card) : string =
    let o = c.Options
    let last = c.Result.Points |> List.last
    let first = c.Result.Points |> List.head
    let sb = StringBuilder()
    let line (s: string) = sb.AppendLine s |> ignore
    let cfg = field c.Config
    line "# Model card"
    line ""
    line $"A LLaMA-family causal language model pre-trained from random initialisation by `klf pretrain` on"
    line $"{n c.CorpusBytes} bytes of English text ({n c.Result.Tokens} tokens seen)."
    line ""
    line "## Architecture"
    line ""
    line "| field | value |"
    line "| --- | --- |"
    line $"| parameters | {n c.Parameters} |"
    for name in [ "model_type"; "vocab_size"; "hidden_size"; "intermediate_size"; "num_hidden_layers"; "num_attention_heads"
                  "num_key_value_heads"; "head_dim"; "max_position_embeddings"; "tie_word_embeddings"; "rms_norm_eps"; "rope_theta"
                  "bos_token_id"; "eos_token_id"; "pad_token_id"; "torch_dtype" ] do
        line $"| {name} | {cfg name} |"
    line ""
    line "RMSNorm, rotary position embeddings, SwiGLU MLP; `config.json` holds the full configuration."
    line ""
    line "## Tokenizer"
    line ""
    let bos, eos = cfg "bos_token_id", cfg "eos_token_id"
    line $"{c.Tokenizer}, {c.TokenizerVocab} ids (bos {bos}, eos {eos}), copied beside the weights:"
    line ""
    for file, sha in c.TokenizerFiles do line $"- `{file}` (SHA-256 `{sha}`)"
    line ""
    line "## Corpus"
    line ""
    line $"`{c.Corpus}`: {n c.CorpusBytes} bytes, {n (int64 c.CorpusLines)} non-blank lines, SHA-256 `{c.CorpusSha256}`."
    match c.Sources with
    | Some s -> line $"Its sources, versions and licences: [{s}]({s})."
    | None -> line "No SOURCES.md was found beside the corpus file."
    line ""
    line $"Every line is encoded as BOS + pieces + EOS and the lines are concatenated. The last {g (100.0 * c.HeldOutFraction)} %% of"
    line $"the lines are held out: training stream {n (int64 c.TrainTokens)} tokens ({n (int64 c.TrainLines)} lines), held-out stream"
    line $"{n (int64 c.HeldOutTokens)} tokens ({n (int64 c.HeldOutLines)} lines)."
    line ""
    line "## Training"
    line ""
    line "| setting | value |"
    line "| --- | --- |"
    line $"| steps | {o.Steps} |"
    line $"| batch | {o.Batch} windows of {o.SeqLen + 1} tokens ({o.SeqLen} predicted tokens each), sampled uniformly from the training stream with seed {o.Seed} |"
    line $"| tokens seen | {n c.Result.Tokens} ({g (float c.Result.Tokens / float (max 1 c.TrainTokens))} passes over the training stream) |"
    line $"| loss | next-token cross-entropy on every token |"
    line $"| optimizer | AdamW, β1 0.9, β2 {g o.Beta2}, ε 1e-8, weight decay {g o.WeightDecay}, gradient clipping at norm 1.0 |"
    line $"| learning rate | peak {g o.LearningRate}, linear warm-up over {o.Warmup} steps, cosine decay to {g (o.LearningRate * o.MinLrRatio)} ({g o.MinLrRatio} × peak) at step {o.Steps} |"
    let windows = if o.EvalWindows > 0 then $"at most {o.EvalWindows} windows" else "all windows"
    line $"| held-out evaluation | every {o.EvalEvery} steps, {windows} of the held-out stream |"
    line $"| precision | float32 training; weights saved as {c.SaveDtype} |"
    line $"| wall time | {duration c.WallSeconds} in all; {duration c.Result.StepSeconds} in optimizer steps ({(float c.Result.Tokens / c.Result.StepSeconds):F0} tokens/s) |"
    line ""
    line "## Results"
    line ""
    line "| | loss (nats/token) | perplexity |"
    line "| --- | ---: | ---: |"
    line $"| held-out, before training | {f4 first.HeldOutLoss} | {ppl first.HeldOutLoss} |"
    line $"| training (moving average), final | {f4 last.TrainLoss} | {ppl last.TrainLoss} |"
    line $"| held-out, final | {f4 last.HeldOutLoss} | {ppl last.HeldOutLoss} |"
    line ""
    line $"![loss curve]({c.LossPlot})"
    line ""
    line $"The curve's values: [{c.LossCsv}]({c.LossCsv})."
    line ""
    line "## Reproduce"
    line ""
    line "```"
    line c.Command
    line "```"
    line ""
    line ("Built with " + String.Join(", ", c.Versions |> List.map (fun (k, v) -> $"{k} {v}")) + ". On the CPU the same command and inputs")
    line "give the same weights up to floating-point differences between machines and thread counts."
    line ""
    line "## Limitations"
    line ""
    line "A very small model trained briefly on a small corpus: it continues text in the corpus's style but knows"
    line "little, makes things up, and is meant as a starting point for fine-tuning and continual-learning"
    line "experiments, not for any use that relies on what it says."
    sb.ToString()
