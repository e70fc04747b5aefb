#!/usr/bin/env python3
"""Greedy decoding in PyTorch: the generation section of `klf bench` (BenchGeneration.run) on the
same LLaMA shape with random weights (RMSNorm, rotary embeddings, grouped-query attention when
kv-heads < heads, SwiGLU MLP, optional tied head; the architecture of pytorch_step.py, the head run
on the last position only, as Klf does). For each batch size and number of new tokens: random prompts
of `prompt` tokens decoded greedily with no EOS stop, with a KV cache (HF-style past_key_values grown
by torch.cat) and without one (the whole sequence recomputed every step); a 4-token warm-up, then the
best of `repeats` runs of each.
Prints one JSON line: torch version, threads, and per (batch, new_tokens) cache_ms, no_cache_ms and
tokens/s.
"""
import argparse
import json
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser()
for name, default in [("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 4), ("head-dim", 0), ("intermediate", 688),
                      ("vocab", 4096), ("prompt", 32), ("repeats", 2), ("threads", 0)]:
    parser.add_argument("--" + name, type=int, default=default)
parser.add_argument("--tied", action="store_true")
parser.add_argument("--batches", default="1,8")
parser.add_argument("--new-tokens", default="64,256")
args = parser.parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(1)
D = args.head_dim or args.hidden // args.heads


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(args.hidden, args.heads * D, bias=False)
        self.k_proj = nn.Linear(args.hidden, args.kv_heads * D, bias=False)
        self.v_proj = nn.Linear(args.hidden, args.kv_heads * D, bias=False)
        self.o_proj = nn.Linear(args.heads * D, args.hidden, bias=False)

    def forward(self, x, cos, sin, past):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, args.heads, D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, args.kv_heads, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, args.kv_heads, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        rep = args.heads // args.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        # Several new positions come only with an empty cache (the prompt), so causal is top-left aligned.
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:  # torch < 2.0: the same attention, written out
            scores = (q @ k.transpose(-1, -2)) / (D ** 0.5)
            if T > 1:
                scores = scores + torch.full((T, T), float("-inf")).triu(1)
            y = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, args.heads * D)), present


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attention()
        self.gate_proj = nn.Linear(args.hidden, args.intermediate, bias=False)
        self.up_proj = nn.Linear(args.hidden, args.intermediate, bias=False)
        self.down_proj = nn.Linear(args.intermediate, args.hidden, bias=False)
        self.input_layernorm = RMSNorm(args.hidden)
        self.post_attention_layernorm = RMSNorm(args.hidden)

    def forward(self, x, cos, sin, past):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, past)
        h = x + a
        n = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n)), present


class Model(nn.Module):
    def __init__(self, max_positions):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab, args.hidden)
        self.layers = nn.ModuleList([Block() for _ in range(args.layers)])
        self.norm = RMSNorm(args.hidden)
        self.lm_head = None if args.tied else nn.Linear(args.hidden, args.vocab, bias=False)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2).float() / D))
        freqs = torch.arange(max_positions).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos()[None, None], persistent=False)
        self.register_buffer("sin", emb.sin()[None, None], persistent=False)

    def forward(self, ids, past_key_values=None, use_cache=False):
        """Logits of the last position (B, V) and, with use_cache, the keys and values of every layer."""
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        cos = self.cos[:, :, start:start + ids.shape[1]]
        sin = self.sin[:, :, start:start + ids.shape[1]]
        x = self.embed_tokens(ids)
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, cos, sin, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        h = self.norm(x[:, -1])
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, weight), (presents if use_cache else None)


def generate(model, prompts, new_tokens, use_cache):
    ids, past = prompts, None
    for _ in range(new_tokens):
        if use_cache:
            logits, past = model(ids if past is None else ids[:, -1:], past, use_cache=True)
        else:
            logits, _ = model(ids)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids[:, prompts.shape[1]:]


batches = [int(b) for b in args.batches.split(",") if b]
counts = [int(n) for n in args.new_tokens.split(",") if n]
model = Model(args.prompt + max(counts)).eval()
rng = random.Random(13)
results = []
with torch.no_grad():
    for batch in batches:
        prompts = torch.tensor([[rng.randrange(3, args.vocab) for _ in range(args.prompt)] for _ in range(batch)])
        for n in counts:
            def timed(cache):
                generate(model, prompts, 4, cache)  # warm-up
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    generate(model, prompts, n, cache)
                    best = min(best, (time.perf_counter() - start) * 1000.0)
                return best
            cached, uncached = timed(True), timed(False)
            results.append({"batch": batch, "prompt": args.prompt, "new_tokens": n, "cache_ms": cached, "no_cache_ms": uncached,
                            "cache_tokens_per_s": batch * n / (cached / 1000.0), "no_cache_tokens_per_s": batch * n / (uncached / 1000.0)})
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}))
