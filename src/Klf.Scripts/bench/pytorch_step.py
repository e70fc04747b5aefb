#!/usr/bin/env python3
"""One LLaMA training step in PyTorch: the architecture and step of Klf's `klf bench` training
section (RMSNorm, rotary embeddings, causal attention, SwiGLU MLP, optional tied head; loss on the
last 8 positions with the head run there only; AdamW lr 3e-4, weight decay 0.01 on every parameter;
gradients clipped to norm 1), timed the same way: the median of the measured steps after warm-up.
Prints one JSON line: torch version, the BLAS the process loaded, threads, the median step in ms.
"""
import json
import statistics
import time

import torch
import torch.nn.functional as F

from llama_torch import Llama, parse

args, D = parse(([("batch", 16), ("seq-len", 128), ("steps", 10), ("warmup", 3)], []))
torch.manual_seed(1)
LABELS = 8


class Model(Llama):
    def __init__(self):
        super().__init__(args, D, args.seq_len)

    def loss(self, ids):
        h = self.hidden(ids)[0][:, -LABELS - 1:-1]  # the positions that predict the last 8 tokens
        logits = self.head(h).float()
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
