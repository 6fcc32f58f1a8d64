"""Corpora as token tensors, split into train and validation without randomness.

Split rule (nlc/data/split.py): each document is tokenized on its own; of its n tokens the
last ``floor(n / 20)`` (5%) are validation and the rest are train. ``train`` is the
concatenation of the documents' train parts in registry order, ``val`` of their
validation parts; nothing separates documents (no end-of-text token: the byte vocabulary
has none, and both tokenizers are treated alike). The split needs no seed, is the same on
every machine, and every corpus position is in exactly one split. Validation text is the
end of each document, so it is never seen as a training window but comes from the same
documents (no document-level distribution shift between the splits).

``train_starts`` / ``val_starts`` are the offsets at which each document's part begins in
``train`` / ``val`` (levels with ``lifetime: document`` reset there: :mod:`nlc.data.documents`).

``train_bytes`` / ``val_bytes`` count the UTF-8 bytes the split's tokens stand for, so
bits per byte can be computed for any tokenizer: ``bpb = loss_nats_per_token * tokens /
(ln 2 * bytes)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .documents import offsets_of
from .fetch import Artifact
from .sources import DEFAULT_CORPUS, CorpusSource, get_source
from .split import split_point
from .text_cache import extract
from .tokenizers import Tokenizer, get_tokenizer

@dataclass(frozen=True)
class LabelledDocument:
    """One document of a labelled corpus (Brown: its genre), already split."""

    name: str
    label: str
    train: torch.Tensor
    val: torch.Tensor


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus.

    ``train`` and ``val`` are 1-D tensors of token ids (``uint8`` for bytes, ``int64`` for
    gpt2: cast when batching). ``artifact`` is the registry file it came from (``sha256`` is
    its checksum); ``path`` the folder of its extracted text. ``documents_by_label`` maps each label to its documents in registry
    order (empty for unlabelled corpora).
    """

    name: str
    artifact: Artifact
    tokenizer: Tokenizer
    train: torch.Tensor
    val: torch.Tensor
    documents: int
    train_bytes: int
    val_bytes: int
    path: Path
    train_starts: torch.Tensor
    val_starts: torch.Tensor
    documents_by_label: dict[str, list[LabelledDocument]] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return self.artifact.sha256

    @property
    def vocab(self) -> int:
        return self.tokenizer.vocab_size


def load_corpus(name: str | CorpusSource = DEFAULT_CORPUS, tokenizer: str | Tokenizer = "bytes",
                cache_dir: str | Path | None = None) -> Corpus:
    """Fetch (once), verify, extract (once), tokenize and split the corpus ``name`` (a key of
    ``CORPORA``, or a :class:`CorpusSource` of one's own).

    Raises :class:`~nlc.data.DataFetchError` with the command to run by hand when the
    artifact is not cached and cannot be fetched, and a ``ChecksumError`` (a
    ``DataFetchError``) when a cached file does not match its pinned sha256.
    """
    source = get_source(name) if isinstance(name, str) else name
    tok = get_tokenizer(tokenizer, cache_dir) if isinstance(tokenizer, str) else tokenizer
    text = extract(source, cache_dir)
    trains, vals, by_label = [], [], {}
    val_bytes = 0
    for doc in text.documents():
        ids = tok.encode(doc.text)
        cut = split_point(ids.numel())
        train, val = ids[:cut], ids[cut:]
        trains.append(train)
        vals.append(val)
        val_bytes += len(tok.decode_bytes(val))
        if doc.label is not None:
            by_label.setdefault(doc.label, []).append(LabelledDocument(doc.name, doc.label, train, val))
    return Corpus(
        name=source.name,
        artifact=text.artifact,
        tokenizer=tok,
        train=_concat(trains, tok),
        val=_concat(vals, tok),
        documents=len(trains),
        train_bytes=text.total_bytes - val_bytes,
        val_bytes=val_bytes,
        path=text.folder,
        train_starts=offsets_of([t.numel() for t in trains]),
        val_starts=offsets_of([v.numel() for v in vals]),
        documents_by_label=by_label,
    )


def _concat(parts: list[torch.Tensor], tok: Tokenizer) -> torch.Tensor:
    """``torch.cat`` of CPU tensors, through numpy: torch's multi-threaded cat took ~1 s for
    5 MB on a loaded 2-core machine (OpenMP contention), numpy's single-threaded one 20 ms."""
    if not parts:
        return torch.zeros(0, dtype=tok.dtype)
    return torch.from_numpy(np.concatenate([part.numpy() for part in parts]))
