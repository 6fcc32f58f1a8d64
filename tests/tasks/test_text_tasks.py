"""Passkey and RULER NIAH at byte level: the prompt texts of the references, exact
lengths, and answers scored on the right bytes (nlc/tasks/passkey.py, niah.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from nlc.tasks import TaskError, niah, passkey
from nlc.tasks.haystack import NOISE
from nlc.tasks.niah import DEPTHS
from nlc.tasks.passkey import QUESTION, TASK
from nlc.tasks.words import WORDS

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
PROSE = ("It was the best of times, it was the worst of times.  It was the age of wisdom!\n"
         "Was it the age of   foolishness? Café déjà vu: naïve résumé. ") * 4


def full_text(batch, row: int) -> str:
    """The example's whole byte sequence: the inputs plus the last target byte."""
    data = batch.tokens[row].tolist() + [int(batch.targets[row, -1])]
    return bytes(data).decode("utf-8")


def scored_text(batch, row: int) -> str:
    return bytes(batch.targets[row][batch.answer_mask[row]].tolist()).decode("utf-8")


def test_passkey_prompt_by_hand():
    batch = passkey(1, 300, 3)
    text = full_text(batch, 0)
    print(repr(text))
    assert text == (
        f"{TASK}\nThe grass is green. The sky is blue. The su\n"
        "The pass key is 8987. Remember it. 8987 is the pass key.\n"
        f"The gras\n{QUESTION} 8987"
    )
    assert batch.answers == ("8987",) and scored_text(batch, 0) == "8987"
    # 301 bytes: the space is byte 296, the digits 297..300, each the target one earlier
    assert batch.answer_mask[0].nonzero().flatten().tolist() == [296, 297, 298, 299]
    assert int(batch.tokens[0, 296]) == ord(" ") and int(batch.targets[0, 295]) == -100
    assert batch.targets[0, 296:].tolist() == list(b"8987")


def test_passkey_matches_the_reference_layout():
    seq_len = 700
    batch = passkey(60, seq_len, 8)
    garbage = " ".join([NOISE] * 20)
    for row, answer in enumerate(batch.answers):
        lines = full_text(batch, row).split("\n")
        assert len(lines) == 5 and lines[0] == TASK
        prefix, info, suffix, last = lines[1:]
        assert info == f"The pass key is {answer}. Remember it. {answer} is the pass key."
        assert last == f"{QUESTION} {answer}"
        assert garbage.startswith(prefix) and garbage.startswith(suffix)
        assert 1 <= int(answer) <= 50000
        assert scored_text(batch, row) == answer
    prefixes = [len(full_text(batch, row).split("\n")[1]) for row in range(60)]
    assert len(set(prefixes)) > 40  # the info line's place is drawn per example


@pytest.mark.parametrize(("depth", "side"), [(0.0, 1), (1.0, 3)])
def test_passkey_depth_puts_the_key_at_an_end(depth, side):
    batch = passkey(3, 400, 0, depth=depth)
    for row in range(3):
        assert full_text(batch, row).split("\n")[side] == ""


def test_passkey_too_short_is_a_clear_error():
    with pytest.raises(TaskError, match="too short for this passkey example"):
        passkey(1, 200, 0)


def test_niah_noise_prompt_matches_the_ruler_template():
    batch = niah(1, 420, 1)
    text = full_text(batch, 0)
    print(repr(text))
    key, value = "wild-compensation", "8876139"
    needle = f"One of the special magic numbers for {key} is: {value}."
    head = ("A special magic number is hidden within the following text. Make sure to "
            "memorize it. I will quiz you about the number afterwards.\n")
    tail = (f"\nWhat is the special magic number for {key} mentioned in the provided text? "
            f"The special magic number for {key} mentioned in the provided text is {value}")
    haystack = "\n".join([NOISE] * 3)[: len(text) - len(head) - len(tail) - len(needle) - 1]
    assert text == head + "\n".join([needle, haystack]) + tail
    assert batch.answers == (value,) and scored_text(batch, 0) == value
    assert batch.task == "niah_number" and batch.scoring == "per_example"


@pytest.mark.parametrize("value", ["number", "word", "uuid"])
def test_niah_values_have_ruler_formats(value):
    batch = niah(40, 700, 5, value=value, prose=PROSE)
    pattern = {"number": r"[1-9]\d{6}", "word": r"\S+-\S+", "uuid": UUID4.pattern}[value]
    for row, answer in enumerate(batch.answers):
        text = full_text(batch, row)
        found = re.findall(rf"One of the special magic {value}s for (\S+) is: ({pattern})\.", text)
        assert len(found) == 1 and found[0][1] == answer
        key = found[0][0]
        assert key in WORDS
        assert text.endswith(f"The special magic {value} for {key} mentioned in the "
                             f"provided text is {answer}")
        assert scored_text(batch, row) == answer
        if value == "word":
            assert answer in WORDS


def test_niah_prose_needle_sits_between_whole_sentences():
    batch = niah(30, 900, 2, prose=PROSE)
    normalised = " ".join(PROSE.split())
    for row in range(30):
        context = full_text(batch, row).split("\n")[1]
        before, after = re.split(r" ?One of the special magic numbers for \S+ is: \d+\. ?", context)
        assert before == "" or before[-1] in ".!?"
        assert normalised.startswith(before)
        assert (normalised * 3).startswith(" ".join([before, after]).strip())


def test_niah_depths_are_rulers():
    assert DEPTHS == tuple(np.round(np.linspace(0, 100, num=40)).astype(int).tolist())


@pytest.mark.parametrize(("depth", "first"), [(0.0, True), (1.0, False)])
def test_niah_fixed_depth(depth, first):
    for prose in (None, PROSE):
        batch = niah(2, 600, 0, prose=prose, depth=depth)
        for row in range(2):
            lines = full_text(batch, row).split("\n")
            context = "\n".join(lines[1:-1])
            assert context.startswith("One of the special") is first
            assert context.endswith(f"is: {batch.answers[row]}.") is not first


def test_niah_counts_bytes_not_characters():
    batch = niah(4, 1000, 9, prose="Über straße, café. " * 50)
    assert batch.tokens.shape == (4, 1000)
    for row in range(4):
        assert "straße" in full_text(batch, row)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prose": " \n\t "}, "prose haystack is empty"),
    ({"value": "colour"}, "unknown needle kind"),
    ({"depth": 1.5}, "depth must be in"),
])
def test_niah_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(TaskError, match=message):
        niah(1, 800, 0, **kwargs)


def test_uuid_values_come_from_the_generator():
    first = niah(3, 700, torch.Generator().manual_seed(4), value="uuid").answers
    again = niah(3, 700, 4, value="uuid").answers
    assert first == again and all(UUID4.fullmatch(answer) for answer in first)
