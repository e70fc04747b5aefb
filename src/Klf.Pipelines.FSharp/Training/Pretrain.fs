namespace Klf.Pipelines

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Text
open Klf.Models
open Klf.Tokenizers
open Klf.Training

/// A corpus turned into token streams: every line encoded as BOS + ids + EOS, the lines
/// concatenated; the last lines form the held-out stream.
type TokenStreams =
    { /// Training tokens (the first lines, concatenated).
      Train: int[]
      /// Held-out tokens (the last lines, concatenated; empty when none are held out).
      HeldOut: int[]
      /// Lines in the training stream.
      TrainLines: int
      /// Lines in the held-out stream.
      HeldOutLines: int }

/// Settings of causal-LM pre-training (see `Pretrain.run`).
type PretrainOptions =
    { /// Optimizer steps.
      Steps: int
      /// Windows per step.
      Batch: int
      /// Predicted tokens per window (each window holds SeqLen + 1 tokens).
      SeqLen: int
      /// Peak learning rate (AdamW).
      LearningRate: float
      /// Linear warm-up steps, then cosine decay.
      Warmup: int
      /// The cosine schedule's floor as a fraction of LearningRate.
      MinLrRatio: float
      /// AdamW decoupled weight decay (on every parameter).
      WeightDecay: float
      /// AdamW β2 (β1 is 0.9).
      Beta2: float
      /// Seeds the window sampler (the model's initialisation is seeded by whoever builds it).
      Seed: int
      /// Held-out evaluation every this many steps (and after the last step).
      EvalEvery: int
      /// At most this many held-out windows per evaluation, evenly spaced (0 = all).
      EvalWindows: int }

/// One row of the loss curve.
type PretrainPoint =
    { /// Optimizer steps taken (0 = before training).
      Step: int
      /// Predicted tokens seen so far (steps × batch × seq-len).
      Tokens: int64
      /// Exponential moving average of the training loss (β 0.98, bias-corrected); NaN at step 0.
      TrainLoss: float
      /// Mean next-token loss on the held-out windows; NaN without a held-out stream.
      HeldOutLoss: float
      /// Learning rate of the last step (of the first one at step 0).
      LearningRate: float
      /// Seconds since training started (evaluations included).
      ElapsedSeconds: float }

/// What one training step reports to a progress callback.
type PretrainProgress =
    { /// Steps taken (1-based count after this step).
      Step: int
      /// Planned steps.
      Steps: int
      /// This step's loss.
      Loss: float
      /// Moving average of the loss (see PretrainPoint.TrainLoss).
      SmoothedLoss: float
      /// This step's learning rate.
      LearningRate: float
      /// Predicted tokens seen so far.
      Tokens: int64
      /// Predicted tokens per second over the optimizer steps so far (evaluations excluded).
      TokensPerSecond: float }

/// The outcome of `Pretrain.run`.
type PretrainResult =
    { /// The loss curve: step 0, every EvalEvery steps, and the last step.
      Points: PretrainPoint list
      /// Predicted tokens seen.
      Tokens: int64
      /// Seconds inside optimizer steps.
      StepSeconds: float
      /// Seconds of the whole run, evaluations included.
      TotalSeconds: float }

/// Causal language-model pre-training on a plain-text corpus (one document or paragraph per line):
/// tokenize, split, sample packed windows, AdamW with warm-up and cosine decay, clipping at 1.0,
/// loss on every token (`CausalWindows`).
[<RequireQualifiedAccess>]
module Pretrain =

    /// The non-blank lines of a UTF-8 corpus file, in order. A missing file is a
    /// FileNotFoundException naming it; a file with no text is an InvalidDataException.
    let readCorpus (path: string) : string[] =
        if not (File.Exists path) then raise (FileNotFoundException($"{path}: corpus file not found", path))
        let lines = File.ReadAllLines(path, Encoding.UTF8) |> Array.filter (fun l -> not (String.IsNullOrWhiteSpace l))
        if lines.Length = 0 then raise (InvalidDataException($"{path}: the corpus has no text"))
        lines

    /// Each line as BOS + ids + EOS (encoded on all cores; the result is in line order).
    let encodeLines (tok: ITextTokenizer) (lines: string[]) : int[][] =
        if not tok.BosId.HasValue then raise (ArgumentException $"{tok.Name}: the tokenizer has no BOS id; pre-training marks every line with BOS and EOS")
        let out = Array.zeroCreate lines.Length
        Threading.Tasks.Parallel.For(0, lines.Length, fun i -> out[i] <- tok.Encode(lines[i], addBos = true, addEos = true)) |> ignore
        out

    /// Splits encoded lines: the last round(fraction × lines) lines (at least one when fraction > 0)
    /// are held out, the rest is training data; each part is concatenated in line order.
    let split (heldOutFraction: float) (encoded: int[][]) : TokenStreams =
        if not (heldOutFraction >= 0.0 && heldOutFraction < 1.0) then
            raise (ArgumentException $"the held-out fraction must lie in [0, 1), got {heldOutFraction}")
        let n = encoded.Length
        let held = if heldOutFraction = 0.0 then 0 else max 1 (int (Math.Round(heldOutFraction * float n)))
        if held >= n then raise (ArgumentException $"holding out {held} of {n} lines leaves none to train on")
        { Train = Array.concat encoded[.. n - held - 1]
          HeldOut = Array.concat encoded[n - held ..]
          TrainLines = n - held
          HeldOutLines = held }

    /// Mean next-token loss of a model on a stream (consecutive windows, at most `maxWindows`, 0 = all).
    let evaluate (seqLen: int) (batch: int) (maxWindows: int) (stream: int[]) (model: ILanguageModel) : float =
        CausalWindows.EvaluateLoss(model, stream, CausalWindows.EvaluationStarts(stream.Length, seqLen, maxWindows), seqLen, batch)

    /// Trains `model` on `streams.Train`: each step draws Batch window starts uniformly with
    /// Random(Seed), runs one StepRunner step (AdamW β1 0.9, β2 Beta2, ε 1e-8, clipping 1.0, warm-up
    /// then cosine decay to MinLrRatio × LearningRate) and reports progress; the held-out loss is
    /// measured before training, every EvalEvery steps and after the last one. The model is left
    /// trained, in training mode.
    let run (options: PretrainOptions) (onProgress: PretrainProgress -> unit) (onEval: PretrainPoint -> unit)
            (streams: TokenStreams) (model: ILanguageModel) : PretrainResult =
        let o = options
        if o.Steps < 1 then raise (ArgumentException $"--steps must be at least 1, got {o.Steps}")
        if o.Batch < 1 then raise (ArgumentException $"--batch must be at least 1, got {o.Batch}")
        if o.SeqLen < 1 then raise (ArgumentException $"--seq-len must be at least 1, got {o.SeqLen}")
        if o.EvalEvery < 1 then raise (ArgumentException $"--eval-every must be at least 1, got {o.EvalEvery}")
        if streams.Train.Length < o.SeqLen + 2 then
            raise (ArgumentException $"the training stream has {streams.Train.Length} tokens, too few for windows of {o.SeqLen + 1}")
        let optimizer =
            OptimizerOptions(LearningRate = o.LearningRate, Beta2 = o.Beta2, WeightDecay = o.WeightDecay, MaxGradNorm = 1.0,
                             WarmupSteps = o.Warmup, TotalSteps = o.Steps, Schedule = LearningRateSchedule.Cosine,
                             MinLearningRateRatio = o.MinLrRatio)
        let device = Trainer.DeviceOf model
        let rng = Random(o.Seed)
        let clock = Stopwatch.StartNew()
        let heldOut () =
            if streams.HeldOut.Length > o.SeqLen then evaluate o.SeqLen (max 1 o.Batch) o.EvalWindows streams.HeldOut model else nan
        let points = Collections.Generic.List<PretrainPoint>()
        let record (p: PretrainPoint) = points.Add p; onEval p
        record { Step = 0; Tokens = 0L; TrainLoss = nan; HeldOutLoss = heldOut (); LearningRate = optimizer.LearningRateAt 0
                 ElapsedSeconds = clock.Elapsed.TotalSeconds }
        use runner = new StepRunner(model, optimizer)
        let beta = 0.98
        let mutable ema, tokens, stepSeconds = 0.0, 0L, 0.0
        for step in 1 .. o.Steps do
            let starts = CausalWindows.SampleStarts(rng, streams.Train.Length, o.SeqLen, o.Batch)
            use batch = CausalWindows.Batch(streams.Train, starts, o.SeqLen, device)
            let m = runner.Step([| batch |])
            if not (Double.IsFinite m.Loss) then
                raise (InvalidOperationException $"the training loss became {m.Loss} at step {step}; lower --lr or raise --warmup")
            ema <- beta * ema + (1.0 - beta) * m.Loss
            let smoothed = ema / (1.0 - Math.Pow(beta, float step))
            tokens <- tokens + int64 o.Batch * int64 o.SeqLen
            stepSeconds <- stepSeconds + m.Elapsed.TotalSeconds
            onProgress { Step = step; Steps = o.Steps; Loss = m.Loss; SmoothedLoss = smoothed; LearningRate = m.LearningRate
                         Tokens = tokens; TokensPerSecond = float tokens / stepSeconds }
            if step % o.EvalEvery = 0 || step = o.Steps then
                record { Step = step; Tokens = tokens; TrainLoss = smoothed; HeldOutLoss = heldOut (); LearningRate = m.LearningRate
                         ElapsedSeconds = clock.Elapsed.TotalSeconds }
        { Points = List.ofSeq points; Tokens = tokens; StepSeconds = stepSeconds; TotalSeconds = clock.Elapsed.TotalSeconds }

    /// The loss curve as CSV: `step,tokens,train_loss,heldout_loss,lr,elapsed_s` (invariant culture;
    /// an unmeasured loss is an empty field).
    let csv (points: PretrainPoint list) : string =
        let num (x: float) = if Double.IsFinite x then x.ToString("R", CultureInfo.InvariantCulture) else ""
        let sb = StringBuilder("step,tokens,train_loss,heldout_loss,lr,elapsed_s\n")
        for p in points do
            sb.Append($"{p.Step},{p.Tokens},{num p.TrainLoss},{num p.HeldOutLoss},{num p.LearningRate},")
              .Append(p.ElapsedSeconds.ToString("F1", CultureInfo.InvariantCulture)).Append('\n') |> ignore
        sb.ToString()
