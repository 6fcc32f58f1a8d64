"""A split's documents laid out on a grid, for levels with ``lifetime: document``.

Notation::

    N  tokens of the split          o_0 = 0 < o_1 < ... < o_{D-1} < N  its D document offsets
    P  the grid: the model's document period (``NLCModel.document_period``, the lcm of the
       periods and chunks of its document layers)
    M  tokens of the laid-out stream (N plus padding), B rows, T tokens per window

A level with ``lifetime: document`` is reset to its initial state where a document begins.
The runtime resets a row exactly only where every mixer of the layer stands at a boundary
of its chunks and periods, a multiple of P on the layer's clock (:mod:`nlc.runtime.lifetime`),
so :func:`lay_out` starts every document at a multiple of P: its tokens, then ``PAD`` inputs
up to the next multiple (none when P = 1). The targets are the split's own next tokens: the
last token of a document still predicts the first of the next, as in the split without
padding, and a padding position is never scored (-100). Every token of the split but the
first is scored exactly once, so bits per byte keep their meaning; the model reads the
padding as input (as packed training reads the previous document).

Windows, each ``(x, y, starts)`` of shape (B, T), ``starts`` True where a document begins:

* :meth:`Documents.sample`: random windows whose first token is at a multiple of P (a fresh
  state, clock 0, is then on the grid), drawn from ``generator``;
* :meth:`Documents.stream`: B continuing streams. Row b reads lane b, the ``lane`` tokens
  from ``b * lane`` (``lane`` = floor(M / B) rounded down to a multiple of P); step s
  (1-based) covers the stream positions p = o + (s - 1) T + t, t < T, at lane index
  p mod ``lane``, from the offset o, a multiple of P drawn from ``seed``. A stream that
  reaches its lane's end wraps to the lane's start, which counts as a document start (the
  text before it is another row's), so every reset stays on the grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import NLCError

PAD = 0  # the input id of padding: never scored, so any id would do (the byte vocabulary has no spare one)
IGNORE = -100  # a target that is not scored (torch's cross-entropy ignore_index)


@dataclass(frozen=True)
class Documents:
    """A split laid out on a grid of ``period`` tokens (module doc): ``inputs`` (M,) token
    ids, ``targets`` (M,) int64 (``IGNORE`` at padding), ``starts`` (M,) bool."""

    inputs: Tensor
    targets: Tensor
    starts: Tensor
    period: int

    def sample(self, batch: int, seq_len: int, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor, Tensor]:
        """``batch`` random windows of ``seq_len`` tokens, each starting on the grid."""
        room = self.inputs.numel() - seq_len
        if room < 0:
            raise NLCError(f"a window of seq_len={seq_len} needs {seq_len} tokens; the laid-out split has "
                           f"{self.inputs.numel()} (use a shorter seq_len or a bigger corpus)")
        device = generator.device if generator is not None else torch.device("cpu")
        first = torch.randint(0, room // self.period + 1, (batch,), generator=generator, device=device)
        return self._windows(first.to(self.inputs.device)[:, None] * self.period
                             + torch.arange(seq_len, device=self.inputs.device), lane=None)

    def stream(self, batch: int, seq_len: int, step: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Step ``step`` (1-based) of ``batch`` continuing streams (module doc)."""
        lane = self.inputs.numel() // batch // self.period * self.period
        if lane <= seq_len:
            raise NLCError(f"{batch} streams of windows of seq_len={seq_len} need lanes of more than {seq_len} "
                           f"tokens on a grid of {self.period}; the laid-out split has {self.inputs.numel()} "
                           "(use a smaller batch or seq_len)")
        offset = seed % lane // self.period * self.period
        p = offset + (step - 1) * seq_len + torch.arange(seq_len, device=self.inputs.device)
        rows = torch.arange(batch, device=self.inputs.device)[:, None] * lane
        return self._windows(rows + p % lane, lane=lane)

    def _windows(self, index: Tensor, lane: int | None) -> tuple[Tensor, Tensor, Tensor]:
        starts = self.starts[index]
        if lane is not None:
            starts = starts | (index % lane == 0)
        return self.inputs[index].long(), self.targets[index], starts


def lay_out(tokens: Tensor, offsets: Tensor | None, period: int) -> Documents:
    """``tokens`` (N,) with documents beginning at ``offsets`` laid out on a grid of
    ``period`` (module doc). ``offsets``: sorted distinct positions in [0, N) (0 may be left
    out: the split's first token always begins a document)."""
    n = tokens.numel()
    if tokens.dim() != 1 or n < 2:
        raise NLCError(f"documents need a 1-D split of at least 2 tokens; got shape {tuple(tokens.shape)}")
    offsets = _checked_offsets(offsets, n)
    lengths = torch.diff(offsets, append=torch.tensor([n]))
    padded = (lengths + period - 1) // period * period
    placed = torch.cumsum(padded, 0) - padded  # each document's new offset
    shift = torch.repeat_interleave(placed - offsets, lengths)
    where = torch.arange(n) + shift  # the laid-out position of every token
    size = int(padded.sum())
    inputs = torch.full((size,), PAD, dtype=tokens.dtype)
    inputs[where] = tokens
    targets = torch.full((size,), IGNORE, dtype=torch.long)
    targets[where[:-1]] = tokens[1:].long()
    starts = torch.zeros(size, dtype=torch.bool)
    starts[placed] = True
    return Documents(inputs, targets, starts, period)


def _checked_offsets(offsets: Tensor | None, n: int) -> Tensor:
    if offsets is None:
        return torch.zeros(1, dtype=torch.long)
    if not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.dtype.is_floating_point:
        raise NLCError("document offsets must be a 1-D integer tensor of the positions where documents begin")
    offsets = offsets.long()
    if offsets.numel() and (int(offsets.min()) < 0 or int(offsets.max()) >= n):
        raise NLCError(f"document offsets must lie in [0, {n}) (the split's tokens); got "
                       f"{int(offsets.min())} .. {int(offsets.max())}")
    if offsets.numel() > 1 and not bool((offsets[1:] > offsets[:-1]).all()):
        raise NLCError("document offsets must be strictly increasing (one per document, in order)")
    if not offsets.numel() or int(offsets[0]) != 0:
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), offsets])
    return offsets


def offsets_of(lengths: list[int]) -> Tensor:
    """The offsets of documents of ``lengths`` tokens laid end to end (empty ones skipped)."""
    kept = torch.tensor([k for k in lengths if k > 0], dtype=torch.long)
    return torch.cumsum(kept, 0) - kept


def split_for(data, split: str, period: int | None) -> Tensor | Documents:
    """Split ``split`` of ``data`` as a model whose document period is ``period`` reads it:
    the tokens (``period`` None: no ``lifetime: document`` levels), or their layout on the
    grid, from the document offsets ``data.<split>_starts`` (a :class:`~nlc.data.Corpus`
    has them)."""
    tokens = getattr(data, split)
    if period is None:
        return tokens
    offsets = getattr(data, f"{split}_starts", None)
    if offsets is None:
        raise NLCError(f"levels with lifetime: document reset where a document begins, but the data "
                       f"{getattr(data, 'name', '')!r} has no document offsets ({split}_starts): give a corpus "
                       "(nlc.data.load_corpus), or data with train_starts / val_starts, the positions where its "
                       "documents begin")
    return lay_out(tokens, offsets, period)
