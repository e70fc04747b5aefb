using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Fusion;

/// <summary>
/// DARE (Yu et al., 2024, "drop and rescale") applied to the current task's update relative to the
/// model before the task: δ = cur − prev; each element of δ is dropped with probability p and the
/// survivors are rescaled by 1/(1 − p); θ̄ = prev + λ·δ̃. The base input is not used: θ̄_{k−1} already
/// holds what earlier tasks contributed, and this keeps DARE a sparsification of "what the current
/// task changed" (with base = prev the task-vector form of DARE is the same thing).
/// The mask is an independent Bernoulli draw per element, made from a local
/// <see cref="torch.Generator"/> seeded with the unit context's seed on the inputs' device, as the
/// positions of the rarer outcome: the gaps between them are geometric, so only (1 − p)·n (or p·n)
/// random numbers are drawn and only those elements are gathered and written. The same inputs and
/// seed give the same output, independently of torch's global generator (masks on CPU and CUDA
/// differ; each is reproducible).
/// </summary>
/// <param name="dropRate">p in [0, 1) (default 0.9, the rate DARE's paper uses for most merges).</param>
/// <param name="scale">λ (default 1).</param>
public sealed class DareRule(double dropRate = 0.9, double scale = 1.0) : ICpuSliceRule
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
        using var scope = NewDisposeScope();
        var n = shape.Aggregate(1L, (a, b) => a * b);
        var (positions, kept) = Positions(n, seed, device);
        var mask = (kept ? zeros(n, ScalarType.Bool, device) : ones(n, ScalarType.Bool, device)).index_fill_(0, positions, kept);
        return mask.reshape(shape).MoveToOuterDisposeScope();
    }

    /// <summary>1 + 2|λ|/(1 − p): δ is at most 2M, rescaled by λ/(1 − p).</summary>
    public double Growth => 1.0 + 2.0 * Math.Abs(Scale) / (1.0 - DropRate);

    /// <summary>prev + λ·mask⊙(cur − prev)/(1 − p): <see cref="FuseInPlace"/> on a copy of cur, a fresh tensor the caller disposes.</summary>
    public Tensor Fuse(FusionInputs inputs, UnitFusionContext context) =>
        FusionKernels.OnCopy(inputs.Current, fused => FuseInPlace(fused, inputs.Previous, inputs.Base, context));

    /// <summary>
    /// Writes prev + λ·mask⊙(cur − prev)/(1 − p) into <paramref name="current"/> (contiguous): with few
    /// kept elements θ̄_{k−1} everywhere and prev + δ·s at the kept positions; with few dropped ones
    /// prev + δ·s everywhere and θ̄_{k−1} at the dropped positions (s = λ/(1 − p)).
    /// </summary>
    public void FuseInPlace(Tensor current, Tensor previous, Tensor basis, UnitFusionContext context)
    {
        using var scope = NewDisposeScope();
        var cur = current.view(-1);
        var prev = previous.reshape(-1);
        var s = Scale / (1.0 - DropRate);
        var (positions, kept) = Positions(cur.numel(), context.Seed, cur.device);
        if (kept)
        {
            var p = prev.index_select(0, positions);
            var updated = (cur.index_select(0, positions) - p) * s + p;
            cur.copy_(prev);
            cur.index_copy_(0, positions, updated);
        }
        else
        {
            cur.sub_(prev).mul_(s).add_(prev);
            cur.index_copy_(0, positions, prev.index_select(0, positions));
        }
    }

    /// <summary>Whether the kept elements are the rarer outcome (keep rate 1 − p ≤ 0.5), and that outcome's rate.</summary>
    private (bool Kept, double Rate) RarerOutcome() => 1.0 - DropRate <= 0.5 ? (true, 1.0 - DropRate) : (false, DropRate);

    /// <summary>Every setting: the mask's stream is reproduced by <see cref="TorchCpuRandom"/>.</summary>
    bool ICpuSliceRule.CpuApplies => true;

    /// <summary>
    /// The positions of the rarer outcome drawn in .NET from the stream a CPU torch generator with the
    /// unit's seed gives (<see cref="GeometricPositions"/>: the same positions as <see cref="FuseInPlace"/>
    /// on the CPU), a block at a time, each block's stretch of the slice fused while it is in cache
    /// (<see cref="CpuFusionKernels.DareKept"/> or <see cref="CpuFusionKernels.DareDropped"/>). The
    /// draws are serial per slice; slices run on the cores.
    /// </summary>
    unsafe void ICpuSliceRule.FuseCpu(float* current, float* previous, float* basis, long n, UnitFusionContext context, bool parallel)
    {
        var (kept, q) = RarerOutcome();
        var s = Scale / (1.0 - DropRate);
        if (n == 0) return;
        if (q <= 0.0)
        {
            // Nothing is dropped (p = 0): every element is rescaled.
            CpuFusionKernels.DareDropped(current, previous, 0, n, [], s);
            return;
        }
        var draws = GeometricPositions.ForThread(unchecked((ulong)context.Seed), q);
        Span<long> block = stackalloc long[256];
        long start = 0;
        while (start < n)
        {
            var count = draws.Next(block, n);
            var positions = block[..count];
            var end = count < block.Length ? n : positions[^1] + 1;
            if (kept) CpuFusionKernels.DareKept(current, previous, start, end, positions, s);
            else CpuFusionKernels.DareDropped(current, previous, start, end, positions, s);
            start = end;
        }
    }

    /// <summary>
    /// The sorted flat positions (int64) of the rarer outcome among <paramref name="n"/> independent
    /// Bernoulli draws with keep probability 1 − p, and whether they are the kept ones. Geometric gaps
    /// ⌊ln U / ln(1 − q)⌋ + 1 between successes of rate q, from a generator seeded with <paramref name="seed"/>.
    /// </summary>
    private (Tensor Positions, bool Kept) Positions(long n, long seed, Device device)
    {
        var (kept, q) = RarerOutcome();
        if (q <= 0.0 || n == 0) return (empty(0, ScalarType.Int64, device), kept);
        using var gen = new Generator(unchecked((ulong)seed), device);
        var chunks = new List<Tensor>();
        long last = -1;
        var logFail = Math.Log(1.0 - q);
        while (true)
        {
            // Enough draws for all of n with overwhelming probability; more rounds only when short.
            var mean = (n - 1 - last) * q;
            var draws = (long)Math.Ceiling(mean + 6.0 * Math.Sqrt(mean * (1.0 - q)) + 16.0);
            using var u = rand(draws, ScalarType.Float64, device, generator: gen);
            using var tail = 1.0 - u;                                                   // in (0, 1]
            using var gaps = (tail.log() / logFail).floor_().add_(1.0).to(ScalarType.Int64);
            var positions = gaps.cumsum(0).add_(last);
            var inRange = positions.lt(n).count_nonzero().item<long>();   // not sum: slow on a bool tensor
            if (inRange < draws)
            {
                chunks.Add(positions.narrow(0, 0, inRange));
                break;
            }
            chunks.Add(positions);
            last = positions[-1].item<long>();
        }
        var all = chunks.Count == 1 ? chunks[0] : cat(chunks, 0);
        foreach (var c in chunks) if (!ReferenceEquals(c, all)) c.Dispose();
        return (all, kept);
    }
}
