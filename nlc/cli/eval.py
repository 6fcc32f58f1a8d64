"""``nlc eval CKPT --task lm|niah|passkey|mqar|copy [--lengths ...] [--n N] [--json FILE]``.

``lm``: loss, bits per byte and perplexity on the validation split of ``--data`` (default:
the corpus the model was trained on) with windows of each length, then, on consecutive
segments of the training length, bits per byte with the state carried from segment to
segment beside a fresh state per segment (``lifetime: stream`` levels keep learning from the
text being scored, ``document`` levels until its next document; :func:`nlc.evaluate.evaluate_stream`). The synthetic tasks:
accuracy on ``--n`` examples per length (:func:`nlc.evaluate.evaluate_task`; the module
doc there says how test-time learning and the teach signal are handled). Lengths default
to 1, 2 and 4 times the training length; lengths beyond it are marked ``*``. Prints a
table, every number ± its standard error (over the validation batches for lm, over the
examples for the tasks: :mod:`nlc.evaluate.report`); ``--json FILE`` also writes the numbers
(``bpb_stderr``, ``loss_stderr``; ``stderr`` per length for the tasks). A NaN or inf loss
or logit stops it with one paragraph naming the level and token and exit status 3
(:data:`nlc.status.NON_FINITE`; ``--no-finite-check`` reports NaN numbers instead).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


from ..data import CORPORA
from ..errors import NLCError, NonFiniteError
from ._common import fail, load_checkpoint_or_exit

TASK_CHOICES = ("lm", "niah", "passkey", "mqar", "copy")


def parse_lengths(text: str | None, train_length: int) -> list[int]:
    """``"256,512"`` -> ``[256, 512]``; None -> 1, 2 and 4 times the training length."""
    if text is None:
        return [train_length, 2 * train_length, 4 * train_length]
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not lengths or min(lengths) < 2:
        raise typer.BadParameter(f"give at least one length >= 2, got {text!r}")
    return lengths


def haystack_text(source: str) -> str:
    """Prose for the NIAH haystack: a text file, or a corpus name (its validation text)."""
    path = Path(source)
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    from ..data import get_tokenizer, load_corpus  # lazy: keeps CLI startup free of torch

    if source not in CORPORA:
        raise typer.BadParameter(f"{source!r} is neither a file nor a corpus "
                                 f"({', '.join(CORPORA)})")
    return get_tokenizer("bytes").decode(load_corpus(source).val)


# The end of `nlc eval --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc eval runs/t/checkpoint\n"
          "  nlc eval runs/t/checkpoint --task mqar --lengths 64,128 --n 20\n"
          "  nlc eval runs/t/checkpoint --task niah --lengths 512,1024 --haystack shakespeare --json niah.json")


def eval_verb(
    checkpoint: Path = typer.Argument(..., help="a checkpoint folder written by nlc train"),
    task: str = typer.Option("lm", "--task", help="|".join(TASK_CHOICES)),
    lengths: Optional[str] = typer.Option(None, "--lengths", help="comma-separated, e.g. 256,512,1024"),
    n: int = typer.Option(50, "--n", help="examples per length (synthetic tasks)"),
    seed: int = typer.Option(0, "--seed", help="seed of the examples / validation windows"),
    data: Optional[str] = typer.Option(None, "--data", help="lm: corpus (default: the training corpus)"),
    batches: Optional[int] = typer.Option(None, "--batches", help="lm: validation batches per length"),
    haystack: Optional[str] = typer.Option(None, "--haystack",
                                           help="niah: prose haystack, a text file or corpus name "
                                                "(default: the noise haystack)"),
    niah_value: str = typer.Option("number", "--niah-value", help="niah: the needle's value: number | word | uuid"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON"),
    no_finite_check: bool = typer.Option(False, "--no-finite-check",
                                         help="report NaN/inf numbers instead of stopping at the first one"),
) -> None:
    """Evaluate CHECKPOINT: bits per byte (lm) or task accuracy at several lengths."""
    if task not in TASK_CHOICES:
        raise typer.BadParameter(f"{task!r}: choose one of {', '.join(TASK_CHOICES)}", param_hint="--task")
    from rich.console import Console  # lazy: keeps CLI startup free of rich and torch

    from ..evaluate import evaluate_task, task_table, write_json

    model, _ = load_checkpoint_or_exit(checkpoint)
    train = model.spec.train
    sizes = parse_lengths(lengths, train.seq_len)
    try:
        if task == "lm":
            table, payload = _lm(model, data or train.data, sizes, batches or train.eval_batches, seed,
                                 not no_finite_check)
        else:
            text = haystack_text(haystack) if haystack else None
            report = evaluate_task(model, task, sizes, n=n, seed=seed, haystack_text=text, niah_value=niah_value,
                                   check_finite=not no_finite_check)
            table, payload = task_table(report), report.to_json()
    except NLCError as err:  # NonFiniteError exits 3, a bad file 2 (nlc.status)
        fail(err)
    Console().print(table)
    if json_path is not None:
        payload = {"checkpoint": str(checkpoint), "spec": model.spec.name, **payload}
        typer.echo(f"wrote {write_json(json_path, payload)}")


def _lm(model, data: str, lengths: list[int], batches: int, seed: int, check_finite: bool):
    from ..data import load_corpus  # lazy: keeps CLI startup free of torch and rich
    from ..data.documents import split_for
    from rich.console import Group

    from ..evaluate import evaluate_lm, evaluate_stream, lm_json, lm_table, stream_table

    corpus = load_corpus(data, tokenizer=model.spec.model.tokenizer)
    val = split_for(corpus, "val", model.document_period)
    batch = model.spec.train.batch
    per_token = corpus.val_bytes / len(corpus.val)
    results = {}
    for length in lengths:
        try:
            results[length] = evaluate_lm(model, val, batch, length, batches, seed,
                                          bytes_per_token=per_token, check_finite=check_finite)
        except NonFiniteError as err:
            raise err.reworded(prefix=f"lm at length {length}: ") from None
    train_length = model.spec.train.seq_len
    try:
        stream = evaluate_stream(model, val, batch, train_length, batches, seed, bytes_per_token=per_token,
                                 check_finite=check_finite)
    except NonFiniteError as err:
        raise err.reworded(prefix=f"lm on consecutive segments of {train_length} tokens: ") from None
    streams = sorted({lv for lv, level in model.spec.levels.items()
                      if getattr(level, "lifetime", "sequence") != "sequence"})
    title = f"{data} validation (batch {batch}, {batches} batches per length)"
    tables = Group(lm_table(results, train_length, title),
                   stream_table(stream, streams, f"{data} validation, {batch} streams x {batches} consecutive "
                                f"segments of {stream['carried']['segment']} tokens"))
    return tables, {**lm_json(results, train_length, data), "stream": {**stream, "levels": streams}}
