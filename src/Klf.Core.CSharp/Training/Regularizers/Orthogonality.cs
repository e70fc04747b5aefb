using Klf.Adapters;
using Klf.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Training.Regularizers;

/// <summary>
/// The orthogonality regulariser that keeps LoRA rank-1 components distinct (kif-method.md, "Skill
/// units"): λ_orth · mean over the adapter's trainable LoRA matrices P of ‖P Pᵀ − I‖_F, where for
/// A (r × in) the Gram matrix is A Aᵀ and for B (out × r) it is Bᵀ B (both r × r), and the
/// Frobenius norm is not squared. λ_orth = 0.1 by default.
/// </summary>
public static class Orthogonality
{
    /// <summary>The default λ_orth of the KIF reference.</summary>
    public const double DefaultLambda = 0.1;

    /// <summary>
    /// The penalty as a differentiable scalar: 0-dim, in float32 (float64 when the adapter is
    /// float64), on the adapter's device. Gradients flow into the trainable A and B of
    /// <paramref name="adapter"/>. The caller owns and disposes the result (inside a training step
    /// the step's dispose scope does); intermediates are disposed here (autograd keeps what it needs).
    /// Throws when the adapter has no trainable matrix.
    /// </summary>
    /// <param name="lora">The model's LoRA handle.</param>
    /// <param name="adapter">The adapter whose matrices are penalised (only those with requires_grad).</param>
    /// <param name="lambda">λ_orth.</param>
    public static Tensor Loss(LoraModel lora, string adapter, double lambda = DefaultLambda)
    {
        using var scope = NewDisposeScope();
        Tensor? total = null;
        var n = 0;
        foreach (var (_, p, isA) in Matrices(lora, adapter))
        {
            var d = Deviation(p, isA);
            total = total is null ? d : total.add(d);
            n++;
        }
        if (total is null)
            throw new InvalidOperationException($"adapter '{adapter}' has no trainable LoRA matrix to regularise");
        return total.mul(lambda / n).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A hook for <see cref="StepHooks.ExtraLosses"/>: each step it returns <see cref="Loss"/>
    /// (freed by the step's dispose scope after backward).
    /// </summary>
    public static Func<StepContext, Tensor> ExtraLoss(LoraModel lora, string adapter, double lambda = DefaultLambda) =>
        _ => Loss(lora, adapter, lambda);

    /// <summary>
    /// Adds <see cref="ExtraLoss"/> to <paramref name="hooks"/> and returns the same hooks (for chaining).
    /// </summary>
    public static StepHooks AddTo(StepHooks hooks, LoraModel lora, string adapter, double lambda = DefaultLambda)
    {
        hooks.ExtraLosses.Add(ExtraLoss(lora, adapter, lambda));
        return hooks;
    }

    /// <summary>
    /// Diagnostics without gradients: ‖P Pᵀ − I‖_F (A) or ‖Pᵀ P − I‖_F (B) of each trainable matrix of
    /// <paramref name="adapter"/>, keyed by its in-memory parameter name, in module order (A before B).
    /// </summary>
    public static IReadOnlyList<(string Name, double Deviation)> Deviations(LoraModel lora, string adapter)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return Matrices(lora, adapter).Select(m => (m.Name, Deviation(m.P, m.IsA).ToDouble())).ToList();
    }

    private static IEnumerable<(string Name, Tensor P, bool IsA)> Matrices(LoraModel lora, string adapter)
    {
        foreach (var m in lora.ModulesOf(adapter))
        {
            var a = m.LoraA(adapter);
            if (a.requires_grad) yield return (Lora.MemoryKey(m.Path, "lora_A", adapter), a, true);
            var b = m.LoraB(adapter);
            if (b.requires_grad) yield return (Lora.MemoryKey(m.Path, "lora_B", adapter), b, false);
        }
    }

    // ‖G − I‖_F with G = P Pᵀ (A, r × in) or Pᵀ P (B, out × r), computed in float32 at least.
    private static Tensor Deviation(Tensor p, bool isA)
    {
        var x = p.dtype is ScalarType.Float32 or ScalarType.Float64 ? p : p.to_type(ScalarType.Float32);
        var gram = isA ? x.matmul(x.t()) : x.t().matmul(x);
        var eye = torch.eye(gram.shape[0], dtype: gram.dtype, device: gram.device);
        return gram.sub(eye).norm();
    }
}
