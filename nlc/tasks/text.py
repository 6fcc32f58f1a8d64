"""Byte-level text examples of an exact length, for the retrieval tasks (passkey, NIAH).

An example is a prompt, one space, and the answer: ``prompt + " " + answer``. Its
tokens under :class:`nlc.data.ByteTokenizer` (UTF-8 bytes, vocab 256) are T + 1 long; ``tokens`` are the first T
and ``targets[t]`` is byte t + 1 where that byte belongs to the answer, ``IGNORE``
elsewhere, so the last answer byte is a target but never an input (zoology's
``inputs = seq[:-1]``, ``labels = labels[1:]``). The space is not scored.

The filler (haystack) is the only part whose size is free: a task describes an example as
a function ``build(budget) -> (prompt, answer)`` of the filler's size in bytes, and
:func:`fit` measures ``build(0)`` to find the budget that makes the example exactly T + 1
bytes. ``build`` must take all its randomness as arguments drawn beforehand.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..data import ByteTokenizer
from .batch import IGNORE, TaskBatch, require

BYTES = ByteTokenizer()

Build = Callable[[int], tuple[str, str]]


def fit(build: Build, seq_len: int, task: str) -> tuple[str, str]:
    """``build(budget)`` with the budget that makes prompt + " " + answer T + 1 bytes."""
    overhead = _length(*build(0))
    budget = seq_len + 1 - overhead
    require(budget >= 0,
            f"seq_len {seq_len} is too short for this {task} example: its instructions, "
            f"needle and answer alone take {overhead - 1} tokens; use a seq_len above "
            f"{overhead - 1} to leave room for the haystack")
    prompt, answer = build(budget)
    assert _length(prompt, answer) == seq_len + 1, "the filler did not take its byte budget"
    return prompt, answer


def text_batch(task: str, examples: Sequence[tuple[str, str]]) -> TaskBatch:
    """Stack equal-length (prompt, answer) examples into a per-example-scored batch."""
    full = torch.stack([BYTES.encode(f"{prompt} {answer}") for prompt, answer in examples])
    full = full.to(torch.int64)
    starts = torch.tensor([len(BYTES.encode(f"{prompt} ")) for prompt, _ in examples])
    in_answer = (torch.arange(full.shape[1]) >= starts[:, None])[:, 1:]
    targets = torch.where(in_answer, full[:, 1:], IGNORE)
    answers = tuple(answer for _, answer in examples)
    return TaskBatch(task=task, tokens=full[:, :-1].contiguous(), targets=targets,
                     answer_mask=in_answer, scoring="per_example", answers=answers)


def utf8_prefix(text: str, size: int) -> str:
    """The longest prefix of ``text`` of at most ``size`` UTF-8 bytes, space-padded to
    exactly ``size`` bytes (a cut never splits a multi-byte character)."""
    cut = text.encode("utf-8")[:size].decode("utf-8", errors="ignore")
    return cut + " " * (size - len(cut.encode("utf-8")))


def _length(prompt: str, answer: str) -> int:
    return len(BYTES.encode(f"{prompt} {answer}"))
