"""The domains of a continual stream: loading, the equal-share union, scoring every domain.

* ``load_domains(names)`` loads each corpus (:func:`nlc.data.load_corpus`) once.
* :class:`TokenSplits` is the data a stage trains on when it is not a registry corpus (the
  union below, the Brown class groups): what ``nlc.train`` reads from a data object.
* ``union_corpus(corpora)`` is the training data of the *joint* baseline: every domain's
  train split cut to the length of the shortest, then concatenated, so each domain holds
  the same share of the union (the sequential run gives each the same token budget too).
  Its validation split is the domains' validation splits concatenated (only used for the
  training log; the matrix R scores each domain on its own).
* ``domain_bpb(model, corpora, ...)`` is one row of R: validation bits per byte of every
  domain, over fixed windows (same seed for every row, so rows differ only by the model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..data import load_corpus
from ..data.documents import split_for
from ..evaluate import evaluate_lm
from .metrics import ContinualError

__all__ = ["DEFAULT_STREAM", "TokenSplits", "domain_bpb", "load_domains", "union_corpus"]

DEFAULT_STREAM = ("shakespeare", "pydocs", "sympy", "licences")


@dataclass(frozen=True)
class TokenSplits:
    """Train and validation token ids (1-D) with the UTF-8 bytes they stand for, and the
    offsets where their documents begin (:mod:`nlc.data.documents`; None: not known)."""

    name: str
    train: Tensor
    val: Tensor
    vocab: int
    train_bytes: int
    val_bytes: int
    sha256: str | None = None
    train_starts: Tensor | None = None
    val_starts: Tensor | None = None

    @classmethod
    def from_text(cls, name: str, train: str, val: str, tokenizer) -> "TokenSplits":
        """Splits of two texts (one document each), encoded with ``tokenizer`` (an
        :mod:`nlc.data` tokenizer)."""
        one = torch.zeros(1, dtype=torch.long)
        return cls(name, tokenizer.encode(train), tokenizer.encode(val), tokenizer.vocab_size,
                   len(train.encode("utf-8")), len(val.encode("utf-8")), train_starts=one, val_starts=one)


def load_domains(names: Sequence[str], tokenizer: str = "bytes") -> dict:
    """``{name: Corpus}`` in stream order; a domain named twice is an error."""
    if len(set(names)) != len(names):
        raise ContinualError(f"a domain appears twice in the stream {list(names)}: each stage "
                             "needs its own domain (R is stage x domain)")
    if not names:
        raise ContinualError("the stream is empty: give at least one domain")
    return {name: load_corpus(name, tokenizer=tokenizer) for name in names}


def union_corpus(corpora: dict) -> TokenSplits:
    """The joint baseline's data: equal shares of every domain's train split."""
    parts = list(corpora.values())
    share = min(c.train.numel() for c in parts)
    per_token = [c.train_bytes / c.train.numel() for c in parts]
    return TokenSplits(name="+".join(corpora), train=torch.cat([c.train[:share] for c in parts]),
                       val=torch.cat([c.val for c in parts]), vocab=max(c.vocab for c in parts),
                       train_bytes=round(share * sum(per_token)),
                       val_bytes=sum(c.val_bytes for c in parts),
                       train_starts=_joined(parts, "train", [share] * len(parts)),
                       val_starts=_joined(parts, "val", [c.val.numel() for c in parts]))


def _joined(parts: list, split: str, lengths: list[int]) -> Tensor | None:
    """The document offsets of the first ``lengths`` tokens of each part's ``split``, laid
    end to end (None when a part's are not known)."""
    offsets = [getattr(c, f"{split}_starts", None) for c in parts]
    if any(o is None for o in offsets):
        return None
    shifts = torch.cumsum(torch.tensor([0, *lengths[:-1]]), 0)
    return torch.cat([o[o < n].long() + shift for o, n, shift in zip(offsets, lengths, shifts)])


def domain_bpb(model, corpora: dict, batch: int, seq_len: int, batches: int, seed: int,
               check_finite: bool = True) -> dict[str, float]:
    """Validation bits per byte of ``model`` on each domain (one row of R)."""
    return {name: evaluate_lm(model, split_for(c, "val", model.document_period), batch, seq_len, batches, seed,
                              bytes_per_token=c.val_bytes / c.val.numel(),
                              check_finite=check_finite)["bpb"]
            for name, c in corpora.items()}
