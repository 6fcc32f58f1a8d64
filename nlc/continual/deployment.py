"""Continual learning at deployment (issue 19, protocol 3(b)): a trained model reads an unseen
domain with its outer parameters frozen; only its in-context levels learn, at test time.

Protocol. ``B`` streams (rows) of ``N`` consecutive tokens of the unseen domain (row i starts
at token i * ((len - 1) // B) of the text; rows never see each other: every mixer is
batch-independent, docs/runtime-contract.md) are read in segments of ``S`` tokens. Each
segment is one call ``model(x, state, targets)``: the model scores the segment's tokens, and
its levels learn as the spec says -- memories from the tokens, CMS levels of the task
objective from the loss of tokens already scored (the model runs them in teach segments and differentiates the loss
of a teach segment only after its logits exist, so a token's logits never come from a level
that saw its target: :mod:`nlc.runtime.model`). No optimizer runs and no parameter changes:
every parameter is bitwise what it was (dynamic evaluation swaps in copies,
:mod:`.dynamic_eval`). Two conditions on the same text:

* ``fresh``: every segment starts from ``model.init_state`` -- nothing crosses a segment;
* ``carried``: every segment starts from the state the previous one left, as training hands it
  from one sequence to the next (``carry="lifetimes"``, :meth:`NLCModel.next_sequence`: levels of
  ``lifetime: stream`` and ``document`` keep theirs -- no document starts are given, the domain
  is one stream -- the others start afresh), or the whole state (``carry="all"``: one unbroken
  sequence; attention's cache, every memory and the positions go on). A spec whose levels all
  live for a sequence (``hope.yaml``) carries nothing under ``lifetimes``: fresh equals carried
  there, which is the spec's own claim; ``hope_continual.yaml`` is HOPE with stream CMS levels.

With ``dynamic`` (:class:`.dynamic_eval.DynamicEval`) the same two conditions run with the
chosen weights learning by SGD, once more: ``dynamic_fresh`` (weights back to the trained
ones at every segment) and ``dynamic_carried`` (they persist, with the state, across segments).

Outputs, in bits per byte (nats / (ln 2 * bytes per token)), the mean over the B rows:

* a curve per condition: bpb of each window of W tokens of the stream (default W = S), and
  the cumulative bpb up to the window's end; the whole stream's bpb and its last quarter's;
* forgetting on the pre-training domain: ``before`` is the model's ordinary score of M tokens
  per row of that domain's text, in segments of S, each from the model's initial point
  (``init_state``, the trained weights) -- levels learn inside a segment as they do in any
  evaluation, nothing crosses a segment. ``after`` scores the same tokens the same way, but every
  segment starts from the point the ``carried`` stream ended at (row i from row i's state,
  and the dynamic weights for ``dynamic_carried``): the text being scored teaches nothing that
  reaches another of its segments, so ``after`` differs from ``before`` only by what the stream
  left. ``forgetting = after - before`` (> 0: the stream made the old domain worse); a fresh
  condition ends where it began, so only carried conditions have one.

Notation: B rows, N tokens per row of the stream, S segment, W window, M pre-training tokens
per row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..data import stream_batch
from ..errors import NonFiniteError
from ..runtime.lifetime import detach_state
from .dynamic_eval import DeploymentError, DynamicEval, dynamic_parameters, dynamic_segment, token_nats

__all__ = ["CONDITIONS", "Deployment", "DeploymentError", "Text", "Point", "deploy", "score_stream", "stream_curve"]

Carry = Literal["lifetimes", "all"]
CONDITIONS = ("fresh", "carried", "dynamic_fresh", "dynamic_carried")


@dataclass(frozen=True)
class Text:
    """A domain's text to stream: 1-D token ids and the bytes each stands for on average."""

    name: str
    tokens: Tensor
    bytes_per_token: float = 1.0

    @classmethod
    def validation_of(cls, corpus) -> "Text":
        """The validation split of a :class:`nlc.data.Corpus` or :class:`~.domains.TokenSplits`."""
        return cls(corpus.name, corpus.val, corpus.val_bytes / corpus.val.numel())


@dataclass(frozen=True)
class Point:
    """Where a segment starts: a model state (None: ``init_state``) and, under dynamic
    evaluation, the chosen weights by name (None: the model's own)."""

    state: dict | None = None
    weights: dict[str, Tensor] | None = None


@dataclass
class Deployment:
    """The result of :func:`deploy`: per condition, the bpb curve and summary; forgetting."""

    spec: str
    domain: str
    pretrain_domain: str | None
    settings: dict
    conditions: dict[str, dict] = field(default_factory=dict)
    pretrain: dict | None = None

    def to_json(self) -> dict:
        return {"spec": self.spec, "domain": self.domain, "pretrain_domain": self.pretrain_domain,
                **self.settings, "conditions": self.conditions, "pretrain": self.pretrain}


def _next_point(model: nn.Module, state: dict, weights, carry: Carry, rows: int) -> Point:
    """The point the next segment of a carried condition starts from, cut from the autograd
    graph (the teach segments run with gradients on, and a state that kept their graph
    would grow with every segment)."""
    return Point(model.next_sequence(state, rows) if carry == "lifetimes" else detach_state(state), weights)


def score_stream(model: nn.Module, x: Tensor, y: Tensor, segment: int, *, carried: bool,
                 carry: Carry = "lifetimes", start: Point | None = None,
                 dynamic: DynamicEval | None = None) -> tuple[Tensor, Point]:
    """Per-token nats (B, N) of the streams ``x -> y`` (B, N), read in segments of
    ``segment`` tokens; each segment starts from ``start`` (default: the initial state and
    weights) unless ``carried``, where it starts from where the previous one ended. Returns
    also the point after the last segment. ``dynamic`` needs B = 1 (:func:`dynamic_segment`)."""
    rows, start = x.shape[0], start or Point()
    weights = start.weights
    if dynamic is not None and weights is None:  # the trained weights
        weights = {name: p.detach() for name, p in dynamic_parameters(model, dynamic.levels).items()}
    begin = Point(model.init_state(rows) if start.state is None else start.state, weights)
    point, nats = begin, []
    for a in range(0, x.shape[1], segment):
        if not carried:
            point = begin
        xs, ys = x[:, a:a + segment], y[:, a:a + segment]
        if dynamic is None:
            with torch.no_grad():
                logits, state = model(xs, point.state, ys)
            nats.append(token_nats(logits, ys))
            weights = None
        else:
            scored, state, weights = dynamic_segment(model, xs, ys, point.state, point.weights, dynamic)
            nats.append(scored)
        point = _next_point(model, state, weights, carry, rows)
    return torch.cat(nats, dim=1), point


def stream_curve(nats: Tensor, window: int, bytes_per_token: float) -> dict:
    """bpb of ``nats`` (B, N) per window of ``window`` tokens (the mean over rows and the
    window's tokens; the last window may be shorter), cumulative bpb at each window's end,
    the whole stream's bpb and its last quarter's (tokens from 3N/4 on)."""
    per_bit = math.log(2) * bytes_per_token
    by_token = nats.double().mean(dim=0)  # (N,)
    ends = list(range(window, by_token.numel(), window)) + [by_token.numel()]
    starts = [0, *ends[:-1]]
    total = torch.cumsum(by_token, 0)
    quarter = by_token[(3 * by_token.numel()) // 4:]
    return {"tokens": ends,
            "bpb": [float(by_token[a:b].mean() / per_bit) for a, b in zip(starts, ends)],
            "cumulative": [float(total[b - 1] / b / per_bit) for b in ends],
            "bpb_all": float(by_token.mean() / per_bit), "bpb_last_quarter": float(quarter.mean() / per_bit)}


def _text(data, argument: str) -> Text:
    """``data`` as a :class:`Text` (a bare tensor: one byte per token), its tokens checked."""
    text = data if isinstance(data, Text) else Text(argument, data)
    tokens = text.tokens
    if not isinstance(tokens, Tensor) or tokens.dim() != 1 or tokens.dtype.is_floating_point:
        raise DeploymentError(argument, f"{argument} {text.name!r}: the tokens must be a 1-D tensor of token ids, "
                                        f"got {type(tokens).__name__} {tuple(getattr(tokens, 'shape', ()))}")
    return text


def _streams(text: Text, rows: int, length: int, argument: str, device) -> tuple[Tensor, Tensor]:
    """``(x, y)`` (rows, length): row i reads ``length`` tokens from token i * (len - 1) // rows on."""
    if (text.tokens.numel() - 1) // rows <= length:
        raise DeploymentError(argument, f"{argument}: {rows} streams of {length} tokens need more than "
                                        f"{rows * (length + 1)} tokens of {text.name!r}, which has "
                                        f"{text.tokens.numel()} (fewer tokens or streams)")
    x, y = stream_batch(text.tokens, rows, length, 1, 0)
    return x.to(device), y.to(device)


def _whole(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DeploymentError(name, f"{name} must be a whole number >= {low}, got {value!r}")
    return value


def _described(model: nn.Module, dynamic: DynamicEval) -> dict:
    """Dynamic evaluation's settings and how many weights learn (per row)."""
    chosen = dynamic_parameters(model, dynamic.levels)
    return {**dynamic.to_json(), "parameters": sum(p.numel() for p in chosen.values())}


def _finite(bpb: float, condition: str, where: str, check: bool = True) -> float:
    if check and not math.isfinite(bpb):
        raise NonFiniteError(f"non-finite bits per byte ({bpb}) in the {condition} condition on {where}: "
                             "a level diverged while reading the stream")
    return bpb


def deploy(model: nn.Module, unseen: Text | Tensor, pretrain: Text | Tensor | None = None, *, tokens: int,
           segment: int, streams: int = 1, window: int | None = None, pretrain_tokens: int | None = None,
           carry: Carry = "lifetimes", dynamic: DynamicEval | None = None, check_finite: bool = True) -> Deployment:
    """Run the protocol of the module doc on ``model`` (eval mode for the call): ``tokens``
    per row of ``unseen`` (N), ``streams`` rows (B), segments of ``segment`` (S, dividing N),
    curve windows of ``window`` (W, default S); forgetting on ``pretrain`` (skipped when
    None) over ``pretrain_tokens`` per row (M, a multiple of S; default N). Bad arguments
    raise :class:`DeploymentError` naming the keyword. A score that is not finite raises
    :class:`~nlc.errors.NonFiniteError`; with ``check_finite=False`` it is recorded (nan or
    inf) and the other conditions still run (the paper benchmark counts such runs)."""
    _whole("segment", segment)
    _whole("streams", streams)
    window = _whole("window", segment if window is None else window)
    pretrain_tokens = tokens if pretrain_tokens is None else pretrain_tokens
    for name, value in (("tokens", tokens), ("pretrain_tokens", pretrain_tokens)):
        if _whole(name, value) % segment:
            raise DeploymentError(name, f"{name} must be a multiple of the segment {segment} (whole segments), "
                                        f"got {value}")
    if carry not in ("lifetimes", "all"):
        raise DeploymentError("carry", f"carry must be 'lifetimes' or 'all', got {carry!r}")
    if dynamic is not None and segment % dynamic.period:
        raise DeploymentError("dynamic_period", f"dynamic evaluation's period {dynamic.period} must divide the "
                                                f"segment {segment} (its chunks start with the segments, as a CMS "
                                                "level's do)")
    unseen = _text(unseen, "unseen")
    old = None if pretrain is None else _text(pretrain, "pretrain")
    device = next(model.parameters()).device
    x, y = _streams(unseen, streams, tokens, "tokens", device)
    old_streams = None if old is None else _streams(old, streams, pretrain_tokens, "pretrain_tokens", device)
    result = Deployment(getattr(model, "name", type(model).__name__), unseen.name, None if old is None else old.name,
                        {"tokens": tokens, "streams": streams, "segment": segment, "window": window, "carry": carry,
                         "dynamic": None if dynamic is None else _described(model, dynamic)})
    was_training = model.training
    model.eval()
    try:
        ends = {}
        for condition in CONDITIONS if dynamic is not None else CONDITIONS[:2]:
            learner = dynamic if condition.startswith("dynamic") else None
            nats, ends[condition] = _rows(model, x, y, segment, carried=condition.endswith("carried"), carry=carry,
                                          dynamic=learner)
            result.conditions[condition] = stream_curve(nats, window, unseen.bytes_per_token)
            _finite(result.conditions[condition]["bpb_all"], condition, repr(unseen.name), check_finite)
        if old is not None:
            result.pretrain = _forgetting(model, old, old_streams, ends, segment, carry, dynamic, check_finite)
    finally:
        model.train(was_training)
    return result


def _rows(model, x, y, segment, *, carried, carry, dynamic, start=None):
    """:func:`score_stream` over all rows at once, or row by row under dynamic evaluation
    (each row its own weights). ``start``: the end an earlier call returned (None: the
    initial point). Returns the nats (B, N) and the end: one :class:`Point`, or under
    dynamic evaluation a list of one per row."""
    if dynamic is None:
        return score_stream(model, x, y, segment, carried=carried, carry=carry, start=start)
    out = [score_stream(model, x[i:i + 1], y[i:i + 1], segment, carried=carried, carry=carry,
                        start=None if start is None else start[i], dynamic=dynamic) for i in range(x.shape[0])]
    return torch.cat([nats for nats, _ in out], dim=0), [end for _, end in out]


def _forgetting(model, text: Text, streams: tuple[Tensor, Tensor], ends: dict, segment: int, carry: Carry,
                dynamic: DynamicEval | None, check_finite: bool = True) -> dict:
    """``before``, ``after`` and ``forgetting`` per carried condition on ``text`` (module doc)."""
    x, y = streams

    def bpb(nats: Tensor, condition: str, when: str) -> float:
        return _finite(stream_curve(nats, segment, text.bytes_per_token)["bpb_all"], condition,
                       f"{text.name!r} ({when} the stream)", check_finite)

    out = {"domain": text.name, "tokens": x.shape[1], "before": {}, "after": {}, "forgetting": {}}
    for condition in ("carried", "dynamic_carried") if dynamic is not None else ("carried",):
        learner = dynamic if condition.startswith("dynamic") else None
        before, _ = _rows(model, x, y, segment, carried=False, carry=carry, dynamic=learner)
        after, _ = _rows(model, x, y, segment, carried=False, carry=carry, dynamic=learner, start=ends[condition])
        out["before"][condition] = bpb(before, condition, "before")
        out["after"][condition] = bpb(after, condition, "after")
        out["forgetting"][condition] = out["after"][condition] - out["before"][condition]
    return out
