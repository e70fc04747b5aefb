"""What the PyTorch bench scripts share: the LLaMA config flags (the ones BenchPythonTorch passes),
and the model of Klf's LlamaForCausalLM in plain PyTorch (RMSNorm, rotary embeddings, grouped-query
attention, SwiGLU MLP, optional tied head) with an optional HF-style KV cache grown by torch.cat.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse(extra):
    """Parses the config flags and `extra` ((name, default) int flags), applies --threads; returns (args, head dim)."""
    parser = argparse.ArgumentParser()
    for name, default in [("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 4), ("head-dim", 0), ("intermediate", 688),
                          ("vocab", 4096), ("threads", 0)] + extra[0]:
        parser.add_argument("--" + name, type=int, default=default)
    parser.add_argument("--tied", action="store_true")
    for name, default in extra[1]:
        parser.add_argument("--" + name, default=default)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return args, args.head_dim or args.hidden // args.heads


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
    def __init__(self, args, d):
        super().__init__()
        self.args, self.d = args, d
        self.q_proj = nn.Linear(args.hidden, args.heads * d, bias=False)
        self.k_proj = nn.Linear(args.hidden, args.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(args.hidden, args.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(args.heads * d, args.hidden, bias=False)

    def forward(self, x, cos, sin, past):
        a, d = self.args, self.d
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, a.heads, d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, a.kv_heads, d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, a.kv_heads, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        rep = a.heads // a.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        # Several new positions come only with an empty cache (a prompt, a training batch), so causal is top-left aligned.
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:  # torch < 2.0: the same attention, written out
            scores = (q @ k.transpose(-1, -2)) / (d ** 0.5)
            if T > 1:
                scores = scores + torch.full((T, T), float("-inf")).triu(1)
            y = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, a.heads * d)), present


class Block(nn.Module):
    def __init__(self, args, d):
        super().__init__()
        self.self_attn = Attention(args, d)
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


class Llama(nn.Module):
    """The model for positions 0 … max_positions − 1; `hidden` gives the final-norm states, `head` the logits."""

    def __init__(self, args, d, max_positions):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab, args.hidden)
        self.layers = nn.ModuleList([Block(args, d) for _ in range(args.layers)])
        self.norm = RMSNorm(args.hidden)
        self.lm_head = None if args.tied else nn.Linear(args.hidden, args.vocab, bias=False)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2).float() / d))
        freqs = torch.arange(max_positions).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos()[None, None], persistent=False)
        self.register_buffer("sin", emb.sin()[None, None], persistent=False)

    def hidden(self, ids, past_key_values=None):
        """Final-norm hidden states (B, T, C) of `ids` after the cached positions, and every layer's keys and values."""
        start = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        cos = self.cos[:, :, start:start + ids.shape[1]]
        sin = self.sin[:, :, start:start + ids.shape[1]]
        x = self.embed_tokens(ids)
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, cos, sin, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        return self.norm(x), presents

    def head(self, h):
        """Logits of hidden states h (..., C): the LM head, or the embedding matrix when tied."""
        return F.linear(h, self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight)
