"""RULER's needle keys and values (``niah.py::generate_random``), drawn from a torch.Generator.

* ``number``: a 7-digit integer, uniform in ``10^6 .. 10^7 − 1``.
* ``word``:   an ``"{adjective}-{noun}"`` from the pinned word list (:mod:`.words`).
* ``uuid``:   ``uuid.UUID(int=<128 random bits>, version=4)``, the bits from the
  generator rather than Python's ``random`` (so the same seed gives the same uuid).
"""
from __future__ import annotations

import uuid
from typing import Literal

import torch

from .batch import require
from .words import WORDS

NeedleKind = Literal["number", "word", "uuid"]
KINDS: tuple[NeedleKind, ...] = ("number", "word", "uuid")


def draw(kind: NeedleKind, generator: torch.Generator) -> str:
    """One random key or value of the given kind."""
    require(kind in KINDS, f"unknown needle kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "number":
        return str(int(torch.randint(10**6, 10**7, (), generator=generator)))
    if kind == "word":
        return WORDS[int(torch.randint(len(WORDS), (), generator=generator))]
    words = torch.randint(0, 2**32, (4,), generator=generator).tolist()
    bits = sum(word << (32 * index) for index, word in enumerate(words))
    return str(uuid.UUID(int=bits, version=4))
