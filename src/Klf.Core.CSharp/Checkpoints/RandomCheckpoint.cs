using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Klf.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>
/// A randomly initialised checkpoint written tensor by tensor, without building the model in memory
/// (for models larger than memory: benchmarks of checkpoint fusion, smoke tests of large configs).
/// Every weight matrix and embedding is drawn from N(0, initializer_range) (0.02 when the config has
/// none) by a generator seeded with the seed and the tensor's name, norm weights are 1 and biases 0;
/// the same config and seed give the same bytes. Not the families' own initialisation (use
/// <see cref="LanguageModels.FromConfig"/> for that).
/// </summary>
public static class RandomCheckpoint
{
    /// <summary>
    /// Writes <paramref name="config"/>'s model into <paramref name="folder"/> in Hugging Face layout
    /// (shards of at most <paramref name="maxShardBytes"/> with an index, or one file), in
    /// <paramref name="dtype"/> (default float32). Returns the number of parameters written.
    /// </summary>
    public static long Write(JsonObject config, string source, string folder, long seed, long? maxShardBytes = null, ScalarType? dtype = null)
    {
        using var skeleton = LanguageModels.FromConfig(config, source, META, dtype);
        var std = config["initializer_range"] is JsonValue v && v.TryGetValue<double>(out var r) ? r : 0.02;
        var state = HfWeights.LiveStateDict(skeleton);
        HfWeights.SaveStreamed(skeleton, folder, name =>
        {
            var like = state[name];
            if (like.dim() == 1)
                return name.Contains("norm", StringComparison.Ordinal) || name.EndsWith("layer_norm.weight", StringComparison.Ordinal)
                    ? ones(like.shape, like.dtype) : zeros(like.shape, like.dtype);
            using var gen = new Generator(SeedOf(seed, name));
            using var values = randn(like.shape, ScalarType.Float32, generator: gen);
            return values.mul_(std).to(like.dtype);
        }, maxShardBytes);
        return state.Values.Sum(t => t.numel());
    }

    /// <summary>A tensor's generator seed from the checkpoint seed and the tensor's name (SHA-256, stable across processes).</summary>
    private static ulong SeedOf(long seed, string name)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes($"{seed}/{name}"));
        return BitConverter.ToUInt64(bytes, 0);
    }
}
