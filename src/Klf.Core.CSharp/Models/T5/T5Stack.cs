using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.T5;

/// <summary>
/// The T5 encoder or decoder: <c>block</c> (a list of <see cref="T5Block"/>) and <c>final_layer_norm</c>.
/// It does not hold the token embedding (HF's <c>embed_tokens</c> is an alias of <c>shared</c>, owned by
/// <see cref="T5ForConditionalGeneration"/>): it takes embedded inputs.
/// </summary>
public sealed class T5Stack : nn.Module
{
    /// <summary>The blocks; block 0's self-attention owns the relative position bias of the whole stack.</summary>
    public ModuleList<T5Block> block;
    /// <summary>Norm after the last block.</summary>
    public T5LayerNorm final_layer_norm;
    /// <summary>Dropout on the embeddings and on the output.</summary>
    public Dropout dropout;

    private readonly bool isDecoder;

    /// <summary>Creates the encoder (num_layers blocks) or the decoder (num_decoder_layers blocks).</summary>
    public T5Stack(T5Config config, bool isDecoder) : base(isDecoder ? "T5Decoder" : "T5Encoder")
    {
        this.isDecoder = isDecoder;
        int n = isDecoder ? config.NumDecoderLayers : config.NumLayers;
        block = nn.ModuleList(Enumerable.Range(0, n).Select(i => new T5Block(config, isDecoder, i)).ToArray());
        final_layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon);
        dropout = nn.Dropout(config.DropoutRate);
        RegisterComponents();
    }

    /// <summary>Additive mask from a boolean "may attend" tensor: 0 where allowed, the dtype's lowest finite value elsewhere (HF's convention).</summary>
    internal static Tensor AdditiveMask(Tensor allowed, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var lowest = torch.finfo(dtype).min;
        return torch.zeros(allowed.shape, dtype, allowed.device).masked_fill(allowed.logical_not(), lowest).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Runs the stack. <paramref name="inputsEmbeds"/> (B, T, D) are the embedded tokens.
    /// Encoder: <paramref name="attentionMask"/> (B, T) int64/bool, 1 = real token (null = all real).
    /// Decoder: causal self-attention; <paramref name="encoderHidden"/> (B, S, D) with
    /// <paramref name="encoderMask"/> (B, S) (null = all real); with a <paramref name="cache"/> the T inputs sit at
    /// positions [cache.PastLength, cache.PastLength + T), the cache grows by T.
    /// Returns fresh (B, T, D) hidden states after final_layer_norm and dropout; arguments are not disposed.
    /// </summary>
    public Tensor forward(Tensor inputsEmbeds, Tensor? attentionMask, Tensor? encoderHidden, Tensor? encoderMask, T5KvCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var device = inputsEmbeds.device;
        var dtype = inputsEmbeds.dtype;
        long t = inputsEmbeds.shape[1];
        long past = isDecoder ? cache?.PastLength ?? 0 : 0;
        long keyLength = past + t;

        // Position bias, computed once by block 0 and shared by every block (added together with the mask).
        var bias = block[0].SelfAttentionLayer.SelfAttention.ComputeBias(t, keyLength, past, device); // (1, H, T, K)
        Tensor selfBias;
        Tensor? crossBias = null;
        if (!isDecoder)
        {
            selfBias = attentionMask is null ? bias
                : bias + AdditiveMask(attentionMask.ne(0).unsqueeze(1).unsqueeze(1), dtype); // (B, H, T, T)
        }
        else
        {
            var queryPositions = torch.arange(past, keyLength, dtype: ScalarType.Int64, device: device).unsqueeze(1); // (T, 1)
            var keyPositions = torch.arange(0, keyLength, dtype: ScalarType.Int64, device: device).unsqueeze(0); // (1, K)
            selfBias = bias + AdditiveMask(keyPositions.le(queryPositions).unsqueeze(0).unsqueeze(0), dtype); // (1, H, T, K)
            if (encoderMask is not null)
                crossBias = AdditiveMask(encoderMask.ne(0).unsqueeze(1).unsqueeze(1), dtype); // (B, 1, 1, S)
        }

        var h = dropout.forward(inputsEmbeds);
        for (int i = 0; i < block.Count; i++)
        {
            var next = block[i].forward(h, selfBias, encoderHidden, crossBias,
                isDecoder ? cache?.SelfAttention[i] : null, isDecoder ? cache?.CrossAttention[i] : null);
            h = next;
        }
        h = dropout.forward(final_layer_norm.forward(h));
        if (isDecoder && cache is not null) cache.PastLength += t;
        return h.MoveToOuterDisposeScope();
    }
}
