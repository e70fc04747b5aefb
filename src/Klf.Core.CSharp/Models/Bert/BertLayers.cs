using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Klf.Models.Bert;

// BERT's encoder, as Hugging Face's modeling_bert, top to bottom: embeddings, self-attention, the
// post-norm layer, the stack. The sentence encoder on top (pooling, similarity loss, choices):
// BertSentenceEncoder.cs. Shapes: B batch, T tokens, C hidden, H heads, D head dim, I intermediate.
// Field names are the HF checkpoint keys (embeddings.word_embeddings.weight,
// encoder.layer.0.attention.self.query.weight, …, encoder.layer.5.output.LayerNorm.bias).

/// <summary>Word, position and token-type embeddings, summed, normalised and dropped out (HF <c>BertEmbeddings</c>).</summary>
public sealed class BertEmbeddings : nn.Module
{
    /// <summary>(V, C) word embeddings; the pad row is a padding_idx, as in HF.</summary>
    public readonly Embedding word_embeddings;
    /// <summary>(P, C) absolute position embeddings.</summary>
    public readonly Embedding position_embeddings;
    /// <summary>(type_vocab_size, C) segment embeddings; single sentences use row 0.</summary>
    public readonly Embedding token_type_embeddings;
    /// <summary>Norm of the summed embeddings.</summary>
    public readonly LayerNorm LayerNorm;
    readonly Dropout dropout;

    /// <summary>Creates the tables from <paramref name="config"/>.</summary>
    public BertEmbeddings(BertConfig config) : base(nameof(BertEmbeddings))
    {
        word_embeddings = nn.Embedding(config.VocabSize, config.HiddenSize, padding_idx: config.PadTokenId);
        position_embeddings = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize);
        token_type_embeddings = nn.Embedding(config.TypeVocabSize, config.HiddenSize);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <summary><paramref name="inputIds"/> (B, T) int64, positions 0..T-1, token type 0 → fresh (B, T, C).</summary>
    public Tensor Forward(Tensor inputIds)
    {
        using var scope = torch.NewDisposeScope();
        long B = inputIds.shape[0], T = inputIds.shape[1];
        var positions = torch.arange(T, ScalarType.Int64, inputIds.device).unsqueeze(0);               // (1, T)
        var types = torch.zeros(B, T, ScalarType.Int64, inputIds.device);                              // (B, T)
        var x = word_embeddings.call(inputIds) + position_embeddings.call(positions) + token_type_embeddings.call(types);   // (B, T, C)
        return dropout.call(LayerNorm.call(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>Multi-head self-attention projections (HF <c>BertSelfAttention</c>).</summary>
public sealed class BertSelfAttention : nn.Module
{
    /// <summary>(C, C) query projection with bias.</summary>
    public readonly Linear query;
    /// <summary>(C, C) key projection with bias.</summary>
    public readonly Linear key;
    /// <summary>(C, C) value projection with bias.</summary>
    public readonly Linear value;
    readonly int nHead, headDim;
    readonly double dropoutP;

    /// <summary>Creates the projections from <paramref name="config"/>.</summary>
    public BertSelfAttention(BertConfig config) : base(nameof(BertSelfAttention))
    {
        nHead = config.NumAttentionHeads;
        headDim = config.HeadDim;
        dropoutP = config.AttentionProbsDropoutProb;
        query = nn.Linear(config.HiddenSize, config.HiddenSize);
        key = nn.Linear(config.HiddenSize, config.HiddenSize);
        value = nn.Linear(config.HiddenSize, config.HiddenSize);
        RegisterComponents();
    }

    /// <summary>x (B, T, C); mask (B, 1, 1, T) additive float (0 or the dtype's minimum) → fresh (B, T, C), before the output projection.</summary>
    public Tensor Forward(Tensor x, Tensor mask)
    {
        using var scope = torch.NewDisposeScope();
        long B = x.shape[0], T = x.shape[1];
        var q = query.call(x).view(B, T, nHead, headDim).transpose(1, 2);    // (B, H, T, D)
        var k = key.call(x).view(B, T, nHead, headDim).transpose(1, 2);      // (B, H, T, D)
        var v = value.call(x).view(B, T, nHead, headDim).transpose(1, 2);    // (B, H, T, D)
        // softmax(q kᵀ / √D + mask), dropped out in training (HF drops the attention probabilities), times v.
        var y = F.scaled_dot_product_attention(q, k, v, mask, training ? dropoutP : 0.0);   // (B, H, T, D)
        return y.transpose(1, 2).contiguous().view(B, T, nHead * headDim).MoveToOuterDisposeScope();   // (B, T, C)
    }
}

/// <summary>
/// A sub-layer's output: projection, dropout, residual and norm. HF has it twice, as <c>BertSelfOutput</c>
/// (after attention, from C) and <c>BertOutput</c> (after the feed-forward layer, from I); the keys are the same.
/// </summary>
public sealed class BertOutput : nn.Module
{
    /// <summary>(C, in) projection with bias.</summary>
    public readonly Linear dense;
    /// <summary>The norm after the residual.</summary>
    public readonly LayerNorm LayerNorm;
    readonly Dropout dropout;

    /// <summary>Creates the projection from <paramref name="inFeatures"/> (C or I) and the norm from <paramref name="config"/>.</summary>
    public BertOutput(int inFeatures, BertConfig config) : base(nameof(BertOutput))
    {
        dense = nn.Linear(inFeatures, config.HiddenSize);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <summary>norm(dropout(dense(h)) + x); h (B, T, in), x (B, T, C) → fresh (B, T, C).</summary>
    public Tensor Forward(Tensor h, Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        return LayerNorm.call(dropout.call(dense.call(h)) + x).MoveToOuterDisposeScope();
    }
}

/// <summary>Self-attention and its output block (HF <c>BertAttention</c>).</summary>
public sealed class BertAttention : nn.Module
{
    /// <summary>The query, key and value projections.</summary>
    public readonly BertSelfAttention self;
    /// <summary>The output projection and norm.</summary>
    public readonly BertOutput output;

    /// <summary>Creates both parts from <paramref name="config"/>.</summary>
    public BertAttention(BertConfig config) : base(nameof(BertAttention))
    {
        self = new BertSelfAttention(config);
        output = new BertOutput(config.HiddenSize, config);
        RegisterComponents();
    }

    /// <summary>x (B, T, C), mask (B, 1, 1, T) → fresh (B, T, C).</summary>
    public Tensor Forward(Tensor x, Tensor mask)
    {
        using var scope = torch.NewDisposeScope();
        return output.Forward(self.Forward(x, mask), x).MoveToOuterDisposeScope();
    }
}

/// <summary>The feed-forward input projection and activation (HF <c>BertIntermediate</c>).</summary>
public sealed class BertIntermediate : nn.Module
{
    /// <summary>(I, C) projection with bias.</summary>
    public readonly Linear dense;
    readonly string act;

    /// <summary>Creates the projection from <paramref name="config"/>.</summary>
    public BertIntermediate(BertConfig config) : base(nameof(BertIntermediate))
    {
        dense = nn.Linear(config.HiddenSize, config.IntermediateSize);
        act = config.HiddenAct;
        RegisterComponents();
    }

    /// <summary>x (B, T, C) → fresh act(dense(x)) (B, T, I).</summary>
    public Tensor Forward(Tensor x)
    {
        using var h = dense.call(x);
        return act switch
        {
            "gelu" => F.gelu(h),
            "relu" => F.relu(h),
            _ => F.gelu(h, GELU.Approximate.tanh),   // gelu_new, gelu_pytorch_tanh
        };
    }
}

/// <summary>One post-norm transformer layer: attention, then feed-forward (HF <c>BertLayer</c>).</summary>
public sealed class BertLayer : nn.Module
{
    /// <summary>Self-attention with its output block.</summary>
    public readonly BertAttention attention;
    /// <summary>Feed-forward input projection.</summary>
    public readonly BertIntermediate intermediate;
    /// <summary>Feed-forward output block.</summary>
    public readonly BertOutput output;

    /// <summary>Creates the layer from <paramref name="config"/>.</summary>
    public BertLayer(BertConfig config) : base(nameof(BertLayer))
    {
        attention = new BertAttention(config);
        intermediate = new BertIntermediate(config);
        output = new BertOutput(config.IntermediateSize, config);
        RegisterComponents();
    }

    /// <summary>x (B, T, C), mask (B, 1, 1, T) → fresh (B, T, C).</summary>
    public Tensor Forward(Tensor x, Tensor mask)
    {
        using var scope = torch.NewDisposeScope();
        var a = attention.Forward(x, mask);                                   // (B, T, C)
        return output.Forward(intermediate.Forward(a), a).MoveToOuterDisposeScope();
    }
}

/// <summary>The stack of layers (HF <c>BertEncoder</c>).</summary>
public sealed class BertEncoder : nn.Module
{
    /// <summary>The layers.</summary>
    public readonly ModuleList<BertLayer> layer;

    /// <summary>Creates <see cref="BertConfig.NumHiddenLayers"/> layers.</summary>
    public BertEncoder(BertConfig config) : base(nameof(BertEncoder))
    {
        layer = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new BertLayer(config)).ToArray());
        RegisterComponents();
    }

    /// <summary>x (B, T, C), attention mask (B, T) int64 1/0 → fresh last hidden states (B, T, C).</summary>
    public Tensor Forward(Tensor x, Tensor attentionMask)
    {
        using var scope = torch.NewDisposeScope();
        // Padding keys get the dtype's minimum, as HF's extended attention mask: (1 − mask) · min.
        var keep = attentionMask.ne(0).view(attentionMask.shape[0], 1, 1, attentionMask.shape[1]);   // (B, 1, 1, T)
        var mask = torch.where(keep, torch.zeros(1, x.dtype, x.device), torch.full(1, torch.finfo(x.dtype).min, x.dtype, x.device));
        for (var i = 0; i < layer.Count; i++) x = layer[i].Forward(x, mask);
        return x.MoveToOuterDisposeScope();
    }
}
