"""Locating a non-finite value in a compiled model (:meth:`NLCModel.diagnose_non_finite`).

Callers check one scalar per step (the loss); only when it is NaN or inf the failing batch is
re-run under :class:`Probe`, forward hooks that find the first level whose output or state
went non-finite, and at which token; :func:`describe` says where in words and :func:`hint`
names the spec fields that bound that level.

Notation: B batch, T tokens in the call.
"""
from __future__ import annotations

import math
import re
from functools import partial

import torch
from torch import Tensor, nn

from ..errors import NonFiniteError
from ..graph.validate import validate
from ..spec.overrides import apply_overrides


def non_finite_error(model: nn.Module, found: str, **where) -> NonFiniteError:
    """:meth:`NLCModel.diagnose_non_finite` for a compiled model, a bare error for any other."""
    diagnose = getattr(model, "diagnose_non_finite", None)
    return diagnose(found, **where) if diagnose is not None else NonFiniteError(f"{found}.", step=where.get("step"))


# -- locating a non-finite value ------------------------------------------------------
class Probe:
    """Forward hooks on every layer and on every mixer inside it (a module with a ``level``)
    that record where a call's output or returned state first holds a NaN or inf.

    Outputs are ranked by (token position, layer index, mixer before its layer): the model
    is causal, so the earliest token, and at that token the earliest layer, is where the
    value was born, not where it spread to. A module whose output is not aligned with its
    input tokens (persistent tokens, MAC's memory read) has no position and ranks last."""

    def __init__(self, model: "NLCModel") -> None:
        self.model, self.handles = model, []
        self.outputs: list[tuple[float, int, int, dict]] = []
        self.states: dict[int, dict] = {}

    def __enter__(self) -> "Probe":
        for index, name in enumerate(self.model.LAYERS):
            layer = getattr(self.model, name)
            for module in layer.modules():
                level = getattr(module, "level", None)
                if module is layer or level is not None:
                    who = {"layer": name, "level": level or _layer_levels(self.model, name)[0],
                           "mixer": module is not layer}
                    self.handles.append(module.register_forward_hook(partial(self._record, index, who),
                                                                     with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _record(self, index: int, who: dict, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        y, state = (output[0], output[1]) if isinstance(output, tuple) and len(output) == 2 else (output, None)
        x = args[0] if args else None
        pos = args[2] if len(args) > 2 else kwargs.get("pos", 0)
        if isinstance(state, dict) and id(module) not in self.states:
            keys = [k for k, v in _tensors(state) if not bool(torch.isfinite(v).all())]
            if keys:
                self.states[id(module)] = {**who, "what": "state", "keys": keys, "index": index}
        if not isinstance(y, Tensor) or not y.is_floating_point() or bool(torch.isfinite(y).all()):
            return
        site = {**who, "what": "output", "module": id(module)}
        aligned = isinstance(x, Tensor) and x.dim() == y.dim() == 3 and x.shape[:2] == y.shape[:2]
        if aligned and isinstance(pos, int):
            site.update(_first_bad_token(y, pos))
        self.outputs.append((site.get("position", math.inf), index, 0 if who["mixer"] else 1, site))

    def site(self, logits: Tensor) -> dict | None:
        """The first non-finite output (with its module's non-finite state keys), else the
        first non-finite state in call order, else non-finite logits (final norm / head)."""
        if self.outputs:
            site = min(self.outputs, key=lambda e: e[:3])[3]
            state = self.states.get(site.pop("module"))
            return {**site, "keys": state["keys"]} if state else site
        if self.states:
            return min(self.states.values(), key=lambda s: s["index"])
        if not bool(torch.isfinite(logits).all()):
            return {"level": "", "layer": None, "what": "logits", **_first_bad_token(logits, 0)}
        return None


def _tensors(state: dict, prefix: str = ""):
    for key, value in state.items():
        if isinstance(value, dict):
            yield from _tensors(value, f"{prefix}{key}.")
        elif isinstance(value, Tensor) and value.is_floating_point():
            yield prefix + key, value


def _first_bad_token(y: Tensor, pos: int) -> dict:
    """``{"position": pos + t, "row": b}`` of the first token (then row) of ``y`` (B, T, ...)
    holding a non-finite value."""
    bad = ~torch.isfinite(y.detach()).flatten(2).all(-1)  # (B, T)
    t = int(bad.any(0).nonzero()[0])
    return {"position": pos + t, "row": int(bad[:, t].nonzero()[0])}


def _layer_levels(model: "NLCModel", layer: str) -> list[str]:
    """The spec levels a layer applies, from its ``ORIGINS`` text ("level 'a', 'b' (...)")."""
    return re.findall(r"'([^']+)'", model.ORIGINS.get(layer, "").split(" (")[0]) or [""]


def describe(model: "NLCModel", site: dict | None) -> str:
    """Where ``site`` is, in words: level, layer and YAML lines, token, state keys."""
    if site is None:
        return ("the failing batch re-ran finite here (a value that depends on the device or on the order of "
                "operations?)")
    level = site["level"]
    name = f"level {level!r}" if level else "the embedding / final norm / head"
    if site["what"] in ("parameters", "gradients"):
        others = ", ".join(repr(x) if x else "the embedding / final norm / head" for x in site["also"])
        return f"the {site['what']} of {name}{f' (also {others})' if others else ''} are non-finite"
    origin = model.ORIGINS.get(site.get("layer") or "", "")
    if origin:  # "level 'x' (layer at F:L; level at F:L)" -> "(layer b0_r1_x at F:L; level at F:L)"
        name += " (" + origin[origin.find("(") + 1:].replace("layer at", f"layer {site['layer']} at", 1)
    elif site.get("layer"):
        name += f" (layer {site['layer']})"
    text = f"first in {name}: its {site['what']}"
    if site["what"] == "state":
        return f"{text} ({', '.join(site['keys'][:6])}) is non-finite"
    text += " is non-finite"
    if "position" in site:
        text += f" from token {site['position']} (batch row {site['row']})"
    if site.get("keys"):
        text += f", and so is its state ({', '.join(site['keys'][:6])})"
    return text


def _accepted(model: "NLCModel", override: str) -> bool:
    """Whether the spec ``model`` was compiled from stays valid with ``override``: a hint
    offers only settings the validator accepts (HOPE's and the exact rules' updates take no
    clip, a CMS level none either). True for a model without its spec."""
    raw = getattr(getattr(model, "spec", None), "raw", None)
    return raw is None or validate(apply_overrides(raw, [override]))[0] is not None


def hint(model: "NLCModel", site: dict | None) -> str:
    """The spec fields that bound the blamed level: its inner update (clip, lr), its keys,
    its layer's norm, and the outer level that trains it (lr, grad clip)."""
    ir = getattr(model, "ir", None)
    if ir is None:
        return "lower the learning rates or clip the gradients"
    levels = ir.levels
    level = levels.get(site["level"]) if site else None
    tips = []
    rule = getattr(level, "rule", None)
    if rule is not None:
        path = f"levels.{level.name}.update"
        if rule.grad_clip is not None:
            tips.append(f"lower {path}.grad_clip (now {rule.grad_clip:g})")
        elif _accepted(model, f"{path}.grad_clip=1.0"):
            tips.append(f"set {path}.grad_clip: 1.0 (none now)")
        lr = {"constant": (f"{path}.lr", rule.lr.init), "learned": (f"{path}.lr.learned", rule.lr.init),
              "data": (f"{path}.lr.max", rule.lr.max)}.get(rule.lr.kind)
        if lr:
            tips.append(f"lower {lr[0]} (now {lr[1]:g})")
        keys = getattr(level, "keys", None)
        if getattr(level, "memory", "") == "mlp" and keys is not None and keys.source == "input" and not keys.l2_norm:
            tips.append(f"l2-normalise its keys (levels.{level.name}.keys.norm: l2)")
    if getattr(level, "type", "") == "attention" and not level.qk_norm:
        tips.append(f"set levels.{level.name}.qk_norm: true")
    layer = next((lay for lay in ir.layers if lay.name == (site or {}).get("layer")), None)
    if layer is not None and layer.norm == "none":
        tips.append(f"give its layer a norm (norm: rms, the layer at {layer.origin})")
    optimizers = {n: lv for n, lv in levels.items() if lv.type == "optimizer"}
    outer = optimizers.get(getattr(level, "outer", None)) or max(optimizers.values(), key=lambda o: o.steps)
    tips.append(f"lower the outer lr levels.{outer.name}.lr (now {outer.lr:g})")
    tips.append(f"set levels.{outer.name}.grad_clip: 1.0 (none now)" if outer.grad_clip is None
                else f"lower levels.{outer.name}.grad_clip (now {outer.grad_clip:g})")
    return "; ".join(tips) + "."
