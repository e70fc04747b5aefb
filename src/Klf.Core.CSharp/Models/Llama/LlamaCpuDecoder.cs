using System.Runtime.InteropServices;
using Klf.Fusion;
using Klf.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.Llama;

/// <summary>
/// Cached greedy decoding of one sequence on the CPU in float32, one token per <see cref="Step"/>,
/// without libtorch calls: the prompt runs through the model as usual (filling the
/// <see cref="LlamaKvCache"/>), then each new token's forward (embedding, every layer, the final
/// norm, the head and its argmax) runs in <see cref="CpuDecodeKernels"/> over the model's own
/// parameter memory, appending keys and values into the cache's buffers in place. Only used when
/// every parameter is a contiguous float32 CPU tensor, the projections are plain Linear layers (no
/// LoRA adapters under them) and the CPU has 256-bit vectors; <see cref="CpuTensors.Enabled"/>
/// false switches it off. The matrix-vector products use the cores for the larger matrices.
/// Logits agree with the libtorch forward to float32 rounding (summation order), so the greedy
/// tokens are those of the uncached forward except at exact near-ties.
/// </summary>
internal sealed unsafe class LlamaCpuDecoder : IDisposable
{
    // Matrix-vector products below this many weights run on one core: splitting them costs more than it saves.
    const long ParallelWeights = 1L << 16;

    struct LayerPointers
    {
        public float* Q, K, V, O, QBias, KBias, VBias, OBias, Gate, Up, Down, GateBias, UpBias, DownBias, Norm1, Norm2;
        public float* KeyStore, ValueStore;
    }

    readonly LayerPointers[] layers;
    readonly KeyValueBuffer[] buffers;
    readonly float* embed, head, finalNorm;
    readonly int hidden, heads, kvHeads, headDim, intermediate, vocab;
    readonly long capacity;
    readonly float eps, scale;
    readonly Tensor cos, sin;     // (1, steps, D) float32: the rotary angles of the positions decoded
    readonly float* cosP, sinP;
    readonly float* scratch;      // x, normed, q, k, v, attention, gate, up, scores, logits
    readonly float* x, normed, q, k, v, att, gate, up, scores, logits;
    readonly long firstPosition, cachedAtStart;
    readonly int steps;
    int done;
    bool disposed;

    LlamaCpuDecoder(LlamaForCausalLM model, LlamaKvCache cache, long firstPosition, int steps)
    {
        var c = model.Config;
        hidden = c.HiddenSize; heads = c.NumAttentionHeads; kvHeads = c.NumKeyValueHeads; headDim = c.HeadDim;
        intermediate = c.IntermediateSize; vocab = c.VocabSize;
        eps = (float)c.RmsNormEps;
        scale = (float)(1.0 / Math.Sqrt(headDim));
        this.firstPosition = firstPosition;
        this.steps = steps;
        using var handles = torch.NewDisposeScope();   // parameter getters hand out fresh handles
        var decoder = model.model;
        embed = CpuTensors.Pointer(decoder.embed_tokens.weight!);
        head = model.lm_head is null ? embed : CpuTensors.Pointer(model.lm_head.weight!);
        finalNorm = CpuTensors.Pointer(decoder.norm.weight);
        layers = new LayerPointers[decoder.layers.Count];
        buffers = new KeyValueBuffer[layers.Length];
        for (var i = 0; i < layers.Length; i++)
        {
            var l = decoder.layers[i];
            var a = l.self_attn;
            buffers[i] = cache.Layer(i);
            layers[i] = new LayerPointers
            {
                Q = Weight(a.q_proj), K = Weight(a.k_proj), V = Weight(a.v_proj), O = Weight(a.o_proj),
                QBias = Bias(a.q_proj), KBias = Bias(a.k_proj), VBias = Bias(a.v_proj), OBias = Bias(a.o_proj),
                Gate = Weight(l.mlp.gate_proj), Up = Weight(l.mlp.up_proj), Down = Weight(l.mlp.down_proj),
                GateBias = Bias(l.mlp.gate_proj), UpBias = Bias(l.mlp.up_proj), DownBias = Bias(l.mlp.down_proj),
                Norm1 = CpuTensors.Pointer(l.input_layernorm.weight), Norm2 = CpuTensors.Pointer(l.post_attention_layernorm.weight),
                KeyStore = CpuTensors.Pointer(buffers[i].KeyStore!), ValueStore = CpuTensors.Pointer(buffers[i].ValueStore!),
            };
        }
        capacity = buffers[0].Capacity;
        cachedAtStart = buffers[0].Length;
        (cos, sin) = Angles(model.Config, firstPosition, Math.Max(1, steps));
        cosP = CpuTensors.Pointer(cos);
        sinP = CpuTensors.Pointer(sin);
        var sizes = new long[] { hidden, hidden, heads * headDim, kvHeads * headDim, kvHeads * headDim, heads * headDim, intermediate, intermediate, capacity, vocab };
        scratch = (float*)NativeMemory.AlignedAlloc((nuint)(sizes.Sum() * sizeof(float)), 64);
        var p = scratch;
        float* Next(long n) { var r = p; p += n; return r; }
        x = Next(sizes[0]); normed = Next(sizes[1]); q = Next(sizes[2]); k = Next(sizes[3]); v = Next(sizes[4]);
        att = Next(sizes[5]); gate = Next(sizes[6]); up = Next(sizes[7]); scores = Next(sizes[8]); logits = Next(sizes[9]);
    }

    static float* Weight(Linear linear) => CpuTensors.Pointer(linear.weight!);
    static float* Bias(Linear linear) => linear.bias is { } b ? CpuTensors.Pointer(b) : null;

    /// <summary>
    /// A decoder for <paramref name="steps"/> tokens at positions <paramref name="firstPosition"/>…
    /// of a single sequence whose prompt is in <paramref name="cache"/>, or null when the model or
    /// the machine does not qualify (then decode through the model's forward).
    /// </summary>
    public static LlamaCpuDecoder? TryCreate(LlamaForCausalLM model, LlamaKvCache cache, long firstPosition, int steps)
    {
        if (!CpuTensors.Enabled || !CpuDecodeKernels.Supported || steps <= 0) return null;
        using var handles = torch.NewDisposeScope();
        foreach (var p in model.parameters())
            if (p.device_type != DeviceType.CPU || p.dtype != ScalarType.Float32 || !p.is_contiguous()) return null;
        foreach (var layer in model.model.layers)
        {
            var a = layer.self_attn;
            foreach (var linear in new[] { a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj })
                if (linear.children().Any()) return null;   // LoRA adapters live under the Linear and run in a hook
        }
        if (model.lm_head is not null && model.lm_head.children().Any()) return null;
        for (var i = 0; i < model.Config.NumHiddenLayers; i++)
        {
            var b = cache.Layer(i);
            if (b.KeyStore is null || b.Length != cache.Length || b.Capacity < b.Length + steps || b.KeyStore.shape[0] != 1) return null;
        }
        return new LlamaCpuDecoder(model, cache, firstPosition, steps);
    }

    // cos/sin (1, n, D) of positions first … first + n − 1, exactly as the model's forward computes them.
    static (Tensor Cos, Tensor Sin) Angles(LlamaConfig config, long first, int n)
    {
        using var scope = torch.NewDisposeScope();
        Tensor c, s;
        if (config.RopeScaling?.RopeType == "dynamic")
        {
            // Dynamic NTK scaling changes the frequencies with the largest position of each forward: one position at a time.
            var rows = Enumerable.Range(0, n).Select(i =>
            {
                using var pos = torch.tensor(new[] { first + i }, new long[] { 1, 1 }, ScalarType.Int64);
                return LlamaRotary.CosSin(pos, LlamaRotary.InvFreq(config, first + i), ScalarType.Float32);
            }).ToArray();
            c = torch.cat(rows.Select(r => r.Cos).ToArray(), 1);
            s = torch.cat(rows.Select(r => r.Sin).ToArray(), 1);
        }
        else
        {
            using var pos = torch.arange(first, first + n, ScalarType.Int64).view(1, n);
            (c, s) = LlamaRotary.CosSin(pos, LlamaRotary.InvFreq(config), ScalarType.Float32);
        }
        return (c.contiguous().DetachFromDisposeScope(), s.contiguous().DetachFromDisposeScope());
    }

    /// <summary>Feeds <paramref name="token"/> at the next position and returns the greedy next token.</summary>
    public int Step(int token)
    {
        if (disposed || done >= steps) throw new InvalidOperationException($"the decoder was made for {steps} steps");
        if ((uint)token >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside the vocabulary of {vocab}");
        var at = cachedAtStart + done;              // this token's slot in the cache
        var length = (int)at + 1;                   // keys it attends to, itself included
        new ReadOnlySpan<float>(embed + (long)token * hidden, hidden).CopyTo(new Span<float>(x, hidden));
        float* c = cosP + (long)done * headDim, s = sinP + (long)done * headDim;
        int qRows = heads * headDim, kvRows = kvHeads * headDim;
        foreach (var l in layers)
        {
            CpuDecodeKernels.RmsNorm(x, l.Norm1, eps, normed, hidden);
            var lp = l;
            Rows(qRows + 2 * kvRows, hidden, (start, count) =>
            {
                Segment(lp.Q, lp.QBias, q, 0, qRows, start, count);
                Segment(lp.K, lp.KBias, k, qRows, kvRows, start, count);
                Segment(lp.V, lp.VBias, v, qRows + kvRows, kvRows, start, count);
            });
            CpuDecodeKernels.Rotary(q, c, s, heads, headDim);
            CpuDecodeKernels.Rotary(k, c, s, kvHeads, headDim);
            for (var g = 0; g < kvHeads; g++)
            {
                new ReadOnlySpan<float>(k + g * headDim, headDim).CopyTo(new Span<float>(l.KeyStore + (g * capacity + at) * headDim, headDim));
                new ReadOnlySpan<float>(v + g * headDim, headDim).CopyTo(new Span<float>(l.ValueStore + (g * capacity + at) * headDim, headDim));
            }
            var group = heads / kvHeads;
            for (var h = 0; h < heads; h++)
            {
                var g = h / group;
                CpuDecodeKernels.Attend(q + h * headDim, l.KeyStore + g * capacity * headDim, l.ValueStore + g * capacity * headDim,
                                        length, headDim, scale, scores, att + h * headDim);
            }
            Rows(hidden, qRows, (start, count) => CpuDecodeKernels.Gemv(lp.O, att, lp.OBias, x, x, qRows, start, count));
            CpuDecodeKernels.RmsNorm(x, l.Norm2, eps, normed, hidden);
            Rows(intermediate, 2 * hidden, (start, count) =>
            {
                CpuDecodeKernels.Gemv(lp.Gate, normed, lp.GateBias, null, gate, hidden, start, count);
                CpuDecodeKernels.Gemv(lp.Up, normed, lp.UpBias, null, up, hidden, start, count);
                CpuDecodeKernels.SiluMul(gate, up, start, count);
            });
            Rows(hidden, intermediate, (start, count) => CpuDecodeKernels.Gemv(lp.Down, gate, lp.DownBias, x, x, intermediate, start, count));
        }
        CpuDecodeKernels.RmsNorm(x, finalNorm, eps, normed, hidden);
        var best = (Index: -1, Value: float.NaN);
        var gateLock = new object();
        Rows(vocab, hidden, (start, count) =>
        {
            var part = CpuDecodeKernels.ArgmaxGemv(head, normed, hidden, start, count, logits);
            lock (gateLock) best = best.Index < 0 ? part : CpuDecodeKernels.Better(best, part);
        });
        done++;
        return best.Index;
    }

    /// <summary>The logits (V) of the last <see cref="Step"/>, copied into <paramref name="into"/>.</summary>
    public void CopyLogits(Span<float> into) => new ReadOnlySpan<float>(logits, vocab).CopyTo(into);

    // The rows [offset, offset + rows) of a stacked output that fall in [start, start + count).
    void Segment(float* w, float* bias, float* y, int offset, int rows, int start, int count)
    {
        int from = Math.Max(start, offset), to = Math.Min(start + count, offset + rows);
        if (from < to) CpuDecodeKernels.Gemv(w, normed, bias, null, y, hidden, from - offset, to - from);
    }

    static void Rows(int rows, int k, Action<int, int> body)
    {
        var parallel = (long)rows * k >= ParallelWeights;
        CpuTensors.For(rows, parallel, (start, count) => body((int)start, (int)count), grain: 2);
    }

    /// <summary>Counts the decoded positions into the cache's buffers and frees the decoder's own memory.</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        if (done > 0) foreach (var b in buffers) b.Advance(done);
        cos.Dispose();
        sin.Dispose();
        NativeMemory.AlignedFree(scratch);
    }
}
