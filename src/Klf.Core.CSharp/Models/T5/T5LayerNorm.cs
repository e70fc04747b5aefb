using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.T5;

/// <summary>
/// T5's layer norm (an RMS norm): <c>weight * x / sqrt(mean(x², -1) + eps)</c>, with no bias and no
/// mean subtraction; the variance is accumulated in float32. As in Hugging Face, the normalised
/// value is cast back to the weight's dtype when the weight is float16/bfloat16 (otherwise the
/// result follows type promotion, e.g. float32 for float32 weights). Parameter: <c>weight</c> (D).
/// </summary>
public sealed class T5LayerNorm : nn.Module<Tensor, Tensor>
{
    /// <summary>Scale, (D), initialised to ones (× initializer_factor by the model's init).</summary>
    public Parameter weight;

    private readonly double variance_epsilon;

    /// <summary>Creates the norm for width <paramref name="hiddenSize"/> with epsilon <paramref name="eps"/>.</summary>
    public T5LayerNorm(long hiddenSize, double eps) : base(nameof(T5LayerNorm))
    {
        weight = new Parameter(torch.ones(hiddenSize));
        variance_epsilon = eps;
        RegisterComponents();
    }

    /// <summary>Normalises the last dimension of <paramref name="x"/> (…, D). Returns a fresh tensor; the input is not disposed.</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var variance = x.to(ScalarType.Float32).pow(2).mean([-1L], keepdim: true); // (…, 1) float32
        var normed = x * torch.rsqrt(variance + variance_epsilon);
        if (weight.dtype is ScalarType.Float16 or ScalarType.BFloat16)
            normed = normed.to(weight.dtype);
        return (weight * normed).MoveToOuterDisposeScope();
    }
}
