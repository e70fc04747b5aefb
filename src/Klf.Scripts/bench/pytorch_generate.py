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
import json
import random
import time

import torch

from llama_torch import Llama, parse

args, D = parse(([("prompt", 32), ("repeats", 2)], [("batches", "1,8"), ("new-tokens", "64,256")]))
torch.manual_seed(1)


class Model(Llama):
    def forward(self, ids, past_key_values=None, use_cache=False):
        """Logits of the last position (B, V) and, with use_cache, the keys and values of every layer."""
        h, presents = self.hidden(ids, past_key_values)
        return self.head(h[:, -1]), (presents if use_cache else None)


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
model = Model(args, D, args.prompt + max(counts)).eval()
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
