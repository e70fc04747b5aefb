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

    /// <summary>
    /// Whether Merge(0, τ) = τ, so that with no separate base (base is prev, τ_prev = 0) the rule is
    /// the interpolation prev + λ·(cur − prev), computed as such (one kernel, exact at λ = 0 and 1).
    /// </summary>
    protected virtual bool InterpolatesWithoutBase => false;

    /// <summary>base + λ·Merge(prev − base, cur − base): a fresh tensor of the inputs' shape, dtype and device; the caller disposes it.</summary>
    public virtual Tensor Fuse(FusionInputs inputs, UnitFusionContext context)
    {
        if (InterpolatesWithoutBase && ReferenceEquals(inputs.Base, inputs.Previous))
            return FusionKernels.Interpolate(inputs.Previous, inputs.Current, Scale);
        using var scope = NewDisposeScope();
        var merged = Merge(inputs.Previous - inputs.Base, inputs.Current - inputs.Base);
        return (inputs.Base + merged * Scale).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Writes <see cref="Fuse"/>'s values into <paramref name="current"/> (θ_k, overwritten): in one
    /// kernel and without temporaries when the rule interpolates without a base and
    /// <paramref name="basis"/> is <paramref name="previous"/>, else through <see cref="Fuse"/>.
    /// </summary>
    public virtual void FuseInPlace(Tensor current, Tensor previous, Tensor basis)
    {
        if (InterpolatesWithoutBase && ReferenceEquals(basis, previous))
        {
            FusionKernels.InterpolateInPlace(current, previous, Scale);
            return;
        }
        using var scope = NewDisposeScope();
        var merged = Merge(previous - basis, current - basis);
        current.copy_(basis + merged * Scale);
    }

    /// <summary>
    /// The merged task vector of one slice from τ_prev and τ_cur (same shape, dtype and device). Runs
    /// inside a dispose scope: temporaries need no disposing, and neither do the arguments.
    /// </summary>
    protected abstract Tensor Merge(Tensor previousVector, Tensor currentVector);
}
