using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// Base of the rules that merge task vectors, τ_prev = prev − base and τ_cur = cur − base, element by
/// element: θ̄ = base + λ·Merge(τ_prev, τ_cur) (task arithmetic, TIES, MagMax). Derive from it for a
/// task-vector rule of your own: <see cref="Merge"/> is the only part that differs.
/// </summary>
/// <param name="scale">λ, the scale of the merged task vector.</param>
public abstract class TaskVectorRule(double scale) : IFusionRule
{
    /// <summary>λ.</summary>
    public double Scale { get; } = scale;

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <summary>NaN: no single interpolation weight between prev and cur.</summary>
    public double LambdaFor(UnitFusionContext context) => double.NaN;

    /// <summary>base + λ·Merge(prev − base, cur − base): a fresh tensor of the inputs' shape, dtype and device; the caller disposes it.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        using var scope = NewDisposeScope();
        var merged = Merge(inputs.Previous - inputs.Base, inputs.Current - inputs.Base);
        return (inputs.Base + merged * Scale).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The merged task vector of one slice from τ_prev and τ_cur (same shape, dtype and device). Runs
    /// inside a dispose scope: temporaries need no disposing, and neither do the arguments.
    /// </summary>
    protected abstract Tensor Merge(Tensor previousVector, Tensor currentVector);
}
