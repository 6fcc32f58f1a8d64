"""Training under bfloat16 autocast (``train.dtype: bfloat16``) with memories: the deep
kernels' hand-written backward used to meet mixed dtypes when autograd ran it inside
autocast (the CMS teach signal's ``autograd.grad`` in the forward), and the delta kernel's
triangular solve has no bfloat16 CPU kernel. Found by the whole-schema fuzz."""
from __future__ import annotations

import torch

import nlc

SPEC = """
nlc: 1
levels:
  mem:
    type: memory
    memory: {kind: mlp, depth: 2}
    update: {rule: momentum, lr: 0.05, momentum: 0.9}
    chunk: 8
    keys: {from: input, norm: l2}
  cms: {type: mlp, hidden: 16, period: 8, objective: {kind: task}, update: {rule: gd, lr: 0.001}}
  delta: {type: memory, update: {rule: delta, lr: 0.5}, objective: {kind: l2}, chunk: 8,
          keys: {from: input, norm: l2}}
  outer: {type: optimizer}
model: {width: 32, heads: 2, blocks: [{layers: [cms, mem, delta, cms]}]}  # the teach signal crosses mem
train: {seq_len: 32, batch: 2, dtype: bfloat16}
"""


def test_memories_and_the_teach_signal_train_under_bfloat16_autocast():
    model = nlc.compile(SPEC, seed=0)
    tokens = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(tokens, model.init_state(2), targets=tokens.roll(-1, 1))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.roll(-1, 1).flatten())
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
