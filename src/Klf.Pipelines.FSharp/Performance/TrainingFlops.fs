namespace Klf.Pipelines

open Klf.Models.Llama

/// Floating-point operations of a LLaMA training step, counted as the benchmarks state them: every
/// weight matrix of the layers does one multiply-add per token forward and two backward (6 FLOPs per
/// weight per token); attention scores and the weighted sum are counted in full (T × T per head, as
/// computed); the LM head only on the positions that have a label (the loss computes it there only);
/// embeddings, norms, activations and the optimizer are not counted.
[<RequireQualifiedAccess>]
module TrainingFlops =
    /// Weights of the layers' matrices (attention and MLP projections), without embeddings and head.
    let layerMatrixWeights (c: LlamaConfig) : float =
        let d, i = float c.HiddenSize, float c.IntermediateSize
        let qo = 2.0 * d * float (c.NumAttentionHeads * c.HeadDim)
        let kv = 2.0 * d * float (c.NumKeyValueHeads * c.HeadDim)
        float c.NumHiddenLayers * (qo + kv + 3.0 * d * i)

    /// FLOPs of one optimizer step on `batch` sequences of `seqLen` tokens with `labels` label positions each.
    let llamaStep (c: LlamaConfig) (batch: int) (seqLen: int) (labels: int) : float =
        let tokens = float batch * float seqLen
        let matrices = 6.0 * layerMatrixWeights c * tokens
        let attention = 3.0 * 4.0 * float batch * float seqLen * float seqLen * float (c.NumAttentionHeads * c.HeadDim) * float c.NumHiddenLayers
        let head = 6.0 * float c.HiddenSize * float c.VocabSize * float batch * float labels
        matrices + attention + head
