"""The held-apart *tune* split the learning rate is chosen on, and the training tokens it leaves.

The corpus split (:mod:`nlc.data.corpus`) cuts every document into train (its first 95%)
and validation (its last 5%); the reported validation bpb is measured on validation. The
learning-rate grid must not look at those tokens, so it is scored on a third split carved
out of *train* by the same rule, one level down:

    document d, train part of n_d tokens  ->  fit: its first n_d - floor(n_d / 20) tokens
                                              tune: its last floor(n_d / 20) tokens

``fit`` is the concatenation of the documents' fit parts, ``tune`` of their tune parts
(registry order, like the corpus splits). Invariants: fit, tune and validation are
disjoint and together are the whole corpus (fit + tune = train, position by position);
tune comes from the same documents as validation (no document-level shift), and from just
before each document's validation text.

Both the grid runs and the reported runs train on ``fit`` only (the tune tokens are never a
training window of any run); the grid runs are scored on ``tune``
(:func:`tuning_data`), the reported runs on the corpus validation split (:func:`reported_data`),
which this module leaves exactly as :func:`nlc.data.load_corpus` defines it. For Shakespeare
(bytes): train 4,804,357 tokens -> fit about 4.56M, tune about 240k; validation 252,841.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.documents import offsets_of
from ..data.split import VAL_DENOMINATOR

TUNE_DENOMINATOR = VAL_DENOMINATOR  # the last 1/20 of every document's train part is tune
RULE = f"tune = last 1/{TUNE_DENOMINATOR} of every document's train part; fit = the rest"


@dataclass(frozen=True)
class LMData:
    """Token splits one LM run trains (``train``) and is scored (``val``) on, in the form
    ``nlc.train(data=...)`` reads (:func:`nlc.training.inputs.train_data`); ``scored_on``
    names the split ``val`` holds (``"val"`` or ``"tune"``)."""

    name: str
    sha256: str
    scored_on: str
    train: Tensor
    val: Tensor
    vocab: int
    train_bytes: int
    val_bytes: int
    train_starts: Tensor
    val_starts: Tensor


def _document_bounds(starts: Tensor, total: int) -> list[tuple[int, int]]:
    edges = [*starts.tolist(), total]
    return [(begin, end) for begin, end in zip(edges[:-1], edges[1:])]


def fit_and_tune(corpus) -> tuple[Tensor, Tensor, list[int], list[int]]:
    """``(fit, tune, fit lengths, tune lengths)`` of ``corpus.train`` (module doc)."""
    train = corpus.train.numpy()
    fits, tunes = [], []
    for begin, end in _document_bounds(corpus.train_starts, train.size):
        cut = end - (end - begin) // TUNE_DENOMINATOR
        fits.append(train[begin:cut])
        tunes.append(train[cut:end])
    join = (lambda parts: torch.from_numpy(np.concatenate(parts)) if parts else corpus.train[:0])
    return join(fits), join(tunes), [p.size for p in fits], [p.size for p in tunes]


def _digest(corpus, which: str) -> str:
    return hashlib.sha256(f"{corpus.sha256}|{RULE}|{which}".encode()).hexdigest()


def _count_bytes(corpus, tokens: Tensor) -> int:
    return len(corpus.tokenizer.decode_bytes(tokens))


def reported_data(corpus) -> LMData:
    """Train on ``fit``, score on the corpus validation split (the reported numbers)."""
    fit, _, fit_lengths, _ = fit_and_tune(corpus)
    return LMData(f"{corpus.name}:fit", _digest(corpus, "fit/val"), "val", fit, corpus.val, corpus.vocab,
                  _count_bytes(corpus, fit), corpus.val_bytes, offsets_of(fit_lengths), corpus.val_starts)


def tuning_data(corpus) -> LMData:
    """Train on ``fit``, score on ``tune`` (the learning-rate grid)."""
    fit, tune, fit_lengths, tune_lengths = fit_and_tune(corpus)
    return LMData(f"{corpus.name}:fit", _digest(corpus, "fit/tune"), "tune", fit, tune, corpus.vocab,
                  _count_bytes(corpus, fit), _count_bytes(corpus, tune), offsets_of(fit_lengths),
                  offsets_of(tune_lengths))
