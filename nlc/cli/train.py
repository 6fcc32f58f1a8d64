"""``nlc train SPEC [OVERRIDES] --out DIR``: train a spec on a corpus, with checkpoints.

Prints, at the end, the validation bits per byte, the checkpoint folder and a sample
generated from the trained model (``nlc.generate.generate``), its control characters shown
as visible escapes (:func:`nlc.generate.printable`: model output must not drive the
terminal). ``--resume`` continues ``DIR/checkpoint``; a run killed at any step and resumed
ends with the same weights. Data parallel:
``torchrun --nproc_per_node=2 -m nlc train SPEC --out DIR`` (only rank 0 prints and writes).

A run that meets a NaN or inf stops at that step (``nlc.train``'s ``check_finite``; off with
``--no-finite-check``), prints one paragraph naming the level, step and token and the spec
fields to change, keeps the last checkpoint as it was and exits with status 3
(:data:`nlc.status.NON_FINITE`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer


from ..errors import NLCError
from ._common import fail, load_or_exit, split_args


# The end of `nlc train --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc train specs/transformer.yaml train.steps=20 --out runs/t\n"
          "  nlc train specs/transformer.yaml train.steps=40 --out runs/t --resume\n"
          "  nlc train specs/hope.yaml --out runs/hope --steps 100 --threads 1 --no-progress")


def train_verb(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder: metrics.jsonl, curves.png, checkpoint/"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="optimizer steps (default: train.steps)"),
    resume: bool = typer.Option(False, "--resume", help="continue OUT/checkpoint, also to more train.steps "
                                "(start fresh if none)"),
    loggers: List[str] = typer.Option([], "--logger", help="experiment tracker, repeatable: tensorboard, mlflow "
                                      "or wandb (optional extras: pip install 'nlc[tensorboard]')"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="seed (default: train.seed)"),
    data: Optional[str] = typer.Option(None, "--data", help="corpus name (default: train.data; see nlc data ls)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1,
                                                   help="steps between checkpoints (default: train.eval_every)"),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="also keep OUT/checkpoint-<step>/"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
    sample_tokens: int = typer.Option(200, "--sample-tokens", min=0, help="length of the sample printed at the end"),
    prompt: str = typer.Option("\n", "--prompt", help="prompt of the sample printed at the end"),
    no_finite_check: bool = typer.Option(False, "--no-finite-check",
                                         help="do not stop at the first NaN/inf loss, gradient or parameter"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="torch intra-op threads (default: torch's, one per core); small "
                                               "models on a shared machine often run faster with 1"),
) -> None:
    """Train a spec; print validation bpb, the checkpoint and a generated sample."""
    load_or_exit(args)  # every spec issue printed with its location before torch loads
    paths, overrides = split_args(args)
    import torch  # lazy: keeps CLI startup free of torch

    from ..generate import printable
    from ..training import train

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = train(Path(paths[0]), data=data, out=out, steps=steps, overrides=overrides, resume=resume,
                       progress=not no_progress, seed=seed, checkpoint_every=checkpoint_every,
                       keep_checkpoints=keep_checkpoints, device=device, check_finite=not no_finite_check,
                       loggers=tuple(loggers))
    except NLCError as err:  # NonFiniteError exits 3, a bad file 2 (nlc.status)
        if not _is_main_rank():
            raise typer.Exit(err.exit_status) from None
        fail(err)
    if not _is_main_rank():
        return
    typer.echo(f"validation bpb: {result.val_bpb:.4f}")
    typer.echo(f"checkpoint: {result.checkpoint}")
    if sample_tokens:
        typer.echo(f"sample:\n{printable(_sample(result.model, prompt, sample_tokens, seed or 0))}")


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _sample(model, prompt: str, tokens: int, seed: int) -> str:
    from ..generate import generate  # lazy: keeps CLI startup free of torch

    try:
        return prompt + generate(model, prompt, max_new_tokens=tokens, temperature=0.8, top_k=None, seed=seed)
    except (NLCError, RuntimeError) as err:  # the sample is a courtesy: the run itself has succeeded
        return f"(no sample: {err})"
