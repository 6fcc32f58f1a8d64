"""``nlc deploy RUN [--domain pydocs] [--tokens N] [--segment S] [--dynamic-eval] [--out FILE]``.

Continual learning at deployment (:mod:`nlc.continual.deployment`): the trained model of RUN
(a run or checkpoint folder, loaded as ``nlc eval`` loads it) reads ``--tokens`` tokens of an
unseen domain in segments of ``--segment`` with its outer parameters frozen, once with a fresh
state per segment and once with the state carried (``--carry lifetimes``: the levels of
``lifetime: stream``; ``all``: the whole state, one unbroken sequence); then its bits per byte on
the pre-training domain before and after the stream (forgetting). ``--dynamic-eval`` adds the
baseline of :mod:`nlc.continual.dynamic_eval`: the frozen MLPs' weights (or those of
``--dynamic-levels``) learn by SGD every ``--dynamic-period`` tokens with step ``--dynamic-lr``,
by default the period and lr of the fastest CMS level of the model, or of the spec named by
``--dynamic-from``. A domain is a corpus name (its
validation split) or a text file (all of it). Prints a table of bits per byte against tokens
seen; ``--out FILE`` writes the curves as JSON (atomically; nothing is written without it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data import CORPORA
from ..errors import NLCError
from ._common import fail, load_checkpoint_or_exit

CARRY_CHOICES = ("lifetimes", "all")
TABLE_ROWS = 8  # curve rows printed (evenly spaced windows); the JSON has every window

# The end of `nlc deploy --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc deploy runs/hope --domain pydocs --tokens 16384 --segment 256 --out /tmp/hope_deploy.json\n"
          "  nlc deploy runs/transformer --dynamic-eval --dynamic-from hope\n"
          "  nlc deploy runs/t --domain notes.txt --pretrain-domain shakespeare --carry all")


def deploy_verb(
    run: Path = typer.Argument(..., help="a run folder (or its checkpoint/) written by nlc train"),
    domain: str = typer.Option("pydocs", "--domain", help="the unseen domain: a corpus name or a text file"),
    pretrain_domain: Optional[str] = typer.Option(None, "--pretrain-domain",
                                                  help="corpus name or text file (default: the run's training data)"),
    tokens: int = typer.Option(16384, "--tokens", min=1, help="tokens of the unseen domain per stream"),
    streams: int = typer.Option(1, "--streams", min=1, help="parallel streams (rows), each its own text"),
    segment: Optional[int] = typer.Option(None, "--segment", min=1,
                                          help="tokens per model call (default: the run's train.seq_len)"),
    window: Optional[int] = typer.Option(None, "--window", min=1, help="tokens per curve point (default: --segment)"),
    pretrain_tokens: Optional[int] = typer.Option(None, "--pretrain-tokens", min=1,
                                                  help="pre-training tokens per stream scored before and after "
                                                       "(default: a quarter of --tokens, whole segments)"),
    carry: str = typer.Option("lifetimes", "--carry", help="carried condition: lifetimes | all"),
    dynamic_eval: bool = typer.Option(False, "--dynamic-eval", help="also run dynamic evaluation"),
    dynamic_lr: Optional[float] = typer.Option(None, "--dynamic-lr",
                                               help="its SGD step size (default: the fastest CMS level's lr)"),
    dynamic_period: Optional[int] = typer.Option(None, "--dynamic-period",
                                                 help="tokens per SGD step (default: the fastest CMS level's period)"),
    dynamic_from: Optional[str] = typer.Option(None, "--dynamic-from",
                                               help="take those defaults from this spec (e.g. hope), not the run's"),
    dynamic_levels: Optional[str] = typer.Option(None, "--dynamic-levels",
                                                 help="comma-separated spec levels that learn "
                                                      "(default: the frozen mlp levels)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the curves here as JSON"),
) -> None:
    """Stream an unseen domain through RUN's model with test-time learning only."""
    if carry not in CARRY_CHOICES:
        raise typer.BadParameter(f"{carry!r}: choose one of {', '.join(CARRY_CHOICES)}", param_hint="--carry")
    given = {"--dynamic-lr": dynamic_lr, "--dynamic-period": dynamic_period, "--dynamic-from": dynamic_from,
             "--dynamic-levels": dynamic_levels}
    for option, value in given.items():
        if value is not None and not dynamic_eval:
            raise typer.BadParameter("only used with --dynamic-eval", param_hint=option)
    from rich.console import Console  # lazy: keeps CLI startup free of rich and torch

    from ..continual.deployment import DeploymentError, deploy

    model, _ = load_checkpoint_or_exit(run)
    segment = segment or model.spec.train.seq_len
    if pretrain_tokens is None:
        pretrain_tokens = max(segment, tokens // 4 // segment * segment)
    unseen = _domain(domain, model, "--domain")
    old = _domain(pretrain_domain or model.spec.train.data, model, "--pretrain-domain")
    try:
        dynamic = _dynamic(model, dynamic_lr, dynamic_period, dynamic_from, dynamic_levels) if dynamic_eval else None
        result = deploy(model, unseen, old, tokens=tokens, segment=segment, streams=streams, window=window,
                        pretrain_tokens=pretrain_tokens, carry=carry, dynamic=dynamic)
    except DeploymentError as err:
        raise typer.BadParameter(str(err), param_hint="--" + err.argument.replace("_", "-")) from None
    except NLCError as err:  # a diverged level exits 3 (nlc.status)
        fail(err)
    Console().print(*_tables(result), highlight=False)
    if out is not None:  # atomically (nlc.files.atomic_write_text)
        from ..evaluate import write_json  # lazy: keeps CLI startup free of torch

        typer.echo(f"wrote {write_json(out, {'run': str(run), **result.to_json()})}")


def _domain(source: str, model, option: str):
    """A corpus name's validation split, or a text file, as a :class:`~nlc.continual.deployment.Text`."""
    from ..continual.deployment import Text  # lazy: torch
    from ..data import get_tokenizer, load_corpus

    path = Path(source)
    tokenizer = model.spec.model.tokenizer
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        ids = get_tokenizer(tokenizer).encode(text)
        if ids.numel() < 2:
            raise typer.BadParameter(f"{source!r} holds fewer than 2 tokens", param_hint=option)
        return Text(path.name, ids, len(text.encode("utf-8")) / ids.numel())
    if source not in CORPORA:
        raise typer.BadParameter(f"{source!r} is neither a file nor a corpus ({', '.join(CORPORA)})", param_hint=option)
    try:
        return Text.validation_of(load_corpus(source, tokenizer=tokenizer))
    except NLCError as err:  # not cached and not fetchable
        fail(err)


def _dynamic(model, lr: float | None, period: int | None, source: str | None, levels: str | None):
    """The :class:`DynamicEval` of the options; a period or lr not given is the fastest CMS
    level's (:func:`~nlc.continual.dynamic_eval.cms_step`) of ``source`` (a spec) or the model."""
    from ..continual.dynamic_eval import DynamicEval, cms_step  # lazy: keeps CLI startup free of torch

    if lr is None or period is None:
        try:
            default_period, default_lr = cms_step(source or model)
        except NLCError as err:
            raise typer.BadParameter(f"not given, and {err}", param_hint="--dynamic-lr" if lr is None
                                     else "--dynamic-period") from None
        lr = default_lr if lr is None else lr
        period = default_period if period is None else period
    names = None if levels is None else tuple(n.strip() for n in levels.split(",") if n.strip())
    return DynamicEval(period, lr, names)


def _tables(result):
    """What to print: a heading line before each rich table (titles would wrap to the narrow
    tables): bpb per window (evenly spaced rows), whole stream and last quarter, forgetting."""
    from rich.table import Table

    settings, conditions = result.settings, result.conditions
    first = next(iter(conditions.values()))
    count = len(first["tokens"])
    rows = min(TABLE_ROWS, count)
    picks = sorted({round(i * (count - 1) / max(rows - 1, 1)) for i in range(rows)})
    curve = Table()
    curve.add_column("tokens seen", justify="right")
    for name in conditions:
        curve.add_column(name, justify="right")
    for i in picks:
        curve.add_row(str(first["tokens"][i]), *(f"{c['bpb'][i]:.3f}" for c in conditions.values()))
    summary = Table()
    for column in ("condition", "bpb", "last quarter"):
        summary.add_column(column, justify="left" if column == "condition" else "right")
    for name, c in conditions.items():
        summary.add_row(name, f"{c['bpb_all']:.3f}", f"{c['bpb_last_quarter']:.3f}")
    out = [f"{result.spec} on {result.domain}: {settings['streams']} stream(s) of {settings['tokens']} tokens in "
           f"segments of {settings['segment']}, carry {settings['carry']}; bits per byte of each window of "
           f"{settings['window']} tokens", curve, "bits per byte of the whole stream and of its last quarter", summary]
    if result.pretrain is not None:
        old = result.pretrain
        forgetting = Table()
        for column in ("condition", "before", "after", "forgetting"):
            forgetting.add_column(column, justify="left" if column == "condition" else "right")
        for name in old["forgetting"]:
            forgetting.add_row(name, f"{old['before'][name]:.3f}", f"{old['after'][name]:.3f}",
                               f"{old['forgetting'][name]:+.3f}")
        out += [f"pre-training domain {old['domain']} ({old['tokens']} tokens per stream), bits per byte before and "
                "after the stream; forgetting = after - before", forgetting]
    return out
