"""Bits per byte of a language model on a token split, over fixed random windows.

Notation: B windows per batch, T tokens per window, K batches, L the mean next-token
cross-entropy in nats over the K·B·T scored tokens, ρ the bytes per token of the split
(1 for the byte tokenizer; ``corpus.val_bytes / len(corpus.val)`` otherwise). Then

    bpb = L / (ln 2 · ρ)

Spread: every batch has B·T tokens, so L is the mean of the K per-batch losses L_k, and
its standard error is ``stdev(L_1..L_K) / √K`` (the batches are independent random
windows); ``bpb_stderr`` is that divided by ln 2 · ρ. With one batch there is no spread
to measure: both are None.

The K batches are drawn by :func:`nlc.data.sample_batch` from a generator seeded with
``seed``, so the same call scores the same windows every time. Each window starts from
``model.init_state(B)`` and is run with its targets: in-context levels update as the spec
says, and CMS levels driven by the task loss learn from the losses of tokens already
scored (causal: the update after token t uses targets up to t, and only later tokens see
it). No parameter changes; the model is in eval mode for the call.

:func:`evaluate_stream` scores consecutive segments of the split instead (B streams, one
per row) with the state carried from segment to segment and, on the same text, with a
fresh state per segment: ``lifetime: stream`` levels make the two differ.

Documents: for a model with ``lifetime: document`` levels, ``tokens`` is the split laid out
on their grid (:func:`nlc.data.documents.split_for`): windows start on the grid, the
document starts go to the forward (which resets those levels' rows there), padding is not
scored (L is then the mean over the scored tokens, each batch's mean weighted by its
count; the standard error stays that of the batch means), and the stream's segments are rounded up to a multiple of the grid
so that a fresh state also starts on it.

``check_finite`` (default): a batch whose loss is NaN or inf (read anyway, one sync per
batch) stops the evaluation with a :class:`~nlc.errors.NonFiniteError` naming the batch, the
level that went non-finite first and the token (the batch re-run with hooks,
:meth:`nlc.runtime.model.NLCModel.diagnose_non_finite`); without it the mean is NaN/inf.
"""
from __future__ import annotations

import contextlib
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import sample_batch, stream_batch
from ..data.documents import Documents
from ..runtime.diagnose import non_finite_error


def evaluate_lm(model: nn.Module, tokens: Tensor | Documents, batch: int, seq_len: int, batches: int, seed: int, *,
                bytes_per_token: float = 1.0, autocast_dtype: torch.dtype | None = None,
                check_finite: bool = True) -> dict[str, float]:
    """``{"loss": L, "bpb": bits per byte, "tokens": tokens scored, "loss_stderr",
    "bpb_stderr": their standard errors over the batches (None for one batch)}`` on
    ``tokens`` (1-D)."""
    generator = torch.Generator().manual_seed(seed)
    draw = tokens.sample if isinstance(tokens, Documents) else partial(sample_batch, tokens)
    windows = (draw(batch, seq_len, generator) for _ in range(batches))
    return _scored(model, windows, batches, f"({batch} windows of {seq_len} tokens)", bytes_per_token,
                   autocast_dtype, check_finite, carry=False)


def evaluate_stream(model: nn.Module, tokens: Tensor | Documents, batch: int, seq_len: int, segments: int, seed: int, *,
                    bytes_per_token: float = 1.0, autocast_dtype: torch.dtype | None = None,
                    check_finite: bool = True) -> dict[str, dict[str, float]]:
    """Bits per byte on ``segments`` consecutive segments of ``batch`` streams of ``tokens``
    (:func:`nlc.data.stream_batch`), twice over the same text: ``carried`` hands each
    segment the state the previous one left (``model.next_sequence``: ``lifetime: stream``
    levels keep what they learned, the others start afresh), ``fresh`` starts every segment
    from ``model.init_state``. Without stream levels the two are equal; with them, their
    difference is what test-time learning across segments gains (every token is still
    scored before any level learns from it). Each result has the ``segment`` length scored
    (``seq_len``, rounded up to the document grid for a :class:`Documents` split)."""
    if isinstance(tokens, Documents):
        seq_len = -(-seq_len // tokens.period) * tokens.period
    draw = tokens.stream if isinstance(tokens, Documents) else partial(stream_batch, tokens)
    out = {}
    for mode in ("carried", "fresh"):
        windows = (draw(batch, seq_len, step, seed) for step in range(1, segments + 1))
        out[mode] = _scored(model, windows, segments, f"({batch} streams of segments of {seq_len} tokens)",
                            bytes_per_token, autocast_dtype, check_finite, carry=mode == "carried")
        out[mode]["segment"] = seq_len
    return out


def _scored(model: nn.Module, windows, count: int, what: str, bytes_per_token: float,
            autocast_dtype: torch.dtype | None, check_finite: bool, *, carry: bool) -> dict[str, float]:
    device = next(model.parameters()).device
    losses, per_batch, scored, state = [], [], 0, None
    was_training = model.training
    model.eval()
    try:
        for index, (x, y, *starts) in enumerate(windows):
            x, y = x.to(device), y.to(device)
            documents = {"starts": starts[0].to(device)} if starts else {}  # a Documents split's
            if state is None or not carry:
                state = model.init_state(x.shape[0])
            with torch.no_grad(), autocast(device, autocast_dtype):
                logits, state = model(x, state, targets=y, **documents)
            if carry:
                state = model.next_sequence(state, x.shape[0])
            summed = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            tokens_scored = int((y != -100).sum())  # all but padding (Documents)
            if check_finite and not math.isfinite(summed):
                with autocast(device, autocast_dtype):
                    raise non_finite_error(model, f"non-finite loss ({summed}) on evaluation batch {index + 1} of "
                                                  f"{count} {what}", step=index + 1, tokens=x, targets=y)
            losses.append(summed / max(tokens_scored, 1))
            per_batch.append(tokens_scored)
            scored += tokens_scored
    finally:
        model.train(was_training)
    k = len(losses)
    # every token counts once: the mean of the batch means when the batches score alike (no
    # padding), else each batch's mean weighted by what it scored
    alike = len(set(per_batch)) == 1
    loss = sum(losses) / k if alike else sum(x * n for x, n in zip(losses, per_batch)) / max(scored, 1)
    # not statistics.stdev: it converts to fractions, which fails on an unchecked inf or NaN
    stderr = math.sqrt(sum((x - loss) ** 2 for x in losses) / (k - 1) / k) if k > 1 else None
    per_bit = math.log(2) * bytes_per_token
    return {"loss": loss, "bpb": loss / per_bit, "tokens": scored, "loss_stderr": stderr,
            "bpb_stderr": None if stderr is None else stderr / per_bit}


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` to ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
