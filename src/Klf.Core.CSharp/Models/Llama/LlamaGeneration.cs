using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Models.Llama;

// Batched greedy decoding of LlamaForCausalLM, with or without the KV cache (left padding).
public sealed partial class LlamaForCausalLM
{
    // ------------------------------------------------------------------ greedy generation

    /// <summary>
    /// Batched greedy decoding (see <see cref="ILanguageModel.GenerateGreedy"/>). Prompts are
    /// left-padded with <see cref="PadTokenId"/>; positions are cumsum(mask) - 1. A row stops after
    /// emitting one of <see cref="GenerationOptions.EosTokenIds"/> (default: the config's EOS ids)
    /// and is then fed pads. Returns new tokens only, without the EOS. Prompts must be non-empty.
    /// A batch of one sequence with the cache, on a float32 CPU model without adapters, decodes the
    /// tokens after its prompt in <see cref="LlamaCpuDecoder"/> (no libtorch call per token; logits
    /// agree with the forward to float32 rounding).
    /// </summary>
    public int[][] GenerateGreedy(IReadOnlyList<int[]> prompts, GenerationOptions options)
    {
        if (options.BatchSize <= 0) throw new ArgumentException("BatchSize must be positive", nameof(options));
        for (var i = 0; i < prompts.Count; i++)
            if (prompts[i].Length == 0) throw new ArgumentException($"prompt {i} is empty", nameof(prompts));
        var eos = new HashSet<int>(options.EosTokenIds ?? Config.EosTokenIds);
        var results = new int[prompts.Count][];
        var wasTraining = training;
        eval();
        try
        {
            using var _ = torch.no_grad();
            for (var start = 0; start < prompts.Count; start += options.BatchSize)
            {
                var chunk = prompts.Skip(start).Take(options.BatchSize).ToArray();
                var outs = GenerateChunk(chunk, options.MaxNewTokens, eos, options.UseCache);
                for (var i = 0; i < outs.Length; i++) results[start + i] = outs[i];
            }
        }
        finally
        {
            train(wasTraining);
        }
        return results;
    }

    int[][] GenerateChunk(int[][] prompts, int maxNew, HashSet<int> eos, bool useCache)
    {
        var device = ParameterDevice();
        int B = prompts.Length, P = prompts.Max(p => p.Length);
        // Host-side state across steps: the sequence so far (left-padded prompt + generated) and its mask.
        var ids = new List<long>[B];
        var mask = new List<long>[B];
        for (var b = 0; b < B; b++)
        {
            var pad = P - prompts[b].Length;
            ids[b] = Enumerable.Repeat((long)PadTokenId, pad).Concat(prompts[b].Select(t => (long)t)).ToList();
            mask[b] = Enumerable.Repeat(0L, pad).Concat(Enumerable.Repeat(1L, prompts[b].Length)).ToList();
        }
        var outputs = Enumerable.Range(0, B).Select(_ => new List<int>()).ToArray();
        var finished = new bool[B];
        using var cache = useCache ? new LlamaKvCache(Config.NumHiddenLayers, P + maxNew) : null;
        LlamaCpuDecoder? single = null;   // one sequence on the CPU: steps after the prompt without libtorch (LlamaCpuDecoder)
        try
        {
            for (var step = 0; step < maxNew && !finished.All(f => f); step++)
            {
                if (single is not null)
                {
                    var token = single.Step((int)ids[0][^1]);
                    if (eos.Contains(token)) finished[0] = true;
                    else outputs[0].Add(token);
                    ids[0].Add(token);
                    mask[0].Add(1);
                    continue;
                }
                using var scope = torch.NewDisposeScope();
                var S = ids[0].Count;
                var maskT = ToTensor(mask, 0, S, device);                                  // (B, S)
                var allPos = PositionIdsFromMask(maskT);                                   // (B, S)
                Tensor logits;
                if (useCache && step > 0)
                {
                    var input = ToTensor(ids, S - 1, S, device);                          // (B, 1)
                    logits = LastLogits(input, maskT, allPos[.., (S - 1)..], cache);       // (B, V)
                }
                else
                {
                    var input = ToTensor(ids, 0, S, device);                              // (B, S)
                    logits = LastLogits(input, maskT, allPos, cache);                      // (B, V): the head on the last position only
                }
                var next = logits.argmax(-1).to(ScalarType.Int64).cpu().data<long>().ToArray();  // (B)
                for (var b = 0; b < B; b++)
                {
                    long token = PadTokenId;
                    if (!finished[b])
                    {
                        token = next[b];
                        if (eos.Contains((int)token)) finished[b] = true;
                        else outputs[b].Add((int)token);
                    }
                    ids[b].Add(token);
                    mask[b].Add(1);
                }
                if (step == 0 && B == 1 && cache is not null && maxNew > 1)
                    single = LlamaCpuDecoder.TryCreate(this, cache, firstPosition: S, steps: maxNew - 1);
            }
        }
        finally
        {
            single?.Dispose();
        }
        return outputs.Select(o => o.ToArray()).ToArray();
    }

    /// <summary>Logits (B, V) of the last position only: the LM head skips every other position. Fresh tensor.</summary>
    Tensor LastLogits(Tensor inputIds, Tensor attentionMask, Tensor positionIds, LlamaKvCache? cache)
    {
        using var scope = torch.NewDisposeScope();
        var h = Hidden(inputIds, attentionMask, positionIds, cache);                     // (B, T, C)
        return LmHead(h.select(1, -1)).MoveToOuterDisposeScope();                       // (B, V)
    }

    static Tensor ToTensor(List<long>[] rows, int from, int to, Device device)
    {
        var data = new long[rows.Length * (to - from)];
        for (var b = 0; b < rows.Length; b++)
            rows[b].CopyTo(from, data, b * (to - from), to - from);
        return torch.tensor(data, new long[] { rows.Length, to - from }, ScalarType.Int64).to(device);
    }
}
