using Klf.Models;

namespace Klf.SkillUnits;

/// <summary>
/// A part of one parameter tensor: the whole tensor (<see cref="Dim"/> = -1), or
/// <see cref="Length"/> consecutive indices from <see cref="Start"/> along dimension <see cref="Dim"/>
/// (rows of a LoRA A: Dim 0; columns of a LoRA B: Dim 1; an attention head's rows of q_proj: Dim 0).
/// </summary>
/// <param name="Parameter">The parameter's full name in the model (its checkpoint key).</param>
/// <param name="Dim">-1 for the whole tensor, else the sliced dimension.</param>
/// <param name="Start">First index along <see cref="Dim"/> (0 for the whole tensor).</param>
/// <param name="Length">Number of indices along <see cref="Dim"/> (0 for the whole tensor).</param>
public sealed record UnitSlice(string Parameter, int Dim = -1, long Start = 0, long Length = 0)
{
    /// <summary>Whether the slice is the whole parameter.</summary>
    public bool IsWhole => Dim < 0;

    /// <summary>A stable text form: <c>name</c> or <c>name[d0:s:l]</c>.</summary>
    public override string ToString() => IsWhole ? Parameter : $"{Parameter}[d{Dim}:{Start}:{Length}]";
}

/// <summary>How a unit's score is formed from its element scores.</summary>
public enum UnitAggregation
{
    /// <summary>The mean of all element scores of all slices.</summary>
    Mean,
    /// <summary>
    /// The product of the per-slice means: for a LoRA rank-1 unit (row r of A, column r of B),
    /// mean_i score(B[i,r]) × mean_j score(A[r,j]), the mean of the outer product without forming it.
    /// </summary>
    ProductOfSliceMeans,
}

/// <summary>
/// A skill unit: a group of parameter elements scored and fused together. Pure data.
/// </summary>
/// <param name="Id">Stable identity derived from parameter names (plus slice); equal across save/load and processes.</param>
/// <param name="Slices">The parameter parts the unit consists of (disjoint from every other unit's).</param>
/// <param name="Aggregation">How element scores become the unit score.</param>
/// <param name="Layer">Group label: the layer (e.g. <c>model.layers.3</c>, <c>encoder.block.1</c>) or <c>embeddings</c>/<c>head</c>/<c>final_norm</c>/<c>other</c> (scheme: <see cref="UnitNames"/>).</param>
/// <param name="ModuleType">Group label: the module kind (e.g. <c>self_attn.q_proj</c>, <c>mlp.up_proj</c>, <c>input_layernorm</c>, <c>SelfAttention.q</c>, <c>self_attn.q_proj.lora_A</c>; scheme: <see cref="UnitNames"/>).</param>
/// <param name="ElementCount">Number of parameter elements in the unit.</param>
public sealed record SkillUnit(string Id, IReadOnlyList<UnitSlice> Slices, UnitAggregation Aggregation, string Layer, string ModuleType, long ElementCount);

/// <summary>
/// Splits a model's trainable parameters into skill units. Implementations: full fine-tuning (one
/// unit per tensor), LoRA matrices, LoRA rank-1 components, attention heads.
/// </summary>
public interface ISkillUnitPartitioner
{
    /// <summary>Short stable name (recorded in unit-map fingerprints), e.g. <c>full</c>, <c>lora-matrix</c>, <c>lora-rank1</c>, <c>head</c>.</summary>
    string Name { get; }

    /// <summary>The units of <paramref name="model"/>'s current trainable parameters.</summary>
    SkillUnitMap Partition(ILanguageModel model);
}

/// <summary>Tensor access to unit slices.</summary>
public static class UnitSliceExtensions
{
    /// <summary>
    /// A view of <paramref name="parameter"/> covering the slice (no copy: writes through the view
    /// change the parameter). The caller disposes the returned handle (a dispose scope does).
    /// </summary>
    public static TorchSharp.torch.Tensor View(this UnitSlice slice, TorchSharp.torch.Tensor parameter) =>
        slice.IsWhole ? parameter.alias() : parameter.narrow(slice.Dim, slice.Start, slice.Length);
}
