"""Class-incremental genre classification on the Brown corpus, by an LM's label token.

Scenario: class-incremental (van de Ven & Tolias 2019). The 15 Brown genres, sorted by
name, arrive in ``groups`` consecutive groups (default 5 groups of 3); stage k trains on
the documents of group k only, and the model must then tell apart *every genre seen so
far* with one head and no task id.

Classifier: the language model itself. A training example is a text piece of
``text_len`` bytes, the separator byte ``SEP`` and the genre's label byte::

    piece (text_len tokens) | SEP | LABEL(genre)

``LABEL(i) = 0x10 + i`` and ``SEP = 0x1F`` are control bytes that never occur in Brown's
text, so the label is learned as the next token after the separator, by the ordinary LM
loss on a stream of such examples (shuffled with the run's seed; the training windows
cut the stream anywhere, like any corpus). To classify, the model reads ``piece | SEP``
from a fresh state and the prediction is the argmax of its logits at the separator over
the label bytes of the genres seen so far (a genre not yet seen can never be predicted).
The pieces are cut from each document's train split for training and from its
validation split (the last 5%, :mod:`nlc.data`) for scoring.

R[k, j] = accuracy on the validation pieces of group j after stage k (0 for j > k: those
genres are not candidates yet). Test-time learning follows :mod:`nlc.evaluate.tasks`: the
teach signal covers the piece, never the label.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..compiler import compile_spec
from ..data import load_corpus
from ..evaluate.tasks import task_logits
from ..tasks import IGNORE, TaskBatch, score
from .domains import TokenSplits
from .metrics import ContinualError
from .stream import ContinualRun, Protocol, run_protocol, steps_per_stage

__all__ = ["LABEL_BASE", "SEP", "genre_accuracy", "genre_groups", "label_batch", "run_genres"]

LABEL_BASE, SEP = 0x10, 0x1F


def genre_groups(genres: Sequence[str], groups: int) -> list[list[str]]:
    """The sorted genres in ``groups`` consecutive groups of (nearly) equal size."""
    names = sorted(genres)
    if not 1 <= groups <= len(names):
        raise ContinualError(f"groups must be between 1 and the {len(names)} genres, got {groups}")
    size, extra = divmod(len(names), groups)
    cut, out = 0, []
    for index in range(groups):
        step = size + (index < extra)
        out.append(names[cut:cut + step])
        cut += step
    return out


def _pieces(tokens: torch.Tensor, text_len: int) -> list[torch.Tensor]:
    return [tokens[i:i + text_len] for i in range(0, tokens.numel() - text_len + 1, text_len)]


def _examples(documents_by_label: dict, genres: Sequence[str], index: dict[str, int],
              split: str, text_len: int) -> list[tuple[torch.Tensor, int]]:
    return [(piece.long(), index[genre]) for genre in genres
            for doc in documents_by_label[genre] for piece in _pieces(getattr(doc, split), text_len)]


def _stream(examples: list[tuple[torch.Tensor, int]], generator: torch.Generator) -> torch.Tensor:
    order = torch.randperm(len(examples), generator=generator).tolist()
    return torch.cat([torch.cat([examples[i][0], torch.tensor([SEP, LABEL_BASE + examples[i][1]])])
                      for i in order])


def _splits(name: str, train: torch.Tensor, val: torch.Tensor, example: int) -> TokenSplits:
    """Byte-token splits (one byte per token, separator and labels included) of examples of
    ``example`` tokens, each one document."""
    return TokenSplits(name, train, val, 256, train.numel(), val.numel(),
                       train_starts=torch.arange(0, train.numel(), example),
                       val_starts=torch.arange(0, val.numel(), example))


def label_batch(examples: list[tuple[torch.Tensor, int]]) -> TaskBatch:
    """``piece | SEP`` rows, scored at the separator on the label byte (a per-token task)."""
    tokens = torch.stack([torch.cat([piece, torch.tensor([SEP])]) for piece, _ in examples])
    targets = torch.full_like(tokens, IGNORE)
    targets[:, -1] = torch.tensor([LABEL_BASE + label for _, label in examples])
    return TaskBatch(task="genre", tokens=tokens, targets=targets, answer_mask=targets != IGNORE,
                     scoring="per_token")


def genre_accuracy(model, batch: TaskBatch, candidates: list[int], batch_size: int) -> float:
    """Accuracy when only the ``candidates`` labels may be predicted."""
    was_training = model.training
    model.eval()
    try:
        logits = task_logits(model, batch, batch_size)
    finally:
        model.train(was_training)
    allowed = torch.full((logits.shape[-1],), float("-inf"))
    allowed[[LABEL_BASE + c for c in candidates]] = 0.0
    return score(batch, logits + allowed)


def run_genres(spec, groups: int = 5, tokens_per_stage: int | None = None, *,
               out: str | Path = "runs/continual-brown", overrides: Sequence[str] = (),
               seed: int | None = None, baselines: bool = True,
               extra_baseline_overrides: Sequence[str] = (), progress: bool = False,
               corpus=None, eval_pieces: int = 64) -> list[ContinualRun]:
    """Class-incremental Brown genres (module doc); ``corpus`` skips loading Brown (any
    object with ``documents_by_label``); ``eval_pieces`` caps the scored pieces per group."""
    overrides = (*overrides, *([f"train.seed={seed}"] if seed is not None else []))
    model = compile_spec(spec, overrides=overrides)
    t = model.spec.train
    if model.vocab < 256:
        raise ContinualError("genre classification reads UTF-8 bytes: it needs a byte-level model")
    if corpus is None:
        corpus = load_corpus("brown")
    text_len = t.seq_len // 2
    grouped = genre_groups(corpus.documents_by_label, groups)
    index = {genre: i for i, genre in enumerate(g for group in grouped for g in group)}
    generator = torch.Generator().manual_seed(t.seed)
    stages, scored = [], []
    for k, genres in enumerate(grouped):
        train = _examples(corpus.documents_by_label, genres, index, "train", text_len)
        val = _examples(corpus.documents_by_label, genres, index, "val", text_len)
        if not train or not val:
            raise ContinualError(f"group {k} ({', '.join(genres)}) has no piece of {text_len} bytes: "
                                 "use a shorter train.seq_len")
        picked = torch.randperm(len(val), generator=generator)[:eval_pieces].tolist()
        scored.append(label_batch([val[i] for i in picked]))
        stages.append((f"g{k}", _splits(f"brown-g{k}", _stream(train, generator),
                                        _stream(val, generator), text_len + 2)))
    union = _splits("brown-all", torch.cat([s.train for _, s in stages]),
                    torch.cat([s.val for _, s in stages]), text_len + 2)
    seen_after = [sum(len(g) for g in grouped[:k + 1]) for k in range(len(grouped))]

    def row(m, k: int) -> list[float]:
        candidates = list(range(seen_after[k]))
        return [genre_accuracy(m, batch, candidates, t.batch) if j <= k else 0.0
                for j, batch in enumerate(scored)]

    protocol = Protocol(stages, ["+".join(g) for g in grouped], union, False, row)
    steps = steps_per_stage(tokens_per_stage or t.steps * t.batch * t.seq_len, t.batch, t.seq_len)
    return run_protocol(model, spec, protocol, steps, Path(out), overrides=overrides, seed=t.seed,
                        baselines=baselines, extra_baseline_overrides=extra_baseline_overrides,
                        progress=progress)
