using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models.Llama;

/// <summary>
/// Rotary position embedding as HF LLaMA: rotate-half convention, angles in float32, and the
/// <c>rope_scaling</c> variants of HF's <c>ROPE_INIT_FUNCTIONS</c> that LLaMA checkpoints use
/// (<c>default</c>, <c>linear</c>, <c>dynamic</c>, <c>llama3</c>; see <see cref="LlamaRopeScaling"/>).
/// Every variant has attention factor 1 (cos/sin are not rescaled).
/// </summary>
public static class LlamaRotary
{
    /// <summary>
    /// The inverse frequencies (D/2 values, float64 on the host) for a forward whose largest
    /// position id is <paramref name="maxPositionId"/> (only <c>dynamic</c> reads it).
    /// Base: inv_freq[i] = 1 / theta^(2i/D). Then, by <see cref="LlamaRopeScaling.RopeType"/>:
    /// <list type="bullet">
    /// <item><c>default</c>: unchanged.</item>
    /// <item><c>linear</c>: inv_freq / factor (positions divided by factor).</item>
    /// <item><c>dynamic</c> (NTK-aware): with L = max(maxPositionId + 1, max_position_embeddings),
    /// theta' = theta * (factor * L / max_position_embeddings - (factor - 1))^(D / (D - 2)) and
    /// inv_freq = 1 / theta'^(2i/D); so up to max_position_embeddings it is the default.</item>
    /// <item><c>llama3</c>: HF <c>_compute_llama3_parameters</c>, wavelength w = 2π / inv_freq:
    /// w &lt; original / high_freq_factor keeps inv_freq; w &gt; original / low_freq_factor uses
    /// inv_freq / factor; in between s = (original / w - low) / (high - low) and
    /// inv_freq' = (1 - s) * inv_freq / factor + s * inv_freq.</item>
    /// </list>
    /// HF computes the base in float32 on the device; here it is computed in float64 and rounded
    /// to float32 once, when it becomes a tensor (differences of at most an ulp).
    /// </summary>
    public static double[] InvFreq(LlamaConfig config, long maxPositionId = 0)
    {
        int d = config.HeadDim;
        var scaling = config.RopeScaling;
        double theta = config.RopeTheta;
        if (scaling?.RopeType == "dynamic")
        {
            double maxPos = config.MaxPositionEmbeddings;
            double seqLen = Math.Max(maxPositionId + 1, maxPos);
            double f = scaling.Factor!.Value;
            theta *= Math.Pow(f * seqLen / maxPos - (f - 1), (double)d / (d - 2));
        }
        var inv = new double[d / 2];
        for (var i = 0; i < inv.Length; i++) inv[i] = 1.0 / Math.Pow(theta, 2.0 * i / d);
        switch (scaling?.RopeType)
        {
            case "linear":
                for (var i = 0; i < inv.Length; i++) inv[i] /= scaling.Factor!.Value;
                break;
            case "llama3":
            {
                double factor = scaling.Factor!.Value, low = scaling.LowFreqFactor!.Value, high = scaling.HighFreqFactor!.Value;
                double old = scaling.OriginalMaxPositionEmbeddings!.Value;
                double lowWavelen = old / low, highWavelen = old / high;
                for (var i = 0; i < inv.Length; i++)
                {
                    var wavelen = 2 * Math.PI / inv[i];
                    if (wavelen < highWavelen) continue;                               // high frequency: kept
                    if (wavelen > lowWavelen) { inv[i] /= factor; continue; }          // low frequency: scaled
                    var s = (old / wavelen - low) / (high - low);                      // medium: smoothed
                    inv[i] = (1 - s) * inv[i] / factor + s * inv[i];
                }
                break;
            }
        }
        return inv;
    }

    /// <summary>
    /// cos and sin, each (B, T, D) in <paramref name="dtype"/>, for int64 <paramref name="positionIds"/>
    /// (B, T) and inverse frequencies <paramref name="invFreq"/> (D/2): angles = position * inv_freq in
    /// float32, duplicated over the two halves of D. Fresh tensors on the positions' device, owned by the caller.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positionIds, double[] invFreq, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        var device = positionIds.device;
        var inv = torch.tensor(invFreq.Select(v => (float)v).ToArray(), ScalarType.Float32).to(device);  // (D/2)
        var freqs = positionIds.to(ScalarType.Float32).unsqueeze(-1) * inv.view(1, 1, -1);                 // (B, T, D/2)
        var emb = torch.cat(new[] { freqs, freqs }, -1);                                                    // (B, T, D)
        var cos = emb.cos().to(dtype);
        var sin = emb.sin().to(dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Plain RoPE (no scaling): cos and sin (B, T, D) for inv_freq = 1 / theta^(2i/D). Fresh tensors,
    /// owned by the caller. See <see cref="CosSin(Tensor, double[], ScalarType)"/>.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positionIds, int headDim, double theta, ScalarType dtype)
    {
        var inv = Enumerable.Range(0, headDim / 2).Select(i => 1.0 / Math.Pow(theta, 2.0 * i / headDim)).ToArray();
        return CosSin(positionIds, inv, dtype);
    }

    /// <summary>(x1, x2) → (-x2, x1) over the two halves of the last dimension. Fresh tensor.</summary>
    public static Tensor RotateHalf(Tensor x)
    {
        var half = x.shape[^1] / 2;
        using var x1 = x[.., .., .., ..(int)half];
        using var x2 = x[.., .., .., (int)half..];
        using var negX2 = x2.neg();
        return torch.cat(new[] { negX2, x1 }, -1);
    }

    /// <summary>x * cos + rotate_half(x) * sin for x (B, H, T, D) and cos/sin (B, T, D). Fresh tensor.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = torch.NewDisposeScope();
        var c = cos.unsqueeze(1);   // (B, 1, T, D)
        var s = sin.unsqueeze(1);   // (B, 1, T, D)
        return (x * c + RotateHalf(x) * s).MoveToOuterDisposeScope();
    }
}
