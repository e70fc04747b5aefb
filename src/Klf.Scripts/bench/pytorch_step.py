#!/usr/bin/env python3
"""One LLaMA training step in PyTorch: the architecture and step of Klf's `klf bench` training
section (RMSNorm, rotary embeddings, causal attention, SwiGLU MLP, optional tied head; loss on the
last 8 positions with the head run there only; AdamW lr 3e-4, weight decay 0.01 on every parameter;
gradients clipped to norm 1), timed the same way: the median of the measured steps after warm-up.
Prints one JSON line: torch version, the BLAS the process loaded, threads, the median step in ms.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser()
for name, default in [("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 4), ("head-dim", 0), ("intermediate", 688),
                      ("vocab", 4096), ("batch", 16), ("seq-len", 128), ("steps", 10), ("warmup", 3), ("threads", 0)]:
    parser.add_argument("--" + name, type=int, default=default)
parser.add_argument("--tied", action="store_true")
args = parser.parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(1)
D = args.head_dim or args.hidden // args.heads
LABELS = 8


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

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, args.heads, D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, args.kv_heads, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, args.kv_heads, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = args.heads // args.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0: the same attention, written out
            scores = (q @ k.transpose(-1, -2)) / (D ** 0.5)
            mask = torch.full((T, T), float("-inf")).triu(1)
            y = torch.softmax(scores + mask, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, args.heads * D))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attention()
        self.gate_proj = nn.Linear(args.hidden, args.intermediate, bias=False)
        self.up_proj = nn.Linear(args.hidden, args.intermediate, bias=False)
        self.down_proj = nn.Linear(args.intermediate, args.hidden, bias=False)
        self.input_layernorm = RMSNorm(args.hidden)
        self.post_attention_layernorm = RMSNorm(args.hidden)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        n = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab, args.hidden)
        self.layers = nn.ModuleList([Block() for _ in range(args.layers)])
        self.norm = RMSNorm(args.hidden)
        self.lm_head = None if args.tied else nn.Linear(args.hidden, args.vocab, bias=False)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2).float() / D))
        freqs = torch.arange(args.seq_len).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos()[None, None], persistent=False)
        self.register_buffer("sin", emb.sin()[None, None], persistent=False)

    def loss(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        h = self.norm(x)[:, -LABELS - 1:-1]  # the positions that predict the last 8 tokens
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(h, weight).float()
        return F.cross_entropy(logits.reshape(-1, args.vocab), ids[:, -LABELS:].reshape(-1))


def loaded_blas():
    names = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                base = path.rsplit("/", 1)[-1]
                if any(k in base for k in ("blas", "mkl", "lapack", "openblas", "blis")):
                    names.add(path)
    except OSError:
        pass
    return ", ".join(sorted(names)) or "unknown"


model = Model()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
generator = torch.Generator().manual_seed(7)


def step():
    ids = torch.randint(3, args.vocab, (args.batch, args.seq_len), generator=generator)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(ids)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return (time.perf_counter() - start) * 1000.0


for _ in range(args.warmup):
    step()
times = [step() for _ in range(args.steps)]
print(json.dumps({"torch": torch.__version__, "blas": loaded_blas(), "threads": torch.get_num_threads(),
                  "step_ms": statistics.median(times)}))
