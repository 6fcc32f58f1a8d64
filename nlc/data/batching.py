"""Random training windows from a 1-D token stream.

Notation: N tokens in the stream, B windows per batch, T tokens per window. A window
starts at s ~ Uniform{0, ..., N - T - 1} (independently per row, drawn from ``generator``)
and covers tokens s .. s+T; the inputs are x = tokens[s : s+T] and the targets the next
tokens y = tokens[s+1 : s+T+1], so y[:, t] == x[:, t+1] for t < T-1.

Streams (:func:`stream_batch`, for models with ``lifetime: stream`` levels): the tokens are
cut into B lanes of L = (N - 1) // B tokens, row b reads lane b from an offset
o = seed mod (L - T) onward, and step s (1-based) reads the window starting at
``b L + (o + (s - 1) T) mod (L - T)``: consecutive steps give each row consecutive text,
so a carried state sees one continuing stream; at the lane's end the stream wraps to the
lane's start (one discontinuity per L / T steps, the stream's epoch).
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


def stream_batch(tokens: torch.Tensor, batch: int, seq_len: int, step: int, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of step ``step`` (1-based) of ``batch`` continuing streams (module doc)."""
    if tokens.dim() != 1:
        raise NLCError(f"stream_batch needs a 1-D token tensor; got shape {tuple(tokens.shape)}")
    lane = (tokens.numel() - 1) // batch
    if lane <= seq_len:
        raise NLCError(f"{batch} streams of windows of seq_len={seq_len} need more than {batch * (seq_len + 1)} "
                       f"tokens; the split has {tokens.numel()} (use a smaller batch or seq_len)")
    span = lane - seq_len
    start = (seed % span + (step - 1) * seq_len) % span
    index = (torch.arange(batch, device=tokens.device)[:, None] * lane + start
             + torch.arange(seq_len + 1, device=tokens.device))
    window = tokens[index].long()
    return window[:, :-1], window[:, 1:]
