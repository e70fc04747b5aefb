using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// DARE (Yu et al., 2024, "drop and rescale") applied to the current task's update relative to the
/// model before the task: δ = cur − prev; each element of δ is dropped with probability p and the
/// survivors are rescaled by 1/(1 − p); θ̄ = prev + λ·δ̃. The base input is not used: θ̄_{k−1} already
/// holds what earlier tasks contributed, and this keeps DARE a sparsification of "what the current
/// task changed" (with base = prev the task-vector form of DARE is the same thing).
/// The mask comes from a local <see cref="torch.Generator"/> seeded with the unit context's seed on
/// the inputs' device: the same inputs and seed give the same output, independently of torch's
/// global generator (masks on CPU and CUDA differ; each is reproducible).
/// </summary>
/// <param name="dropRate">p in [0, 1) (default 0.9, the rate DARE's paper uses for most merges).</param>
/// <param name="scale">λ (default 1).</param>
public sealed class DareRule(double dropRate = 0.9, double scale = 1.0) : IFusionRule
{
    /// <summary>p.</summary>
    public double DropRate { get; } = dropRate is >= 0.0 and < 1.0
        ? dropRate : throw new ArgumentOutOfRangeException(nameof(dropRate), dropRate, "p must be in [0,1)");

    /// <summary>λ.</summary>
    public double Scale { get; } = scale;

    /// <inheritdoc/>
    public string Name => "dare";

    /// <summary>NaN: the weight differs per element.</summary>
    public double LambdaFor(UnitFusionContext context) => double.NaN;

    /// <summary>
    /// The keep mask DARE uses for a slice of <paramref name="shape"/> on <paramref name="device"/> with
    /// <paramref name="seed"/>: a fresh bool tensor (true = kept, probability 1 − p), owned by the caller.
    /// </summary>
    public Tensor KeepMask(long[] shape, long seed, Device device)
    {
        using var gen = new Generator(unchecked((ulong)seed), device);
        using var u = rand(shape, dtype: ScalarType.Float64, device: device, generator: gen);
        return u.ge(DropRate);
    }

    /// <summary>prev + λ·mask⊙(cur − prev)/(1 − p): a fresh tensor of the inputs' shape, dtype and device; the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        using var scope = NewDisposeScope();
        var mask = KeepMask(inputs.Previous.shape, context.Seed, inputs.Previous.device);
        var delta = inputs.Current - inputs.Previous;
        var kept = where(mask, delta, zeros_like(delta)) * (Scale / (1.0 - DropRate));
        return (inputs.Previous + kept).MoveToOuterDisposeScope();
    }
}
