"""Haystacks of an exact byte size, and putting a needle into one.

* noise: ``NOISE`` (the filler sentence shared by RULER's "repeat" haystack and the
  landmark-attention passkey test) repeated, lines joined by ``"\\n"`` (RULER).
* prose: a text the caller passes (Shakespeare, Brown, ...), whitespace-normalised into
  words (RULER: ``re.sub(r"\\s+", " ", essay).split(" ")``), repeated if it is too short,
  cut to the budget and split into sentences.

Deviations from RULER, which sizes a haystack in whole units (25 noise lines or 500 essay
words per step) and so misses the requested length: here a haystack is cut to an exact
byte budget, so its last line or word may be cut short. Sentences are split after
``.``/``!``/``?`` followed by a space instead of nltk's ``sent_tokenize`` (it needs a
downloaded model).
"""
from __future__ import annotations

import re

from .batch import require
from .text import utf8_prefix

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
"""The filler sentence of RULER's noise haystack and of the passkey test."""

_SENTENCE_END = re.compile(r"(?<=[.!?]) ")


def repeated(unit: str, separator: str, size: int) -> str:
    """``separator.join([unit] * k)`` for a k large enough, cut to ``size`` bytes."""
    count = size // len((unit + separator).encode("utf-8")) + 1
    return utf8_prefix(separator.join([unit] * count), size)


def noise_lines(size: int) -> list[str]:
    """The noise haystack of exactly ``size`` bytes once joined by ``"\\n"``, as lines."""
    return repeated(NOISE, "\n", size).split("\n")


def normalised(text: str, size: int) -> str:
    """RULER's whitespace normalisation (words joined by one space) of a prefix of
    ``text`` longer than ``size`` bytes, or of all of it: a long corpus is not scanned
    whole for a short haystack."""
    chars = max(size, 1)
    while True:
        words = " ".join(text[:chars].split())
        if len(words.encode("utf-8")) > size or chars >= len(text):
            return words
        chars *= 2


def prose_sentences(words: str, size: int) -> list[str]:
    """The prose haystack of exactly ``size`` bytes once joined by ``" "``, as sentences
    (``words`` is :func:`normalised` text)."""
    require(bool(words), "the prose haystack is empty: pass a text with some words in it")
    return _SENTENCE_END.split(repeated(words, " ", size))


def with_needle(units: list[str], needle: str, index: int, separator: str) -> str:
    """The units joined by ``separator`` with ``needle`` inserted before ``units[index]``.

    The result is always ``len(needle) + len(separator)`` longer than the joined units.
    """
    return separator.join([*units[:index], needle, *units[index:]])
