"""The extracted-text cache: a corpus's documents, read out of its artifact once.

Folder ``corpora/<name>/<artifact sha256[:16]>/`` holds

* ``text.bin``: the UTF-8 bytes of every document, concatenated in registry order;
* ``index.json``: the artifact it came from, the sha256 of ``text.bin``, and each
  document's name, label and byte length.

Both are written atomically, ``index.json`` last, so a folder with an index is complete.
The text's sha256 is checked on every load, so a tampered or truncated cache is refused
like a tampered download.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_bytes
from .fetch import Artifact, ChecksumError, cache_root, fetch, verify
from .sources import CorpusSource, Document

INDEX = "index.json"
TEXT = "text.bin"


@dataclass(frozen=True)
class CachedText:
    """Where a corpus's extracted text lives, and what it holds."""

    folder: Path
    artifact: Artifact
    names: tuple[str, ...]
    labels: tuple[str | None, ...]
    lengths: tuple[int, ...]  # bytes of each document

    @property
    def total_bytes(self) -> int:
        return sum(self.lengths)

    def documents(self) -> list[Document]:
        """The documents' texts, read from ``text.bin`` (sha256 already verified on open)."""
        data = (self.folder / TEXT).read_bytes()
        docs, start = [], 0
        for name, label, length in zip(self.names, self.labels, self.lengths):
            docs.append(Document(name, data[start:start + length].decode("utf-8"), label))
            start += length
        return docs


def text_folder(source: CorpusSource, artifact: Artifact, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "corpora" / source.name / artifact.sha256[:16]


def cached_text(source: CorpusSource, cache_dir: str | Path | None = None) -> CachedText | None:
    """The extracted text of ``source`` if a verified copy is in the cache, else ``None``."""
    for artifact in source.artifacts:
        folder = text_folder(source, artifact, cache_dir)
        if (folder / INDEX).exists():
            return _open(folder, artifact)
    return None


def extract(source: CorpusSource, cache_dir: str | Path | None = None) -> CachedText:
    """The extracted text of ``source``: from the cache, else fetched, verified and extracted."""
    found = cached_text(source, cache_dir)
    if found is not None:
        return found
    artifact, path = fetch(source.artifacts, cache_dir)
    docs = source.read_documents(path)
    encoded = [doc.text.encode("utf-8") for doc in docs]
    text = b"".join(encoded)
    folder = text_folder(source, artifact, cache_dir)
    atomic_write_bytes(folder / TEXT, text)
    index = {
        "corpus": source.name,
        "artifact": artifact.filename,
        "artifact_sha256": artifact.sha256,
        "text_sha256": hashlib.sha256(text).hexdigest(),
        "documents": [{"name": d.name, "label": d.label, "bytes": len(e)} for d, e in zip(docs, encoded)],
    }
    atomic_write_bytes(folder / INDEX, json.dumps(index, indent=1).encode("utf-8"))
    return _open(folder, artifact)


def _open(folder: Path, artifact: Artifact) -> CachedText:
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        expected = index["text_sha256"]
        rows = index["documents"]
    except (OSError, ValueError, KeyError) as err:
        raise ChecksumError(f"{folder / INDEX} is unreadable ({err}). {_remedy(folder)}") from None
    verify(folder / TEXT, expected, _remedy(folder))
    return CachedText(folder, artifact, tuple(r["name"] for r in rows), tuple(r["label"] for r in rows),
                      tuple(r["bytes"] for r in rows))


def _remedy(folder: Path) -> str:
    return f"Delete the folder {folder} and load the corpus again to re-extract it."
