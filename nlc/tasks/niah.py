"""RULER single-needle NIAH (Hsieh et al. 2024), byte level.

Reference: NVIDIA/RULER ``scripts/data/synthetic/niah.py`` (with ``num_needle_k =
num_needle_v = num_needle_q = 1``) and its base template. Per example:

* key and value drawn by kind (:mod:`.needle_values`: 7-digit ``number``, ``word``,
  ``uuid``); the needle ``One of the special magic {kind}s for {key} is: {value}.``
* haystack (:mod:`.haystack`): ``noise`` (RULER "repeat", lines joined by ``"\\n"``, the
  needle before a uniformly drawn line) or ``prose`` (RULER "essay", sentences joined by
  ``" "``, the needle before sentence ``int(S · depth / 100)`` of S, ``depth`` drawn from
  RULER's 40 depths ``round(linspace(0, 100, 40))``);
* prompt = RULER's template after its single-needle rewrite ("Some" → "A", "are all" →
  "is", "are" → "is", the kind made singular), template and answer prefix together::

    A special magic {kind} is hidden within the following text. Make sure to memorize it.
    I will quiz you about the {kind} afterwards.\\n{context}\\nWhat is the special magic
    {kind} for {key} mentioned in the provided text? The special magic {kind} for {key}
    mentioned in the provided text is

* the answer is the value, after one space.

RULER's tasks: ``niah_single_1`` = noise, word keys, number values; ``niah_single_2`` =
prose, number values; ``niah_single_3`` = prose, uuid values. Titans' S-NIAH-N is
``niah_single_2``; its S-NIAH-W is read here as ``niah_single_3`` (uuid values).

Deviations: the haystack is cut to the exact byte budget that makes the example
``seq_len`` tokens (RULER sizes it in whole units under a token limit); sentences are
split by a regex, not nltk; a needle at sentence 0 or S gets no extra space at the start
or end; ``depth`` in [0, 1] may fix the needle's place (index ``int(units · depth)``),
which RULER does not offer. RULER scores ``string_match_all`` on a generated answer; here
it is per-example exact match of the value under teacher forcing (see :mod:`.batch`;
``TaskBatch.answers`` keeps the values for string matching of greedy decodes).
"""
from __future__ import annotations

from functools import partial

import torch

from .batch import TaskBatch, require, seeded
from .haystack import noise_lines, normalised, prose_sentences, with_needle
from .needle_values import NeedleKind, draw
from .text import fit, text_batch

DEPTHS = tuple(round(100 * index / 39) for index in range(40))
"""RULER's needle depths in percent: ``np.round(np.linspace(0, 100, 40))``."""

TEMPLATE = (
    "A special magic {kind} is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {kind} afterwards.\n{context}\nWhat is the special magic "
    "{kind} for {key} mentioned in the provided text? The special magic {kind} for {key} "
    "mentioned in the provided text is"
)
NEEDLE = "One of the special magic {kinds} for {key} is: {value}."


def needle_index(units: int, uniform: float, depth: float | None, prose: bool) -> int:
    """Where the needle goes among ``units`` haystack units (see the module doc)."""
    if depth is not None:
        return int(units * depth)
    if prose:
        return int(units * DEPTHS[int(uniform * len(DEPTHS))] / 100)
    return int(uniform * units)


def niah_example(key: str, value: str, kind: NeedleKind, words: str | None, uniform: float,
                 depth: float | None, haystack_size: int) -> tuple[str, str]:
    """(prompt, answer) with a haystack of ``haystack_size`` bytes before the needle goes
    in: the noise haystack, or prose cut from ``words`` (:func:`.haystack.normalised`)."""
    needle = NEEDLE.format(kinds=f"{kind}s", key=key, value=value)
    if words is None:
        units, separator = noise_lines(haystack_size), "\n"
    else:
        units, separator = prose_sentences(words, haystack_size), " "
    index = needle_index(len(units), uniform, depth, words is not None)
    context = with_needle(units, needle, index, separator)
    return TEMPLATE.format(kind=kind, key=key, context=context), value


def niah(num_examples: int, seq_len: int, generator: torch.Generator | int, *,
         value: NeedleKind = "number", key: NeedleKind = "word", prose: str | None = None,
         depth: float | None = None) -> TaskBatch:
    """N single-needle prompts of exactly ``seq_len`` bytes.

    ``prose`` is the haystack text (None: the noise haystack); ``depth`` in [0, 1] fixes
    the needle's place, else it is drawn as RULER does.
    """
    require(num_examples >= 1, f"num_examples must be >= 1, got {num_examples}")
    require(depth is None or 0.0 <= depth <= 1.0, f"depth must be in [0, 1], got {depth}")
    gen = seeded(generator)
    words = None if prose is None else normalised(prose, seq_len + 1)
    examples = []
    for _ in range(num_examples):
        needle_key, needle_value = draw(key, gen), draw(value, gen)
        uniform = float(torch.rand((), dtype=torch.float64, generator=gen))
        build = partial(niah_example, needle_key, needle_value, value, words, uniform, depth)
        examples.append(fit(build, seq_len, "NIAH"))
    return text_batch(f"niah_{value}", examples)
