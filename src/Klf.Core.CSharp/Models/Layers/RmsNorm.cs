using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Klf.Models.Layers;

/// <summary>
/// Root-mean-square layer norm as Hugging Face's <c>LlamaRMSNorm</c>: a weight (no bias), the
/// variance computed in float32, the normalised value cast back to the input dtype before it is
/// multiplied by the weight. Its one parameter is named <c>weight</c> (the checkpoint key).
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    /// <summary>(C) scale, initialised to ones; dtype follows the module.</summary>
    public readonly Parameter weight;

    /// <summary>Epsilon added to the variance (config <c>rms_norm_eps</c>).</summary>
    public double Eps { get; }

    /// <summary>Creates the norm over a last dimension of size <paramref name="hiddenSize"/>.</summary>
    public RmsNorm(long hiddenSize, double eps, string name = "RmsNorm") : base(name)
    {
        Eps = eps;
        weight = new Parameter(torch.ones(hiddenSize));
        RegisterComponents();
    }

    /// <summary>
    /// Normalises <paramref name="x"/> (..., C) of any float dtype; returns a fresh tensor of the
    /// same shape. Its dtype is the promotion of the weight's and the input's (as in HF).
    /// </summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var inputDtype = x.dtype;
        var x32 = x.to(ScalarType.Float32);
        var variance = x32.pow(2).mean(new long[] { -1 }, keepdim: true);   // (..., 1)
        var normed = x32 * torch.rsqrt(variance + Eps);
        return (weight * normed.to(inputDtype)).MoveToOuterDisposeScope();
    }
}
