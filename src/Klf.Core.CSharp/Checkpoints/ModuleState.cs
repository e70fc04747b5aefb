using Klf.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace Klf.Checkpoints;

/// <summary>
/// The exact training state of a module as one safetensors file: every parameter by its full
/// name (base weights, LoRA adapters, frozen or not) in its own dtype, plus torch's CPU random
/// generator state. Unlike <see cref="Checkpoint"/> (a Hugging Face folder of the base model) it
/// restores a module bit for bit, whatever was attached to it, so a continual run can resume.
/// </summary>
public static class ModuleState
{
    /// <summary>Key of torch's CPU generator state in the file.</summary>
    public const string RngKey = "__torch_cpu_rng_state__";

    /// <summary>
    /// Writes every parameter of <paramref name="module"/> and torch's CPU generator state to
    /// <paramref name="path"/> atomically. Tensors are copied to the CPU for writing; the module's
    /// tensors are neither modified nor disposed.
    /// </summary>
    public static void Save(nn.Module module, string path)
    {
        using var scope = NewDisposeScope();
        var tensors = module.named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach().cpu())).ToList();
        tensors.Add(new(RngKey, torch.random.get_rng_state()));
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["format"] = "klf-module-state/1" });
    }

    /// <summary>
    /// Restores a state written by <see cref="Save"/> into <paramref name="module"/>, strictly: the
    /// file must hold exactly the module's parameter names with the same shapes and dtypes, else an
    /// <see cref="InvalidDataException"/> names the file and lists the differences and nothing is
    /// changed. Values are copied into the existing parameters (on their device) under no_grad; when
    /// <paramref name="restoreRng"/> is true, torch's CPU generator state is restored too.
    /// </summary>
    public static void Load(nn.Module module, string path, bool restoreRng = true)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no module state at {path}", path);
        var stored = SafeTensors.Load(path);
        try
        {
            var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            var problems = new List<string>();
            foreach (var name in parameters.Keys.Where(n => !stored.ContainsKey(n)).Order(StringComparer.Ordinal))
                problems.Add($"missing {name}");
            foreach (var name in stored.Keys.Where(n => n != RngKey && !parameters.ContainsKey(n)).Order(StringComparer.Ordinal))
                problems.Add($"unexpected {name}");
            foreach (var (name, p) in parameters)
            {
                if (!stored.TryGetValue(name, out var t)) continue;
                if (!t.shape.SequenceEqual(p.shape) || t.dtype != p.dtype)
                    problems.Add($"{name}: stored {t.dtype}[{string.Join(",", t.shape)}], module {p.dtype}[{string.Join(",", p.shape)}]");
            }
            if (restoreRng && !stored.ContainsKey(RngKey)) problems.Add($"missing {RngKey}");
            if (problems.Count > 0)
                throw new InvalidDataException($"{path} does not match the module: {string.Join("; ", problems.Take(20))}{(problems.Count > 20 ? $"; … {problems.Count - 20} more" : "")}");
            using (no_grad())
                foreach (var (name, p) in parameters) p.copy_(stored[name]);
            if (restoreRng) torch.random.set_rng_state(stored[RngKey]);
        }
        finally
        {
            foreach (var t in stored.Values) t.Dispose();
        }
    }
}
