#!/usr/bin/env python3
"""Klf's fusion rules in plain PyTorch: the fusion section of `klf bench` (BenchFusion.run), rule for
rule and tensor for tensor on the named parameters of a LLaMA config (Klf's named_parameters order),
on whole-tensor units (`full`) and on `neuron-B` units (NeuronPartitioner: a head per unit for
attention, rows of q/k/v and columns of o_proj; B feed-forward neurons per unit, rows of gate/up and
columns of down_proj; every other tensor whole). Set-up as in the bench: θ̄_{k−1} is θ_0 plus 1 %
noise, θ_k that plus another 1 %; unit scores random and min-max normalised, categories from the top
20 % of each. Rule semantics and defaults as Klf's (Fusion/Rules/*.cs), written the way a researcher
would, unit by unit under torch.no_grad: KIF static (λ by category 0.3/0/1/0.5), KIF adaptive
(λ = logistic((Ŝ − Â)/0.25)), average (λ = 0.5), task arithmetic, MagMax, TIES (top 20 % per slice,
elected sign, disjoint mean) and DARE (p 0.9, rescaled), against θ̄_{k−1} or a separate base θ_0.
Timed the same way: the median of `repeats` fusions after 2 warm-ups, each from θ_k restored untimed,
and copy_ of the same tensors (median of max(10, repeats) after 3 warm-ups).
Prints one JSON line: torch version, threads, and per (rule, units, base) fuse_ms, copy_ms, ratio.
"""
import json
import math
import statistics
import time

import torch

from llama_torch import parse

args, D = parse(([("repeats", 7)], [("units", "full,neuron-16"),
                                       ("rules", "kif-static,kif-adaptive,average,task-arithmetic,magmax,ties,dare"),
                                       ("base-rules", "task-arithmetic,magmax,ties")]))


def parameter_shapes():
    """(name, shape) in the order Klf's LlamaForCausalLM lists its named_parameters."""
    C, I = args.hidden, args.intermediate
    shapes = [("model.embed_tokens.weight", (args.vocab, C))]
    for i in range(args.layers):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (args.heads * D, C)),
                   (p + "self_attn.k_proj.weight", (args.kv_heads * D, C)),
                   (p + "self_attn.v_proj.weight", (args.kv_heads * D, C)),
                   (p + "self_attn.o_proj.weight", (C, args.heads * D)),
                   (p + "mlp.gate_proj.weight", (I, C)),
                   (p + "mlp.up_proj.weight", (I, C)),
                   (p + "mlp.down_proj.weight", (C, I)),
                   (p + "input_layernorm.weight", (C,)),
                   (p + "post_attention_layernorm.weight", (C,))]
    shapes.append(("model.norm.weight", (C,)))
    if not args.tied:
        shapes.append(("lm_head.weight", (args.vocab, C)))
    return shapes


# A unit is a list of slices (name, dim, start, length); dim -1 is the whole tensor.
def full_units(shapes):
    return [[(name, -1, 0, 0)] for name, _ in shapes]


def neuron_units(shapes, block):
    """NeuronPartitioner(block): units in named_parameters order, a module's units at its first tensor."""
    units = []
    for name, _ in shapes:
        if name.endswith("self_attn.q_proj.weight"):
            attn = name[: -len("q_proj.weight")]
            q, k, v, o = (attn + x + "_proj.weight" for x in "qkvo")
            if args.kv_heads == args.heads:
                units += [[(q, 0, h * D, D), (k, 0, h * D, D), (v, 0, h * D, D), (o, 1, h * D, D)] for h in range(args.heads)]
            else:  # grouped-query attention: a key/value head is shared, so it is a unit of its own
                units += [[(q, 0, h * D, D), (o, 1, h * D, D)] for h in range(args.heads)]
                units += [[(k, 0, g * D, D), (v, 0, g * D, D)] for g in range(args.kv_heads)]
        elif name.endswith("mlp.gate_proj.weight"):
            mlp = name[: -len("gate_proj.weight")]
            for s in range(0, args.intermediate, block):
                n = min(block, args.intermediate - s)
                units.append([(mlp + "gate_proj.weight", 0, s, n), (mlp + "up_proj.weight", 0, s, n), (mlp + "down_proj.weight", 1, s, n)])
        elif any(name.endswith(x) for x in ("self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                             "mlp.up_proj.weight", "mlp.down_proj.weight")):
            continue  # already in the units of its head or neuron block
        else:
            units.append([(name, -1, 0, 0)])
    return units


def view(tensors, s):
    name, dim, start, length = s
    t = tensors[name]
    return t if dim < 0 else t.narrow(dim, start, length)


# ---------------------------------------------------------------- the rules, one unit at a time
# Each writes the fused unit into the live parameters (which hold θ_k) from prev (θ̄_{k−1}) and base.

KIF_STATIC = {"shared": 0.3, "previous": 0.0, "current": 1.0, "neither": 0.5}


def interpolate(live, prev, unit, lam):
    for s in unit:
        cur = view(live, s)
        cur.copy_(torch.lerp(view(prev, s), cur, lam))


def task_arithmetic(live, prev, base, unit, scale=1.0):
    for s in unit:
        cur, b = view(live, s), view(base, s)
        cur.copy_(b + scale * ((view(prev, s) - b) + (cur - b)))


def magmax(live, prev, base, unit, scale=1.0):
    for s in unit:
        cur, b = view(live, s), view(base, s)
        tp, tc = view(prev, s) - b, cur - b
        cur.copy_(b + scale * torch.where(tc.abs() >= tp.abs(), tc, tp))


def trim(tv, fraction):
    """The top ⌈fraction·n⌉ entries of tv by magnitude (ties at the threshold kept), the rest zero."""
    n = tv.numel()
    k = min(n, max(1, math.ceil(fraction * n - 1e-9)))
    magnitude = tv.abs()
    threshold = magnitude.flatten().kthvalue(n - k + 1).values
    return tv * (magnitude >= threshold)


def ties(live, prev, base, unit, fraction=0.2, scale=1.0):
    for s in unit:
        cur, b = view(live, s), view(base, s)
        trimmed = torch.stack([trim(view(prev, s) - b, fraction), trim(cur - b, fraction)])
        elected = trimmed.sum(0).sign()
        agrees = (trimmed.sign() == elected) & (trimmed != 0)
        merged = (trimmed * agrees).sum(0) / agrees.sum(0).clamp(min=1)
        cur.copy_(b + scale * merged)


def dare(live, prev, unit, generator, p=0.9, scale=1.0):
    # The base is not read: DARE sparsifies what the current task changed, θ_k − θ̄_{k−1}.
    for s in unit:
        cur, pv = view(live, s), view(prev, s)
        delta = cur - pv
        keep = torch.bernoulli(torch.full_like(delta, 1.0 - p), generator=generator)
        cur.copy_(pv + scale * delta * keep / (1.0 - p))


def fuse(rule, live, prev, base, units, prev_scores, cur_scores, categories):
    generator = torch.Generator().manual_seed(1)
    for u, unit in enumerate(units):
        if rule == "kif-static":
            interpolate(live, prev, unit, KIF_STATIC[categories[u]])
        elif rule == "kif-adaptive":
            interpolate(live, prev, unit, 1.0 / (1.0 + math.exp(-(cur_scores[u] - prev_scores[u]) / 0.25)))
        elif rule == "average":
            interpolate(live, prev, unit, 0.5)
        elif rule == "task-arithmetic":
            task_arithmetic(live, prev, base, unit)
        elif rule == "magmax":
            magmax(live, prev, base, unit)
        elif rule == "ties":
            ties(live, prev, base, unit)
        elif rule == "dare":
            dare(live, prev, unit, generator)
        else:
            raise SystemExit(f"unknown rule {rule}")


# ---------------------------------------------------------------- set-up and timing as BenchFusion.run

def min_max(x):
    return (x - x.min()) / (x.max() - x.min())


def categorise(prev_scores, cur_scores):
    important_prev = prev_scores > torch.quantile(prev_scores, 0.8)
    important_cur = cur_scores > torch.quantile(cur_scores, 0.8)
    names = {(True, True): "shared", (True, False): "previous", (False, True): "current", (False, False): "neither"}
    return [names[(bool(a), bool(b))] for a, b in zip(important_prev, important_cur)]


def median_ms(fn, warmup, n, before=None):
    for _ in range(warmup):
        if before:
            before()
        fn()
    times = []
    for _ in range(n):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def bench(units_name, units, rules, separate_base):
    shapes = parameter_shapes()
    g = torch.Generator().manual_seed(1)
    theta0 = {n: (torch.ones(s) if len(s) == 1 else torch.randn(s, generator=g) * 0.02) for n, s in shapes}
    previous = {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in theta0.items()}
    current = {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in previous.items()}
    live = {n: t.clone() for n, t in current.items()}
    base = theta0 if separate_base else previous
    scores = torch.Generator().manual_seed(5)
    prev_scores = min_max(torch.rand(len(units), generator=scores, dtype=torch.float64))
    cur_scores = min_max(torch.rand(len(units), generator=scores, dtype=torch.float64))
    categories = categorise(prev_scores, cur_scores)
    prev_scores, cur_scores = prev_scores.tolist(), cur_scores.tolist()
    nbytes = sum(t.numel() * t.element_size() for t in live.values())
    targets = {n: torch.empty_like(t) for n, t in live.items()}
    copy_ms = median_ms(lambda: [targets[n].copy_(t) for n, t in live.items()], 3, max(10, args.repeats))

    def restore():
        for n, t in live.items():
            t.copy_(current[n])

    results = []
    for rule in rules:
        ms = median_ms(lambda: fuse(rule, live, previous, base, units, prev_scores, cur_scores, categories), 2, args.repeats, restore)
        results.append({"rule": rule, "units": units_name, "base": "pre-trained" if separate_base else "previous",
                        "unit_count": len(units), "slices": sum(len(u) for u in units), "bytes": nbytes,
                        "fuse_ms": ms, "copy_ms": copy_ms, "ratio": copy_ms / ms})
    return results


def split(text):
    return [x for x in text.split(",") if x]


with torch.no_grad():
    results = []
    for units_name in split(args.units):
        if units_name == "full":
            units = full_units(parameter_shapes())
        elif units_name == "neuron" or units_name.startswith("neuron-"):
            units = neuron_units(parameter_shapes(), int(units_name[len("neuron-"):] or 1))
        else:
            raise SystemExit(f"unknown units {units_name} (full or neuron-B)")
        results += bench(units_name, units, split(args.rules), False)
        results += bench(units_name, units, split(args.base_rules), True)
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}))
