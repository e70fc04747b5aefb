using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Klf.Models.Layers;

/// <summary>
/// The arithmetic of one decoding step for a single sequence, on float32 host memory: matrix-vector
/// products, RMSNorm, rotary embedding, attention over cached keys and values, SwiGLU and the
/// head's argmax. A batch-1 decoding step streams every weight once and does little else, so
/// libtorch's per-op overhead (a native call, a tensor object, a dispatch per op, about 300 ops per
/// token on a 4-layer model) costs more than the arithmetic; these kernels do the same arithmetic
/// without it. Results agree with the libtorch forms to float32 rounding, not bit for bit
/// (summation orders differ).
/// </summary>
internal static unsafe class CpuDecodeKernels
{
    /// <summary>True when the kernels run vectorised here (256-bit vectors); the decoder is used only then.</summary>
    public static bool Supported => Vector256.IsHardwareAccelerated;

    /// <summary>
    /// y[i] = (Σ_j w[i, j] x[j] + bias[i]) + residual[i] for rows i in [start, start + count) of the
    /// row-major (rows, k) matrix <paramref name="w"/>, rounded in that order (as a linear layer
    /// followed by a residual add); <paramref name="bias"/> and <paramref name="residual"/> may be
    /// null, and <paramref name="residual"/> may be <paramref name="y"/> itself.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Gemv(float* w, float* x, float* bias, float* residual, float* y, int k, int start, int count)
    {
        int i = start, end = start + count;
        for (; i + 4 <= end; i += 4)
        {
            float* w0 = w + (long)i * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int j = 0;
            for (; j + 8 <= k; j += 8)
            {
                var xv = Vector256.Load(x + j);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Load(w0 + j), xv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Load(w1 + j), xv, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Load(w2 + j), xv, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Load(w3 + j), xv, a3);
            }
            float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
            for (; j < k; j++)
            {
                s0 += w0[j] * x[j]; s1 += w1[j] * x[j]; s2 += w2[j] * x[j]; s3 += w3[j] * x[j];
            }
            if (bias != null) { s0 += bias[i]; s1 += bias[i + 1]; s2 += bias[i + 2]; s3 += bias[i + 3]; }
            if (residual != null) { s0 += residual[i]; s1 += residual[i + 1]; s2 += residual[i + 2]; s3 += residual[i + 3]; }
            y[i] = s0; y[i + 1] = s1; y[i + 2] = s2; y[i + 3] = s3;
        }
        for (; i < end; i++)
        {
            var s = Dot(w + (long)i * k, x, k);
            if (bias != null) s += bias[i];
            if (residual != null) s += residual[i];
            y[i] = s;
        }
    }

    /// <summary>Σ a[j] b[j] over n floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Dot(float* a, float* b, int n)
    {
        Vector256<float> acc = default;
        int j = 0;
        for (; j + 8 <= n; j += 8) acc = Vector256.FusedMultiplyAdd(Vector256.Load(a + j), Vector256.Load(b + j), acc);
        var s = Vector256.Sum(acc);
        for (; j < n; j++) s += a[j] * b[j];
        return s;
    }

    /// <summary>
    /// y = weight * (x / sqrt(mean(x²) + eps)) over n floats, as HF's LlamaRMSNorm in float32
    /// (the variance, its reciprocal square root and both products rounded to float32).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, float* weight, float eps, float* y, int n)
    {
        var r = 1f / MathF.Sqrt(Dot(x, x, n) / n + eps);
        for (var j = 0; j < n; j++) y[j] = weight[j] * (x[j] * r);
    }

    /// <summary>
    /// Rotary embedding in place on <paramref name="heads"/> heads of <paramref name="d"/> floats:
    /// x·cos + rotate_half(x)·sin, with cos/sin (d) of the position (rotate-half convention).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rotary(float* x, float* cos, float* sin, int heads, int d)
    {
        var half = d / 2;
        for (var h = 0; h < heads; h++)
        {
            var p = x + h * d;
            for (var i = 0; i < half; i++)
            {
                float x1 = p[i], x2 = p[i + half];
                p[i] = x1 * cos[i] + -x2 * sin[i];
                p[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
            }
        }
    }

    /// <summary>
    /// One query head against <paramref name="length"/> cached positions: out (d) =
    /// softmax(q·k_j · scale) weighted sum of v_j, keys and values (length, d) row-major from
    /// <paramref name="keys"/>/<paramref name="values"/>; <paramref name="scores"/> holds length floats of scratch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Attend(float* q, float* keys, float* values, int length, int d, float scale, float* scores, float* output)
    {
        var max = float.NegativeInfinity;
        for (var j = 0; j < length; j++)
        {
            var s = Dot(q, keys + (long)j * d, d) * scale;
            scores[j] = s;
            if (s > max) max = s;
        }
        var sum = 0f;
        for (var j = 0; j < length; j++)
        {
            var e = MathF.Exp(scores[j] - max);
            scores[j] = e;
            sum += e;
        }
        var inv = 1f / sum;
        new Span<float>(output, d).Clear();
        for (var j = 0; j < length; j++)
        {
            var pj = scores[j] * inv;
            var v = values + (long)j * d;
            int i = 0;
            var pv = Vector256.Create(pj);
            for (; i + 8 <= d; i += 8)
                Vector256.FusedMultiplyAdd(Vector256.Load(v + i), pv, Vector256.Load(output + i)).Store(output + i);
            for (; i < d; i++) output[i] += v[i] * pj;
        }
    }

    /// <summary>gate[i] = silu(gate[i]) · up[i] for i in [start, start + count) (SwiGLU's product, in place).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SiluMul(float* gate, float* up, int start, int count)
    {
        for (var i = start; i < start + count; i++)
        {
            var g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>
    /// The row of the largest w[i]·x for rows i in [start, start + count) of the (rows, k) matrix,
    /// with its value: torch.argmax's choice (the first of equal maxima; a NaN wins).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static (int Index, float Value) ArgmaxGemv(float* w, float* x, int k, int start, int count, float* scratch)
    {
        Gemv(w, x, null, null, scratch, k, start, count);
        int best = start;
        var value = scratch[start];
        for (var i = start + 1; i < start + count; i++)
        {
            var v = scratch[i];
            if (float.IsNaN(value)) break;
            if (v > value || float.IsNaN(v)) { value = v; best = i; }
        }
        return (best, value);
    }

    /// <summary>The better of two argmax candidates of different rows, as torch.argmax chooses (larger value; on a tie, or when both are NaN, the lower row; a NaN wins).</summary>
    public static (int Index, float Value) Better((int Index, float Value) a, (int Index, float Value) b)
    {
        if (b.Index < a.Index) (a, b) = (b, a);
        return float.IsNaN(a.Value) ? a : float.IsNaN(b.Value) || b.Value > a.Value ? b : a;
    }
}
