"""Tokenizers: UTF-8 bytes (the default) and GPT-2 BPE from a vocabulary a package ships.

``bytes``: token = one UTF-8 byte, vocab 256, ids stored as ``uint8``. Bits per byte is
then the per-token loss in bits.

``gpt2``: the GPT-2 byte-level BPE (vocab 50,257 = 50,256 merge ranks + ``<|endoftext|>``).
The rank file is ``whisper/assets/gpt2.tiktoken`` from the PyPI sdist
``openai-whisper==20250625`` (sha256 306cd27f…, the official r50k/GPT-2 rank file); the
hub download tiktoken would do on its own is impossible here. Merging runs in ``tiktoken``
(Rust) given the ranks and GPT-2's pre-tokenizer pattern. ``encode`` never emits the
special token (text ``<|endoftext|>`` is encoded as ordinary text), so
``decode(encode(s)) == s`` for every string.
"""
from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Protocol, Sequence

import torch

from ..errors import NLCError
from .archives import read_member
from ..files import atomic_write_bytes
from .fetch import Artifact, cache_root, fetch, verify

WHISPER_SDIST = Artifact("pypi", "openai-whisper", "20250625", "openai_whisper-20250625.tar.gz",
                         "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96")
GPT2_RANKS_MEMBER = "openai_whisper-20250625/whisper/assets/gpt2.tiktoken"
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# GPT-2's pre-tokenizer ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)
# in the equivalent possessive form tiktoken uses for r50k/gpt2.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
END_OF_TEXT = "<|endoftext|>"

TokenIds = torch.Tensor | Sequence[int]


class Tokenizer(Protocol):
    """What corpora, training and generation need from a tokenizer."""

    name: str
    vocab_size: int
    dtype: torch.dtype  # of the 1-D id tensors ``encode`` returns

    def encode(self, text: str) -> torch.Tensor: ...
    def decode_bytes(self, ids: TokenIds) -> bytes: ...
    def decode(self, ids: TokenIds) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256)."""

    name = "bytes"
    vocab_size = 256
    dtype = torch.uint8

    def encode(self, text: str) -> torch.Tensor:
        data = text.encode("utf-8")
        if not data:
            return torch.zeros(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def decode_bytes(self, ids: TokenIds) -> bytes:
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > 255):
            raise NLCError(f"byte token ids must lie in [0, 255]; got {int(ids.min())}..{int(ids.max())}")
        return ids.to(torch.uint8).numpy().tobytes()

    def decode(self, ids: TokenIds) -> str:
        """Text of the bytes; a sequence cut inside a UTF-8 character shows U+FFFD there."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2 byte-level BPE from a ``.tiktoken`` rank file (base64 token, rank per line)."""

    name = "gpt2"
    vocab_size = 50257
    dtype = torch.int64
    eot = 50256  # <|endoftext|>

    def __init__(self, ranks_file: Path) -> None:
        try:
            import tiktoken  # optional dependency (nlc[gpt2])
        except ImportError:
            raise NLCError("the gpt2 tokenizer needs the tiktoken package: pip install tiktoken") from None
        ranks = {}
        for line in ranks_file.read_bytes().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        self._encoding = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                           special_tokens={END_OF_TEXT: self.eot},
                                           explicit_n_vocab=self.vocab_size)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self._encoding.encode_ordinary(text), dtype=torch.int64)

    def decode_bytes(self, ids: TokenIds) -> bytes:
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1).tolist()
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise NLCError(f"gpt2 token ids must lie in [0, {self.vocab_size - 1}]; got {bad[:5]}")
        return self._encoding.decode_bytes(ids)

    def decode(self, ids: TokenIds) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def gpt2_ranks_file(cache_dir: str | Path | None = None) -> Path:
    """The verified GPT-2 rank file in the cache, taken out of the whisper sdist if needed."""
    path = cache_root(cache_dir) / "vocab" / "gpt2.tiktoken"
    if not path.exists():
        _, sdist = fetch((WHISPER_SDIST,), cache_dir)
        atomic_write_bytes(path, read_member(sdist, GPT2_RANKS_MEMBER))
    verify(path, GPT2_RANKS_SHA256, f"Delete it; it is re-extracted from {WHISPER_SDIST.filename}.")
    return path


@functools.lru_cache(maxsize=4)
def _gpt2(ranks_file: Path) -> GPT2Tokenizer:
    return GPT2Tokenizer(ranks_file)


TOKENIZERS = ("bytes", "gpt2")


def get_tokenizer(name: str = "bytes", cache_dir: str | Path | None = None) -> Tokenizer:
    """The tokenizer called ``name`` (``bytes`` or ``gpt2``; gpt2 fetches its vocabulary once)."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "gpt2":
        return _gpt2(gpt2_ranks_file(cache_dir))
    raise NLCError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}")
