using Klf.Adapters;
using Klf.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training.Regularizers;

/// <summary>
/// The O-LoRA orthogonality penalty between the current task's LoRA adapter and those of earlier
/// tasks: λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ|.
/// </summary>
public static class OLoraPenalty
{
    /// <summary>Reference λ1 of O-LoRA.</summary>
    public const double DefaultLambda = 0.5;

    /// <summary>
    /// λ1 · Σ_modules Σ_prev Σ |A_prev A_curᵀ| (the sum of the absolute values of the r_prev × r_cur
    /// entries) over every module carrying <paramref name="current"/>, against each adapter of
    /// <paramref name="previous"/> on the same module. A differentiable 0-dim scalar (gradients
    /// reach A_cur); the caller owns it (inside a step, the step's dispose scope frees it). Zero
    /// (float32) when <paramref name="previous"/> is empty.
    /// </summary>
    public static Tensor Loss(LoraModel lora, string current, IEnumerable<string> previous, double lambda = DefaultLambda)
    {
        using var scope = NewDisposeScope();
        var earlier = previous.ToList();
        Tensor? total = null;
        foreach (var m in lora.ModulesOf(current))
        {
            var aCur = m.LoraA(current);
            foreach (var prev in earlier)
            {
                if (!m.HasAdapter(prev)) continue;
                var term = m.LoraA(prev).matmul(aCur.t()).abs().sum();
                total = total is null ? term : total.add(term);
            }
        }
        var result = total is null ? torch.zeros(Array.Empty<long>(), dtype: ScalarType.Float32) : total.mul(lambda);
        return result.MoveToOuterDisposeScope();
    }
}
