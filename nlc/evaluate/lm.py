"""Bits per byte of a language model on a token split, over fixed random windows.

Notation: B windows per batch, T tokens per window, K batches, L the mean next-token
cross-entropy in nats over the K·B·T scored tokens, ρ the bytes per token of the split
(1 for the byte tokenizer; ``corpus.val_bytes / len(corpus.val)`` otherwise). Then

    bpb = L / (ln 2 · ρ)

The K batches are drawn by :func:`nlc.data.sample_batch` from a generator seeded with
``seed``, so the same call scores the same windows every time. Each window starts from
``model.init_state(B)`` and is run with its targets: in-context levels update as the spec
says, and CMS levels driven by the task loss learn from the losses of tokens already
scored (causal: the update after token t uses targets up to t, and only later tokens see
it). No parameter changes; the model is in eval mode for the call.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def evaluate_lm(model: nn.Module, tokens: Tensor, batch: int, seq_len: int, batches: int, seed: int, *,
                bytes_per_token: float = 1.0, autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """``{"loss": L, "bpb": bits per byte, "tokens": tokens scored}`` on ``tokens`` (1-D)."""
    from ..data import sample_batch

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for _ in range(batches):
            x, y = sample_batch(tokens, batch, seq_len, generator)
            x, y = x.to(device), y.to(device)
            with torch.no_grad(), autocast(device, autocast_dtype):
                logits, _ = model(x, model.init_state(batch), targets=y)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            count += y.numel()
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "bpb": loss / (math.log(2) * bytes_per_token), "tokens": count}


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` to ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
