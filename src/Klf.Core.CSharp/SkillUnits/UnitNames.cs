namespace Klf.SkillUnits;

/// <summary>
/// Group labels and LoRA name parsing for skill units, derived from parameter names only (never
/// from shapes or configs), so they are identical in every process and after save/load.
/// </summary>
/// <remarks>
/// <para><b>Layer</b> (<see cref="SkillUnit.Layer"/>): the name prefix up to and including the first
/// all-digit segment of the module path (<c>model.layers.3</c>, <c>encoder.block.1</c>,
/// <c>decoder.block.0</c>, <c>encoder.layer.2</c>). Names without such a segment: <c>embeddings</c> (<c>embed_tokens</c>,
/// <c>shared</c>, BERT's <c>embeddings.*</c>), <c>head</c> (<c>lm_head</c>), <c>final_norm</c> (<c>model.norm</c>,
/// <c>*.final_layer_norm</c>), else <c>other</c>.</para>
/// <para><b>ModuleType</b> (<see cref="SkillUnit.ModuleType"/>): the module path after the layer
/// prefix (<c>self_attn.q_proj</c>, <c>mlp.up_proj</c>, <c>input_layernorm</c>); T5's sub-layer level
/// <c>layer.&lt;i&gt;</c> is dropped (<c>SelfAttention.q</c>, <c>EncDecAttention.o</c>,
/// <c>DenseReluDense.wi_0</c>) and its <c>layer_norm</c> is named after the sub-layer it belongs
/// to (<c>SelfAttention.layer_norm</c>, <c>EncDecAttention.layer_norm</c>,
/// <c>DenseReluDense.layer_norm</c>); BERT's are as the path reads (<c>attention.self.query</c>,
/// <c>attention.output.LayerNorm</c>, <c>intermediate.dense</c>, <c>output.dense</c>). A parameter leaf other than <c>weight</c> is kept
/// (<c>self_attn.q_proj.bias</c>). Outside layers: the whole module path (<c>model.embed_tokens</c>,
/// <c>shared</c>, <c>lm_head</c>, <c>model.norm</c>, <c>encoder.final_layer_norm</c>). LoRA matrices:
/// the base module's type plus <c>.lora_A</c> / <c>.lora_B</c> (adapter name dropped); rank-1 units
/// <c>&lt;type&gt;.lora</c>; attention heads <c>&lt;attention type&gt;.head</c> / <c>.kv_head</c>.</para>
/// </remarks>
public static class UnitNames
{
    /// <summary>The layer label of a parameter (see the remarks of <see cref="UnitNames"/>).</summary>
    public static string Layer(string parameterName) => Split(ModulePathOf(parameterName)).Layer;

    /// <summary>The module-type label of a whole (non-LoRA) parameter (see the remarks of <see cref="UnitNames"/>).</summary>
    public static string ModuleType(string parameterName)
    {
        if (TryParseLora(parameterName, out var module, out var matrix, out _))
            return ModuleTypeOfModule(module) + "." + matrix;
        var (path, leaf) = SplitLeaf(parameterName);
        var type = ModuleTypeOfModule(path);
        return leaf == "weight" ? type : type + "." + leaf;
    }

    /// <summary>The module-type label of a module path (no parameter leaf), e.g. <c>self_attn.q_proj</c>.</summary>
    public static string ModuleTypeOfModule(string modulePath)
    {
        var (layer, rest) = Split(modulePath);
        if (rest.Length == 0) return modulePath;
        var segs = rest.Split('.');
        if (segs.Length >= 3 && segs[0] == "layer" && IsDigits(segs[1]))
        {
            var tail = string.Join('.', segs[2..]);
            if (tail == "layer_norm") return T5SubLayerKind(layer, int.Parse(segs[1])) + ".layer_norm";
            return tail;
        }
        return rest;
    }

    /// <summary>The layer label of a module path (no parameter leaf).</summary>
    public static string LayerOfModule(string modulePath) => Split(modulePath).Layer;

    /// <summary>
    /// Parses an in-memory LoRA parameter name <c>&lt;module&gt;.lora_A.&lt;adapter&gt;.weight</c> (or
    /// <c>lora_B</c>). Returns false for any other name.
    /// </summary>
    /// <param name="parameterName">A parameter name.</param>
    /// <param name="module">The adapted module's path, e.g. <c>model.layers.0.self_attn.q_proj</c>.</param>
    /// <param name="matrix"><c>lora_A</c> or <c>lora_B</c>.</param>
    /// <param name="adapter">The adapter name.</param>
    public static bool TryParseLora(string parameterName, out string module, out string matrix, out string adapter)
    {
        module = matrix = adapter = "";
        var segs = parameterName.Split('.');
        for (var i = 1; i + 2 < segs.Length; i++)
        {
            if (segs[i] is not ("lora_A" or "lora_B")) continue;
            if (i + 3 != segs.Length || segs[i + 2] != "weight") return false;
            module = string.Join('.', segs[..i]);
            matrix = segs[i];
            adapter = segs[i + 1];
            return true;
        }
        return false;
    }

    // The module path a parameter belongs to (LoRA matrices: the adapted module; else the name minus its leaf).
    private static string ModulePathOf(string parameterName) =>
        TryParseLora(parameterName, out var module, out _, out _) ? module : SplitLeaf(parameterName).Path;

    private static (string Path, string Leaf) SplitLeaf(string name)
    {
        var dot = name.LastIndexOf('.');
        return dot < 0 ? (name, "weight") : (name[..dot], name[(dot + 1)..]);
    }

    // (layer label, module path after the layer prefix; "" when the path has no layer index).
    private static (string Layer, string Tail) Split(string modulePath)
    {
        var segs = modulePath.Split('.');
        for (var i = 0; i < segs.Length; i++)
            if (IsDigits(segs[i]))
                return (string.Join('.', segs[..(i + 1)]), string.Join('.', segs[(i + 1)..]));
        return (NonLayerLabel(segs), "");
    }

    private static string NonLayerLabel(string[] segs)
    {
        var last = segs[^1];
        if (last is "embed_tokens" or "shared" or "wte" or "embeddings" || segs[0] == "embeddings") return "embeddings";
        if (last is "lm_head") return "head";
        if (last is "norm" or "final_layer_norm" or "ln_f") return "final_norm";
        return "other";
    }

    // HF T5: encoder blocks are [SelfAttention, FF]; decoder blocks [SelfAttention, EncDecAttention, FF].
    private static string T5SubLayerKind(string layer, int index)
    {
        var decoder = layer.StartsWith("decoder.", StringComparison.Ordinal);
        return (decoder, index) switch
        {
            (_, 0) => "SelfAttention",
            (true, 1) => "EncDecAttention",
            (false, 1) or (true, 2) => "DenseReluDense",
            _ => $"layer{index}",
        };
    }

    private static bool IsDigits(string s) => s.Length > 0 && s.All(char.IsAsciiDigit);
}
