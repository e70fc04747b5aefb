using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Kif;

/// <summary>
/// The tensor kernels of Recurrent-KIF's merge: a global quantile over many tensors, and the
/// element-wise merge θ = anchor + c_in ⊙ δ_in + c_out ⊙ δ_out with (c_in, c_out) looked up from the
/// two masks. Pure: inputs are never modified; results are fresh tensors owned by the caller.
/// </summary>
public static class RecurrentMerge
{
    /// <summary>
    /// The <paramref name="q"/>-quantile (a fraction in [0, 1]) of all elements of <paramref name="tensors"/>
    /// taken together, with numpy's linear interpolation (as <c>torch.quantile</c> over their
    /// concatenation, without its size limit): sorted v, h = (n − 1)·q, v[⌊h⌋] + (h − ⌊h⌋)·(v[⌊h⌋+1] − v[⌊h⌋]).
    /// The two order statistics come from <c>kthvalue</c> on the concatenated float32 values, on their device.
    /// </summary>
    /// <exception cref="ArgumentException">No elements, or q outside [0, 1].</exception>
    public static double GlobalQuantile(IEnumerable<Tensor> tensors, double q)
    {
        if (!(q >= 0 && q <= 1)) throw new ArgumentOutOfRangeException(nameof(q), q, "q is a fraction in [0, 1]");
        using var scope = NewDisposeScope();
        var flat = tensors.Select(t => t.detach().reshape(-1).to_type(ScalarType.Float32)).ToArray();
        var n = flat.Sum(t => t.numel());
        if (n == 0) throw new ArgumentException("no elements to take a quantile of");
        var all = flat.Length == 1 ? flat[0] : cat(flat, 0);
        var h = (n - 1) * q;
        var i = (long)Math.Floor(h);
        var lower = all.kthvalue(i + 1, 0, false).Item1.ToSingle();
        if (i + 1 >= n) return lower;
        var upper = all.kthvalue(i + 2, 0, false).Item1.ToSingle();
        var t = h - i;
        return lower + t * ((double)upper - lower);
    }

    /// <summary>
    /// Elements strictly above the (1 − <paramref name="fraction"/>) global quantile of <paramref name="scores"/>:
    /// the threshold <see cref="GlobalQuantile"/> uses for every tensor of one importance.
    /// </summary>
    public static double TopThreshold(IEnumerable<Tensor> scores, double fraction) => GlobalQuantile(scores, 1 - fraction);

    /// <summary>
    /// The merged values of one parameter: anchor + c_in ⊙ (inner − anchor) + c_out ⊙ (current − inner),
    /// where (c_in, c_out) = <paramref name="table"/>.For(innerScore &gt; innerThreshold, outerScore &gt; outerThreshold)
    /// element by element (thresholds compared in the scores' dtype, float32).
    /// </summary>
    /// <param name="anchor">θ at the start of the round (anchor), any floating dtype.</param>
    /// <param name="inner">θ after the round's inner (current-task) steps.</param>
    /// <param name="current">θ after the round's outer (memory) steps.</param>
    /// <param name="innerScore">Inner element importance (the parameter's shape).</param>
    /// <param name="outerScore">Outer element importance (the parameter's shape).</param>
    /// <param name="innerThreshold">Inner mask threshold.</param>
    /// <param name="outerThreshold">Outer mask threshold.</param>
    /// <param name="table">The coefficient table.</param>
    /// <returns>A fresh tensor of the anchor's shape, dtype and device (the caller disposes it).</returns>
    public static Tensor Merge(Tensor anchor, Tensor inner, Tensor current, Tensor innerScore, Tensor outerScore,
        double innerThreshold, double outerThreshold, RecurrentMergeTable table)
    {
        using var scope = NewDisposeScope();
        var cell = Cells(innerScore, outerScore, innerThreshold, outerThreshold);
        // Cell 2·in + out: 0 = neither, 1 = outer only, 2 = inner only, 3 = both.
        var cIn = tensor(new[] { table.Neither.Inner, table.OuterOnly.Inner, table.InnerOnly.Inner, table.Both.Inner }, anchor.dtype, anchor.device);
        var cOut = tensor(new[] { table.Neither.Outer, table.OuterOnly.Outer, table.InnerOnly.Outer, table.Both.Outer }, anchor.dtype, anchor.device);
        var wIn = cIn.take(cell);
        var wOut = cOut.take(cell);
        var merged = anchor.addcmul(wIn, inner - anchor, 1).addcmul_(wOut, current - inner, 1);
        return merged.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The mask cell of every element, 2·[innerScore &gt; innerThreshold] + [outerScore &gt; outerThreshold],
    /// as an int64 tensor of the scores' shape (caller disposes).
    /// </summary>
    public static Tensor Cells(Tensor innerScore, Tensor outerScore, double innerThreshold, double outerThreshold)
    {
        using var scope = NewDisposeScope();
        var mi = innerScore.gt(innerThreshold).to_type(ScalarType.Int64);
        var mo = outerScore.gt(outerThreshold).to_type(ScalarType.Int64);
        return mi.mul(2).add_(mo).MoveToOuterDisposeScope();
    }
}
