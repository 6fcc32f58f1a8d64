"""Output scales at initialisation: how large each level's output and state are before any
training, so a spec that starts near overflow (or with a dead level) shows before it runs.

Notation: B batch, T tokens, D model width; RMS(x) = sqrt(mean over every entry of x^2).

One forward call of random tokens (with targets, so task-driven CMS levels take their
in-context steps) under forward hooks on every mixer (a module with a ``level``) whose output
is aligned with its input tokens, (B, T, D) -> (B, T, D). Per mixer, over its calls (a model
with task-driven CMS levels calls each mixer once per teach segment): the largest RMS of its
input and output, the smallest and largest output / input ratio (its gain), the largest RMS
of the floating-point tensors of the state it returns, and whether all are finite. Mixers in pre-norm residual blocks read RMS ~ 1 inputs, so the ratio
output / input is the level's gain at initialisation: :data:`BAND` is the range a healthy
spec keeps (a memory read or an MLP scales its input by O(1); a gain of 1e2 compounds to
overflow within a few layers or in-context steps, and one of 1e-3 is a level whose output
the residual stream cannot see).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

BAND = (1e-3, 1e2)
"""The accepted range of a mixer's output RMS over its input RMS at initialisation."""


@dataclass(frozen=True)
class LevelScale:
    """One mixer at initialisation, over its ``calls`` (``state_rms`` None: no float state)."""

    layer: str
    level: str
    calls: int
    input_rms: float
    output_rms: float
    gain_min: float
    gain_max: float
    state_rms: float | None

    @property
    def finite(self) -> bool:
        values = (self.input_rms, self.output_rms, self.gain_min, self.gain_max)
        return all(math.isfinite(x) for x in values) and (self.state_rms is None or math.isfinite(self.state_rms))

    @property
    def in_band(self) -> bool:
        return self.finite and BAND[0] <= self.gain_min and self.gain_max <= BAND[1]


def _merge(old: LevelScale | None, new: LevelScale) -> LevelScale:
    if old is None:
        return new
    states = [x for x in (old.state_rms, new.state_rms) if x is not None]
    state = max(states, key=lambda x: math.inf if math.isnan(x) else x) if states else None
    return LevelScale(old.layer, old.level, old.calls + 1, max(old.input_rms, new.input_rms),
                      max(old.output_rms, new.output_rms), min(old.gain_min, new.gain_min),
                      max(old.gain_max, new.gain_max), state)


def _rms(x: Tensor) -> float:
    return x.detach().double().pow(2).mean().sqrt().item() if x.numel() else 0.0


def _state_rms(state: object) -> float | None:
    """The largest RMS of the floating-point tensors in a (nested) state dict (nan if any
    is nan); None if there are none."""
    values = []
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, Tensor) and item.is_floating_point() and item.numel():
            values.append(_rms(item))
    return max(values, key=lambda x: math.inf if math.isnan(x) else x) if values else None


def init_scales(model: nn.Module, batch: int, seq_len: int, seed: int = 0) -> tuple[list[LevelScale], float]:
    """Every aligned mixer's :class:`LevelScale` in call order, and the initial loss (random
    tokens from a generator seeded with ``seed``; uniform logits give ln(vocab))."""
    vocab = model.embed.num_embeddings
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq_len + 1), generator=g).to(model.embed.weight.device)
    found: dict[int, LevelScale] = {}
    handles = []

    def record(layer: str, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        y, state = (output[0], output[1]) if isinstance(output, tuple) and len(output) == 2 else (output, None)
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, Tensor) and isinstance(y, Tensor) and x.dim() == y.dim() == 3 and x.shape == y.shape:
            x_rms, y_rms = _rms(x), _rms(y)
            gain = y_rms / x_rms if x_rms > 0 else math.inf
            call = LevelScale(layer, module.level, 1, x_rms, y_rms, gain, gain, _state_rms(state))
            found[id(module)] = _merge(found.get(id(module)), call)

    for name in model.LAYERS:
        for module in getattr(model, name).modules():
            if getattr(module, "level", None) is not None:
                handles.append(module.register_forward_hook(partial(record, name), with_kwargs=True))
    try:
        with torch.enable_grad():
            logits, _ = model(tokens[:, :-1], targets=tokens[:, 1:])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).item()
    finally:
        for handle in handles:
            handle.remove()
    return list(found.values()), loss


def format_scales(scales: list[LevelScale], loss: float, vocab: int) -> str:
    """The table ``nlc show --init-stats`` prints."""
    lines = [f"initial loss {loss:.4f} (uniform: ln {vocab} = {math.log(vocab):.4f}); "
             f"gain band [{BAND[0]:g}, {BAND[1]:g}]",
             f"{'layer':<28} {'level':<16} {'calls':>5} {'in RMS':>9} {'out RMS':>9} {'gain min':>9} "
             f"{'gain max':>9} {'state RMS':>9}  in band"]
    for s in scales:
        state = "-" if s.state_rms is None else f"{s.state_rms:.3g}"
        lines.append(f"{s.layer:<28} {s.level:<16} {s.calls:>5} {s.input_rms:>9.3g} {s.output_rms:>9.3g} "
                     f"{s.gain_min:>9.3g} {s.gain_max:>9.3g} {state:>9}  {'yes' if s.in_band else 'NO'}")
    return "\n".join(lines) + "\n"
