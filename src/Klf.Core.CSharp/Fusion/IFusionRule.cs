using Klf.SkillUnits;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>Whether a unit matters to earlier tasks, the current task, both or neither.</summary>
public enum UnitCategory
{
    /// <summary>Important to neither.</summary>
    Neither,
    /// <summary>Important to earlier tasks only.</summary>
    PreviousOnly,
    /// <summary>Important to the current task only.</summary>
    CurrentOnly,
    /// <summary>Important to both.</summary>
    Shared,
}

/// <summary>What a fusion rule knows about one unit.</summary>
/// <param name="Unit">The unit.</param>
/// <param name="PreviousScore">Â_{k−1}(u): accumulated normalised importance of earlier tasks, in [0,1].</param>
/// <param name="CurrentScore">Ŝ_k(u): normalised importance for the current task, in [0,1].</param>
/// <param name="Category">From the top-fraction classification of both distributions.</param>
/// <param name="Seed">A seed derived from the fusion seed and the unit id, for stochastic rules (DARE).</param>
public sealed record UnitFusionContext(SkillUnit Unit, double PreviousScore, double CurrentScore, UnitCategory Category, long Seed);

/// <summary>The tensors of one unit slice given to a rule. All have the same shape and dtype, on one device; the rule must not modify or dispose them.</summary>
/// <param name="Base">The reference for task vectors: the pre-trained model (or θ̄_{k−1} when none is kept).</param>
/// <param name="Previous">θ̄_{k−1}: the model before the current task.</param>
/// <param name="Current">θ_k: the model after training the current task.</param>
public sealed record FusionInputs(Tensor Base, Tensor Previous, Tensor Current);

/// <summary>The outcome of fusing one unit (plain data, for logs and plots).</summary>
/// <param name="UnitId">The unit.</param>
/// <param name="Category">Its category.</param>
/// <param name="Lambda">The weight of the current model, where the rule has one (θ = prev + λ (cur − prev)); NaN otherwise.</param>
/// <param name="PreviousScore">Â_{k−1}(u).</param>
/// <param name="CurrentScore">Ŝ_k(u).</param>
public sealed record UnitFusionReport(string UnitId, UnitCategory Category, double Lambda, double PreviousScore, double CurrentScore);

/// <summary>
/// A rule that fuses, unit by unit, the model before (θ̄_{k−1}) and after (θ_k) a task. Rules are
/// pure tensor functions: same inputs, same output, on any device.
/// </summary>
public interface IFusionRule
{
    /// <summary>Short name (<c>kif-static</c>, <c>kif-adaptive</c>, <c>average</c>, <c>task-arithmetic</c>, <c>ties</c>, <c>dare</c>, <c>magmax</c>).</summary>
    string Name { get; }

    /// <summary>
    /// The fused values of one slice of a unit: a fresh tensor of the inputs' shape, dtype and
    /// device, owned by the caller. Must not modify its inputs.
    /// </summary>
    Tensor Fuse(FusionInputs inputs, UnitFusionContext context);

    /// <summary>The λ this rule uses for a unit (weight of the current model), or NaN when it has no single λ.</summary>
    double LambdaFor(UnitFusionContext context);
}

/// <summary>
/// A slice rule with a kernel for contiguous float32 slices in CPU memory (TIES, DARE): no native
/// call per slice, so <see cref="InPlaceFusion"/> can fuse many small slices on all cores. The kernel
/// gives the same bits as the rule's <see cref="ISliceFusionRule.FuseInPlace"/>.
/// </summary>
internal unsafe interface ICpuSliceRule : ISliceFusionRule
{
    /// <summary>Whether the kernel covers this rule's settings (otherwise the torch form runs).</summary>
    bool CpuApplies { get; }

    /// <summary>
    /// Writes the fused values of one slice of <paramref name="n"/> floats into <paramref name="current"/>;
    /// <paramref name="basis"/> is <paramref name="previous"/> when there is no separate base. On the
    /// cores when <paramref name="parallel"/>, else on the calling thread; touches no tensor.
    /// </summary>
    void FuseCpu(float* current, float* previous, float* basis, long n, UnitFusionContext context, bool parallel);
}
