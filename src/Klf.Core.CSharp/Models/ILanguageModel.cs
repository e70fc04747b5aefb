using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models;

/// <summary>The three architectures Klf supports.</summary>
public enum ModelFamily
{
    /// <summary>Decoder-only (LLaMA family): prompt and answer form one sequence.</summary>
    DecoderOnly,
    /// <summary>Encoder-decoder (T5 family): the prompt is encoded, the answer decoded.</summary>
    EncoderDecoder,
    /// <summary>
    /// Encoder-only (BERT family, as sentence encoders): the prompt and each of the example's choices
    /// are embedded, and the answer is the choice whose embedding is most similar (<see cref="IChoiceModel"/>).
    /// It does not generate text.
    /// </summary>
    EncoderOnly,
}

/// <summary>
/// The candidate answers of the examples of one batch (encoder-only models), owned by the batch.
/// Choices shared by several examples (a task's labels) appear once.
/// </summary>
/// <param name="Ids">(C, L) int64: the C distinct choices' token ids, right-padded with the pad id.</param>
/// <param name="Mask">(C, L) int64, 1 for real tokens and 0 for padding.</param>
/// <param name="Allowed">(B, C) bool: whether choice c is one of example b's choices.</param>
public sealed record ChoiceBatch(Tensor Ids, Tensor Mask, Tensor Allowed) : IDisposable
{
    /// <summary>Moves all tensors to <paramref name="device"/>, returning a new set (this one is not disposed).</summary>
    public ChoiceBatch To(Device device) => new(Ids.to(device), Mask.to(device), Allowed.to(device));

    /// <summary>Disposes the three tensors.</summary>
    public void Dispose()
    {
        Ids.Dispose();
        Mask.Dispose();
        Allowed.Dispose();
    }
}

/// <summary>
/// One training or evaluation batch. Owns its tensors: dispose the batch to free them.
/// </summary>
/// <param name="InputIds">(B, T) int64 token ids, padded with the pad id.</param>
/// <param name="AttentionMask">(B, T) int64, 1 for real tokens and 0 for padding.</param>
/// <param name="Labels">
/// int64 targets, -100 where no loss is taken. Decoder-only: (B, T) aligned with
/// <paramref name="InputIds"/> (the model shifts by one inside the loss, as Hugging Face does).
/// Encoder-decoder: (B, L) answer tokens; the model builds decoder inputs by shifting right.
/// Encoder-only: (B) the index of each example's answer among <see cref="Choices"/>.
/// </param>
public sealed record LmBatch(Tensor InputIds, Tensor AttentionMask, Tensor Labels) : IDisposable
{
    /// <summary>Encoder-only batches: the examples' candidate answers (disposed with the batch); null otherwise.</summary>
    public ChoiceBatch? Choices { get; init; }

    /// <summary>Number of label positions that carry loss (labels != -100).</summary>
    public long LabelTokenCount
    {
        get
        {
            using var carries = Labels.ne(-100);
            using var count = carries.count_nonzero();
            return count.item<long>();
        }
    }

    /// <summary>Moves all tensors to <paramref name="device"/>, returning a new batch (this one is not disposed).</summary>
    public LmBatch To(Device device) => new(InputIds.to(device), AttentionMask.to(device), Labels.to(device)) { Choices = Choices?.To(device) };

    /// <summary>Disposes the tensors (with the choices').</summary>
    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        Labels.Dispose();
        Choices?.Dispose();
    }
}

/// <summary>Options of greedy generation.</summary>
/// <param name="MaxNewTokens">Cap on generated tokens per sequence.</param>
/// <param name="EosTokenIds">Generation of a sequence stops after it emits any of these (the EOS is not returned).</param>
/// <param name="UseCache">Use the key/value cache (true) or recompute the whole prefix each step (false; for testing).</param>
/// <param name="BatchSize">How many prompts are decoded together.</param>
public sealed record GenerationOptions(int MaxNewTokens = 16, int[]? EosTokenIds = null, bool UseCache = true, int BatchSize = 16);

/// <summary>
/// A language model Klf can train, fuse and generate with. Implemented by the model families
/// (<c>LlamaForCausalLM</c>, <c>T5ForConditionalGeneration</c>), which are TorchSharp modules whose
/// parameter names are exactly the Hugging Face checkpoint keys. Disposing the model frees its
/// parameters and buffers (the module's own <c>Dispose</c>).
/// </summary>
public interface ILanguageModel : IDisposable
{
    /// <summary>Decoder-only or encoder-decoder.</summary>
    ModelFamily Family { get; }

    /// <summary>The module holding every parameter (the model itself).</summary>
    nn.Module Module { get; }

    /// <summary>The HF <c>model_type</c> string (<c>llama</c>, <c>t5</c>).</summary>
    string ModelType { get; }

    /// <summary>The Hugging Face <c>config.json</c> this model was built from (a fresh copy each call).</summary>
    JsonObject ConfigJson();

    /// <summary>Padding token id used for batches.</summary>
    int PadTokenId { get; }

    /// <summary>End-of-sequence token id.</summary>
    int EosTokenId { get; }

    /// <summary>
    /// Checkpoint keys that are aliases of one of this model's parameters (tied weights), mapped
    /// to the parameter's own key. A strict load accepts them present or absent; they are not saved.
    /// </summary>
    IReadOnlyDictionary<string, string> TiedAliases { get; }

    /// <summary>
    /// Mean cross-entropy over label positions (labels != -100). Returns a fresh scalar float32
    /// tensor, owned by the caller (normally disposed by the step's dispose scope).
    /// </summary>
    Tensor ComputeLoss(LmBatch batch);

    /// <summary>
    /// Greedy decoding of each prompt (token ids, no padding), batched, under no_grad and in eval
    /// mode (the training mode is restored afterwards). Returns only the new tokens of each prompt,
    /// without the EOS. Decoder-only models left-pad prompts; results do not depend on batching.
    /// Encoder-only models do not generate: they throw <see cref="NotSupportedException"/> (choose
    /// among answers with <see cref="IChoiceModel.Choose"/> instead).
    /// </summary>
    int[][] GenerateGreedy(IReadOnlyList<int[]> prompts, GenerationOptions options);
}

/// <summary>
/// A model that answers by choosing among each example's candidate answers (encoder-only models:
/// the choice whose embedding is most similar to the prompt's).
/// </summary>
public interface IChoiceModel
{
    /// <summary>
    /// For each prompt, the index into its own choices (<paramref name="choices"/>[i]) of the one the model
    /// picks (ties: the first), under no_grad and in eval mode (the training mode is restored afterwards).
    /// Prompts and choices are token ids as the model reads them (encoder-only models: framed by the
    /// tokenizer, <c>[CLS] … [SEP]</c>, and cut to the model's length). Batched by <paramref name="batchSize"/>;
    /// results do not depend on batching.
    /// </summary>
    int[] Choose(IReadOnlyList<int[]> prompts, IReadOnlyList<int[][]> choices, int batchSize = 16);
}
