"""Random training windows from a 1-D token stream.

Notation: N tokens in the stream, B windows per batch, T tokens per window. A window
starts at s ~ Uniform{0, ..., N - T - 1} (independently per row, drawn from ``generator``)
and covers tokens s .. s+T; the inputs are x = tokens[s : s+T] and the targets the next
tokens y = tokens[s+1 : s+T+1], so y[:, t] == x[:, t+1] for t < T-1.
"""
from __future__ import annotations

import torch

from ..errors import NLCError


def sample_batch(tokens: torch.Tensor, batch: int, seq_len: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``, each ``(batch, seq_len)`` int64 on ``tokens``' device: uniform random
    windows and their next-token targets. Same generator state -> same batch."""
    if tokens.dim() != 1:
        raise NLCError(f"sample_batch needs a 1-D token tensor; got shape {tuple(tokens.shape)}")
    if batch < 1 or seq_len < 1:
        raise NLCError(f"batch and seq_len must be positive; got batch={batch}, seq_len={seq_len}")
    if tokens.numel() < seq_len + 1:
        raise NLCError(f"a window of seq_len={seq_len} needs at least {seq_len + 1} tokens; the split has "
                       f"{tokens.numel()} (use a shorter seq_len or a bigger corpus)")
    device = generator.device if generator is not None else torch.device("cpu")
    starts = torch.randint(0, tokens.numel() - seq_len, (batch,), generator=generator, device=device)
    index = starts.to(tokens.device)[:, None] + torch.arange(seq_len + 1, device=tokens.device)
    window = tokens[index].long()
    return window[:, :-1], window[:, 1:]
