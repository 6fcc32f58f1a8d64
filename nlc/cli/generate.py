"""``nlc generate CKPT --prompt TEXT``: continue a prompt with a trained model.

Streaming decode with carried state (:func:`nlc.generate.generate`): the prompt runs once,
then one token at a time; ``--temperature 0`` is greedy, ``--top-k`` restricts sampling to
the k most likely tokens, ``--seed`` makes the sample repeatable. Prints the prompt
followed by the continuation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import load_checkpoint_or_exit


def generate_verb(
    checkpoint: Path = typer.Argument(..., help="a checkpoint folder written by nlc train"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the text to continue"),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", "-n", help="tokens to generate"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely tokens"),
    seed: int = typer.Option(0, "--seed", help="seed of the sampling generator"),
) -> None:
    """Continue PROMPT with the model of CHECKPOINT (streaming decode, carried state)."""
    from ..errors import NLCError
    from ..generate import generate

    model, _ = load_checkpoint_or_exit(checkpoint)
    try:
        text = generate(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, seed=seed)
    except NLCError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(prompt + text)
