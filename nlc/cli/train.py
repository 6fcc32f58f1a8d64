"""``nlc train SPEC [OVERRIDES] --out DIR``: train a spec on a corpus, with checkpoints.

Prints, at the end, the validation bits per byte, the checkpoint folder and a sample
generated from the trained model (``nlc.generate.generate``). ``--resume`` continues
``DIR/checkpoint``; a run killed at any step and resumed ends with the same weights.
Data parallel: ``torchrun --nproc_per_node=2 -m nlc train SPEC --out DIR`` (only rank 0
prints and writes).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import load_or_exit, split_args


def train_verb(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder: metrics.jsonl, curves.png, checkpoint/"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="optimizer steps (default: train.steps)"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint (start fresh if none)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="seed (default: train.seed)"),
    data: Optional[str] = typer.Option(None, "--data", help="corpus name (default: train.data; see nlc data ls)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1,
                                                   help="steps between checkpoints (default: train.eval_every)"),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="also keep OUT/checkpoint-<step>/"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
    sample_tokens: int = typer.Option(200, "--sample-tokens", min=0, help="length of the sample printed at the end"),
    prompt: str = typer.Option("\n", "--prompt", help="prompt of the sample printed at the end"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="torch intra-op threads (default: torch's, one per core); small "
                                               "models on a shared machine often run faster with 1"),
) -> None:
    """Train a spec; print validation bpb, the checkpoint and a generated sample."""
    load_or_exit(args)  # every spec issue printed with its location before torch loads
    paths, overrides = split_args(args)
    import torch

    from ..errors import NLCError
    from ..train import train

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = train(Path(paths[0]), data=data, out=out, steps=steps, overrides=overrides, resume=resume,
                       progress=not no_progress, seed=seed, checkpoint_every=checkpoint_every,
                       keep_checkpoints=keep_checkpoints, device=device)
    except NLCError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if not _is_main_rank():
        return
    typer.echo(f"validation bpb: {result.val_bpb:.4f}")
    typer.echo(f"checkpoint: {result.checkpoint}")
    if sample_tokens:
        typer.echo(f"sample:\n{_sample(result.model, prompt, sample_tokens, seed or 0)}")


def _is_main_rank() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _sample(model, prompt: str, tokens: int, seed: int) -> str:
    from ..errors import NLCError
    from ..generate import generate

    try:
        return prompt + generate(model, prompt, max_new_tokens=tokens, temperature=0.8, top_k=None, seed=seed)
    except NLCError as err:
        return f"(no sample: {err})"
