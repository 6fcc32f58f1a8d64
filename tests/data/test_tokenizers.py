"""Tokenizers: byte round trip, GPT-2 BPE ids checked against the published vocabulary."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from nlc.data import ByteTokenizer, get_tokenizer
from nlc.errors import NLCError


@given(st.text())
def test_bytes_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == torch.uint8 and ids.numel() == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_bytes_are_utf8():
    tok = ByteTokenizer()
    assert tok.encode("aé€").tolist() == [0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC]
    assert tok.decode([0x61, 0xC3]) == "a\ufffd"  # a cut character shows as U+FFFD
    with pytest.raises(NLCError, match=r"\[0, 255\]"):
        tok.decode([256])


def test_unknown_tokenizer_is_named():
    with pytest.raises(NLCError, match="unknown tokenizer 'bpe'; choose one of: bytes, gpt2"):
        get_tokenizer("bpe")


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    ("Hello, world!", [15496, 11, 995, 0]),  # '!' is byte 33, the first rank
    (" the", [262]),
    ("<|endoftext|>", [27, 91, 437, 1659, 5239, 91, 29]),  # ordinary text, never the special id
])
def test_gpt2_known_ids(gpt2, text, ids):
    assert gpt2.encode(text).tolist() == ids
    assert gpt2.decode(ids) == text


def test_gpt2_special_token_decodes(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.eot == 50256
    assert gpt2.decode([gpt2.eot]) == "<|endoftext|>"
    with pytest.raises(NLCError, match="50256"):
        gpt2.decode([50257])


@settings(max_examples=10)
@given(st.text())
def test_gpt2_round_trip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text
