"""``nlc generate CKPT --prompt TEXT``: continue a prompt with a trained model.

Streaming decode with carried state (:func:`nlc.generate.generate`): the prompt runs once,
then one token at a time; ``--temperature 0`` is greedy, ``--top-k`` restricts sampling to
the k most likely tokens, ``--seed`` makes the sample repeatable. Prints the prompt
followed by the continuation, with control characters shown as visible escapes
(:func:`nlc.generate.printable`: model output must not drive the terminal); ``--raw`` writes
the text as it is, UTF-8 encoded, for a pipe or a file. A model whose logits are NaN or inf prints one paragraph
naming the level and token instead and exits with status 3 (:data:`nlc.status.NON_FINITE`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


from ..errors import NLCError
from ._common import fail, load_checkpoint_or_exit


# The end of `nlc generate --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc generate runs/t/checkpoint --prompt 'ROMEO:'\n"
          "  nlc generate runs/t/checkpoint -p 'To be' -n 100 --temperature 0\n"
          "  nlc generate runs/t/checkpoint -p 'Once' --raw > sample.txt")


def generate_verb(
    checkpoint: Path = typer.Argument(..., help="a checkpoint folder written by nlc train"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the text to continue"),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", "-n", help="tokens to generate"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely tokens"),
    seed: int = typer.Option(0, "--seed", help="seed of the sampling generator"),
    raw: bool = typer.Option(False, "--raw", help="write the text unescaped (control characters included), "
                                                  "for a pipe or a file"),
) -> None:
    """Continue PROMPT with the model of CHECKPOINT (streaming decode, carried state).

    Control characters in the output are printed as visible escapes (\\x1b); --raw keeps them.
    """
    from ..generate import generate, printable  # lazy: keeps CLI startup free of torch

    model, _ = load_checkpoint_or_exit(checkpoint)
    try:
        text = generate(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, seed=seed)
    except NLCError as err:  # NonFiniteError exits 3, a bad file 2 (nlc.status)
        fail(err)
    if raw:  # not typer.echo: click strips ANSI sequences from output that is not a terminal
        sys.stdout.flush()
        sys.stdout.buffer.write((prompt + text + "\n").encode("utf-8"))
        sys.stdout.buffer.flush()
    else:
        typer.echo(printable(prompt + text))
