using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// A rule whose fused value is the interpolation θ̄ = prev + λ·(cur − prev) with one λ per unit
/// (<see cref="IFusionRule.LambdaFor"/>): its <see cref="IFusionRule.Fuse"/> must equal
/// <see cref="FusionKernels.Interpolate"/>(prev, cur, λ). <see cref="ModelFusion.Apply"/> then fuses
/// the rule in place, a whole parameter tensor at a time with each slice's λ, without temporaries.
/// KIF's static and adaptive rules and averaging are such rules.
/// </summary>
public interface IInterpolatingRule : IFusionRule
{
}

/// <summary>
/// A rule that fuses element by element and ignores the unit context (each fused element depends only
/// on the same element of base, prev and cur): task arithmetic, MagMax. <see cref="ModelFusion.Apply"/>
/// fuses it in place, a whole parameter tensor at a time.
/// </summary>
public interface IElementwiseRule : IFusionRule
{
    /// <summary>
    /// For finite inputs whose magnitudes are at most M, every intermediate and fused value of
    /// <see cref="FuseInPlace"/> is at most <c>Growth·M</c> in magnitude: a fusion proves its result
    /// finite from the inputs' largest magnitudes, without reading the result again.
    /// </summary>
    double Growth { get; }

    /// <summary>
    /// Writes the fused values into <paramref name="current"/> (θ_k, overwritten). The three tensors
    /// have one shape, dtype and device; <paramref name="previous"/> and <paramref name="basis"/> are
    /// not modified and may be the same object (no separate base: task vectors against θ̄_{k−1}).
    /// <see cref="IFusionRule.Fuse"/> must give the same values on a copy of θ_k.
    /// </summary>
    void FuseInPlace(Tensor current, Tensor previous, Tensor basis);
}

/// <summary>
/// A rule that can write one slice's fused values straight into the slice (TIES, DARE): unlike an
/// <see cref="IElementwiseRule"/> it may look at the whole slice and at the unit context (TIES trims
/// per slice, DARE seeds its mask per unit). <see cref="ModelFusion.Apply"/> fuses it in place, slice
/// by slice, where the slices are contiguous views that do not overlap.
/// </summary>
public interface ISliceFusionRule : IFusionRule
{
    /// <summary>
    /// For finite inputs whose magnitudes are at most M, every intermediate and fused value of
    /// <see cref="FuseInPlace"/> is at most <c>Growth·M</c> in magnitude.
    /// </summary>
    double Growth { get; }

    /// <summary>
    /// Writes the slice's fused values into <paramref name="current"/> (θ_k, a contiguous view,
    /// overwritten); <paramref name="previous"/> and <paramref name="basis"/> are not modified and
    /// may be the same object. <see cref="IFusionRule.Fuse"/> must give the same values on a copy.
    /// </summary>
    void FuseInPlace(Tensor current, Tensor previous, Tensor basis, UnitFusionContext context);
}

