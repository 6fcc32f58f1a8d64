"""The base class of every compiled model: embedding, layers, head, streaming state.

Generated code (``nlc compile --emit``) subclasses :class:`NLCModel`: its ``__init__``
builds one mixer per layer and its ``layers(x, state, pos)`` calls them in order. This
class supplies the rest:

* ``init_state(batch)`` -> ``{"pos": 0, <layer>: <mixer state>, ...}``;
  ``next_sequence(state, batch)`` -> the state the next sequence of the same streams starts
  from (``lifetime: stream`` and ``document`` layers carried, the others fresh;
  :mod:`nlc.runtime.lifetime`);
* ``forward(tokens, state=None, targets=None, starts=None)`` -> ``(logits, state)``:
  calling it on consecutive segments with the returned state equals one call on the whole
  sequence; ``starts`` (B, T) bool marks where documents begin, and the call is cut there
  to reset the rows of ``lifetime: document`` layers (:func:`~nlc.runtime.lifetime.reset_rows`);
* the teach signal of CMS levels driven by the task objective (the loss of NL-arXiv Eqs. 70-71):
  the call runs in segments of ``teach_period`` tokens (the gcd of those levels'
  periods), except the generated ``before_teach`` layers (no teach signal reaches them),
  which run once over the call first; after each segment the summed next-token loss of the segment is
  differentiated w.r.t. each such level's output (``autograd.grad``, a stop-gradient
  signal) and handed to the mixer's ``learn``. Without ``targets`` no teach signal
  exists and those levels keep their state. The segments change nothing else: every
  mixer streams exactly at any split (a chunk-frozen memory carries its chunk phase,
  :mod:`nlc.runtime.aligned`), so a memory keeps its full chunk however short the
  teach period;
* an exception inside a layer is re-raised naming the layer, the spec level and the
  YAML line it came from;
* a non-finite value is located after the fact (:meth:`NLCModel.diagnose_non_finite`,
  :class:`~nlc.runtime.diagnose.Probe`): callers check one scalar per step (the loss) and only when it
  is NaN or inf re-run the failing batch with hooks that find the first level whose
  parameters, output or state went non-finite, and at which token.

Notation: B batch, T tokens in the call, D width, V vocabulary.
"""
from __future__ import annotations

import math
import re
import sys
import traceback
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NLCError, NonFiniteError
from ..primitives.layers import RMSNorm
from ..schedule import UpdateSchedule
from .diagnose import Probe, describe, hint
from .lifetime import (CLOCK, carried, lifetime_of, phase_period, reset_rows, split_clock, until_boundary,
                       with_clock)

if TYPE_CHECKING:  # annotations only: the runtime does not import the stages above it
    import networkx as nx

    from ..ir.nodes import ModelIR
    from ..spec import Spec


class LayerError(NLCError):
    """A failure inside a compiled layer, located in the spec."""


def locate_error(model_cls: type, err: BaseException) -> LayerError:
    """Name the layer (and so the spec level and YAML line) whose line in the generated
    source raised ``err``."""
    filename = getattr(sys.modules.get(model_cls.__module__), "__file__", None)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == filename]
    for frame in reversed(frames):
        found = re.search(r"self\.(\w+)\b", frame.line or "")
        if found and found.group(1) in model_cls.LAYERS:
            name = found.group(1)
            return LayerError(f"layer {name}, {model_cls.ORIGINS.get(name, '')}: {type(err).__name__}: {err}")
    return LayerError(f"model {model_cls.__name__}: {type(err).__name__}: {err}")


class NLCModel(nn.Module):
    LAYERS: tuple[str, ...] = ()  # layer attribute names, in call order (set by generated code)
    ORIGINS: dict[str, str] = {}  # layer name -> "level 'x' (file:line)"
    NESTED: dict[str, str] = {}  # layer -> layer of the slower level it is re-initialised from
    SCHEDULE: UpdateSchedule | None = None  # the one clock (nlc.schedule), a literal in generated code
    # What ``nlc.compile`` built the model from (:meth:`record_provenance`); None for a
    # generated module instantiated by hand.
    spec: Spec | None
    ir: ModelIR | None
    source: str | None  # the generated Python that defines this class
    graph: nx.DiGraph | None  # the level graph (nlc.graph.build)

    def __init__(self, *, name: str, vocab: int, width: int, norm: str, tie_embeddings: bool) -> None:
        super().__init__()
        self.name, self.vocab, self.width = name, vocab, width
        self.spec = self.ir = self.source = self.graph = None
        # torch.compile of run and run_from_teach (use_torch_compile), else they run eagerly
        self._compiled_run = self._compiled_from_teach = None
        self.embed = nn.Embedding(vocab, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.final_norm = RMSNorm(width) if norm == "rms" else nn.LayerNorm(width)
        self.head = None if tie_embeddings else nn.Linear(width, vocab, bias=False)

    def record_provenance(self, *, spec: Spec, ir: ModelIR, source: str, graph: nx.DiGraph) -> None:
        """Keep what the model was compiled from (the attributes declared above)."""
        self.spec, self.ir, self.source, self.graph = spec, ir, source, graph

    def use_torch_compile(self, fullgraph: bool = False) -> None:
        """Run :meth:`run` (one pass over a segment, no teach signal) through ``torch.compile``;
        the segment loop and the teach signal stay eager Python around it."""
        self._compiled_run = torch.compile(self.run, fullgraph=fullgraph)
        self._compiled_from_teach = torch.compile(self.run_from_teach, fullgraph=fullgraph)

    # -- generated by nlc.lower -----------------------------------------------------
    def layers(self, x: Tensor, state: dict, pos: int) -> tuple[Tensor, dict]:  # pragma: no cover
        raise NotImplementedError("generated models define layers()")

    # A model with levels that learn from the task loss may split ``layers`` in two: the
    # leading layers that no teach signal reaches (``before_teach``, run once over a call)
    # and the rest (``from_teach``, run once per teach segment). Unsplit: all are the rest.
    def before_teach(self, x: Tensor, state: dict, pos: int) -> tuple[Tensor, dict]:
        return x, state

    def from_teach(self, x: Tensor, state: dict, pos: int) -> tuple[Tensor, dict]:
        return self.layers(x, state, pos)

    # -- state ------------------------------------------------------------------------
    def init_state(self, batch: int) -> dict:
        """Fresh per-sequence state: every layer's fast weights at their initial values; a
        nested CMS level starts from its slower level's initial state (NL-arXiv Eq. 72)."""
        state: dict = {"pos": 0}
        pending = list(self.LAYERS)
        while pending:
            for name in [n for n in pending if self.NESTED.get(n, "") not in pending]:
                source = self.NESTED.get(name)
                state[name] = (self._mixer(name).state_from(split_clock(state[source])[0]) if source
                               else getattr(self, name).init_state(batch))
                if name in self.carried_layers:
                    state[name][CLOCK] = 0
                pending.remove(name)
        return state

    @property
    def carried_layers(self) -> tuple[str, ...]:
        """Layers whose levels outlive a sequence (``lifetime: stream`` or ``document``,
        :mod:`nlc.runtime.lifetime`)."""
        return tuple(self._lifetimes().keys())

    @property
    def document_layers(self) -> tuple[str, ...]:
        """Layers whose levels have ``lifetime: document``: reset where a document begins."""
        return tuple(n for n, (life, _) in self._lifetimes().items() if life == "document")

    @property
    def document_period(self) -> int | None:
        """The grid documents must begin on (:mod:`nlc.data.documents`): the lcm of the
        document layers' phase periods; None without document layers."""
        periods = [period for life, period in self._lifetimes().values() if life == "document"]
        return math.lcm(*periods) if periods else None

    def _lifetimes(self) -> dict[str, tuple[str, int]]:
        """Each carried layer -> (its lifetime, its phase period P), found once (the forward
        and ``next_sequence`` ask at every sequence)."""
        found = self.__dict__.get("_carried")
        if found is None:
            found = self.__dict__["_carried"] = {
                n: (life, phase_period(getattr(self, n))) for n in self.LAYERS
                if (life := lifetime_of(getattr(self, n))) != "sequence"}
        return found

    def next_sequence(self, state: dict, batch: int) -> dict:
        """The state the next sequence of the same streams starts from: ``stream`` and
        ``document`` layers carry theirs (detached: gradients stop at the boundary), every
        other layer starts afresh, positions count from 0 again."""
        fresh = self.init_state(batch)
        for name in self.carried_layers:
            fresh[name] = carried(state[name], state["pos"], self._lifetimes()[name][1])
        return fresh

    @property
    def teach_layers(self) -> tuple[str, ...]:
        return tuple(self._teach_map())

    @property
    def teach_period(self) -> int | None:
        periods = [self.schedule.segment(levels) for levels in self._teach_map().values()]
        return math.gcd(*periods) if periods else None

    @property
    def schedule(self) -> UpdateSchedule:
        if self.SCHEDULE is None:
            raise NLCError(f"model {type(self).__name__} ({self.name!r}) has no update schedule (Model.SCHEDULE): "
                           "its source was generated by an older nlc; generate it again (its REGENERATE "
                           "line, or nlc export from the checkpoint)")
        return self.SCHEDULE

    def _teach_map(self) -> dict[str, tuple[str, ...]]:
        """Each layer with levels that learn from the task loss -> those levels (found once:
        the teach loop asks for them every segment)."""
        found = self.__dict__.get("_teach_levels")
        if found is None:
            found = self.__dict__["_teach_levels"] = {
                name: levels for name in self.LAYERS
                if (levels := tuple(m.level for m in getattr(self, name).modules()
                                    if getattr(m, "teach", False) and hasattr(m, "level")))}
        return found

    def _mixer(self, name: str) -> nn.Module:
        layer = getattr(self, name)
        return getattr(layer, "mixer", layer)

    # -- forward ----------------------------------------------------------------------
    def forward(self, tokens: Tensor, state: dict | None = None, targets: Tensor | None = None,
                starts: Tensor | None = None) -> tuple[Tensor, dict]:
        """``tokens`` (B, T) int64 -> logits (B, T, V). ``targets`` (B, T), -100 = ignore,
        is only needed by CMS levels that learn from the task loss; ``starts`` (B, T) bool,
        True where a document begins, only by ``lifetime: document`` levels."""
        if state is None:
            state = self.init_state(tokens.shape[0])
        if starts is None or not self.document_layers:
            return self._segments(tokens, state, targets)
        cuts = [0, *(torch.nonzero(starts[:, 1:].any(dim=0)).flatten() + 1).tolist(), tokens.shape[1]]
        pieces, fresh = [], None
        for a, b in zip(cuts[:-1], cuts[1:]):
            rows = starts[:, a]
            if bool(rows.any()):
                fresh = fresh if fresh is not None else self.init_state(tokens.shape[0])
                state = {**state, **{n: reset_rows(state[n], fresh[n], rows, state["pos"],
                                                   self._lifetimes()[n][1], n) for n in self.document_layers}}
            logits, state = self._segments(tokens[:, a:b], state, None if targets is None else targets[:, a:b])
            pieces.append(logits)
        return torch.cat(pieces, dim=1), state

    def _segments(self, tokens: Tensor, state: dict, targets: Tensor | None) -> tuple[Tensor, dict]:
        """The call cut at the teach boundaries (module doc). The layers before the first
        teaching one (``before_teach``) run once over the whole call: no teach signal
        reaches them, and they stream exactly, so cutting them would only repeat work."""
        if targets is None or tokens.shape[1] == 0 or self.teach_period is None:
            return self._step(self._compiled_run or self.run, tokens, state)
        x, state = self._step(self.run_before_teach, tokens, state)
        pieces, start = [], 0
        while start < tokens.shape[1]:
            pos = state["pos"]
            stop = min(tokens.shape[1], start + self._until_boundary(state, pos))
            with torch.enable_grad():
                logits, state = self._step(self._compiled_from_teach or self.run_from_teach, x[:, start:stop], state)
                state = self._teach(logits, targets[:, start:stop], state, pos)
            pieces.append(logits)
            start = stop
        return torch.cat(pieces, dim=1), state

    def _step(self, run, inputs: Tensor, state: dict) -> tuple[Tensor, dict]:
        try:
            return run(inputs, state)
        except NLCError:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with the spec location
            raise self._locate(err) from err

    def run(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        """One pass over ``tokens`` with no teach signal: the region ``torch.compile``
        captures (the segment loop around it is Python orchestration, like the schedule)."""
        pos = state["pos"]
        x, state = self.layers(self.embed(tokens), dict(state), pos)
        state["pos"] = pos + tokens.shape[1]
        return self.logits(x), state

    def run_before_teach(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        """The embedding and ``before_teach`` over a whole call; positions do not advance
        (the teach segments that follow advance them)."""
        return self.before_teach(self.embed(tokens), dict(state), state["pos"])

    def run_from_teach(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        """``from_teach`` over one teach segment of ``before_teach``'s output, and the logits."""
        pos = state["pos"]
        x, state = self.from_teach(x, dict(state), pos)
        state["pos"] = pos + x.shape[1]
        return self.logits(x), state

    def logits(self, x: Tensor) -> Tensor:
        x = self.final_norm(x)
        return x @ self.embed.weight.T if self.head is None else self.head(x)

    def _until_boundary(self, state: dict, pos: int) -> int:
        return until_boundary([(state[n].get(CLOCK, 0), self.schedule.segment(levels))
                               for n, levels in self._teach_map().items()], pos)

    def _teach(self, logits: Tensor, targets: Tensor, state: dict, pos: int) -> dict:
        names = self.teach_layers
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                               reduction="sum")
        outs = [state[n]["out"] for n in names]
        deltas = torch.autograd.grad(loss, outs, retain_graph=True, allow_unused=True)
        last = pos + logits.shape[1] - 1  # the segment's last token: levels due after it fire
        for name, out, delta in zip(names, outs, deltas):
            delta = torch.zeros_like(out) if delta is None else delta.detach()
            inner, clock = split_clock(state[name])
            due = self.schedule.fired(self._teach_map()[name], last + (clock or 0))
            state[name] = with_clock(getattr(self, name).learn(inner, delta, pos + (clock or 0), due), clock)
        for name in sorted(self.NESTED, key=self._nesting_depth):  # slowest first: resets cascade
            source, clock = self.NESTED[name], state[name].get(CLOCK)
            inner, source_clock = split_clock(state[source])
            if self.schedule.resets_after(self._mixer(name).level, last + (source_clock or 0)):
                state[name] = with_clock(self._mixer(name).state_from(inner), clock)
        return state

    def _nesting_depth(self, name: str) -> int:
        depth = 0
        while name in self.NESTED:
            name, depth = self.NESTED[name], depth + 1
        return depth

    def _locate(self, err: Exception) -> LayerError:
        return locate_error(type(self), err)

    # -- introspection ----------------------------------------------------------------
    def parameters_by_level(self) -> dict[str, list[nn.Parameter]]:
        """Each parameter under the spec level that owns it; embedding, final norm and
        head under ``""`` (they belong to the outermost level)."""
        owner: dict[int, str] = {}
        for module in self.modules():  # parents before children: children win
            level = getattr(module, "level", None)
            for p in module.parameters(recurse=level is not None):
                owner[id(p)] = level if level is not None else owner.get(id(p), "")
        groups: dict[str, list[nn.Parameter]] = {}
        for p in self.parameters():
            groups.setdefault(owner.get(id(p), ""), []).append(p)
        return groups

    def parameter_counts(self) -> dict[str, int]:
        return {lvl: sum(p.numel() for p in ps) for lvl, ps in self.parameters_by_level().items()}

    # -- non-finite values ------------------------------------------------------------
    def non_finite_levels(self, gradients: bool = False) -> list[str]:
        """The spec levels holding a NaN or infinite parameter (or gradient), in
        :meth:`parameters_by_level` order (``""``: embedding, final norm, head)."""
        bad = []
        for level, params in self.parameters_by_level().items():
            tensors = [p.grad if gradients else p for p in params]
            if any(t is not None and not bool(torch.isfinite(t).all()) for t in tensors):
                bad.append(level)
        return bad

    def diagnose_non_finite(self, found: str, *, step: int | None = None, tokens: Tensor | None = None,
                            targets: Tensor | None = None, gradients: bool = False) -> NonFiniteError:
        """The error to raise after ``found`` (e.g. "non-finite loss at training step 3"):
        the level whose gradients (``gradients=True``), else parameters, else output or
        state on the forward of ``tokens`` (re-run here, from a fresh state, under the
        caller's autocast) went non-finite first, and the spec fields that bound it."""
        site = None
        bad = self.non_finite_levels(gradients)
        if bad:
            site = {"level": bad[0], "what": "gradients" if gradients else "parameters", "also": bad[1:]}
        elif tokens is not None:
            site = self._probe(tokens, targets)
        level = None if site is None else site["level"]
        return NonFiniteError(f"{found}: {describe(self, site)}.", level=level, step=step,
                              position=None if site is None else site.get("position"), hint=hint(self, site))

    def _probe(self, tokens: Tensor, targets: Tensor | None) -> dict | None:
        compiled = self._compiled_run, self._compiled_from_teach  # the eager pass: forward hooks, no torch.compile
        self._compiled_run = self._compiled_from_teach = None
        try:
            with torch.no_grad(), Probe(self) as probe:
                logits, _ = self(tokens, self.init_state(tokens.shape[0]), targets)
        finally:
            self._compiled_run, self._compiled_from_teach = compiled
        return probe.site(logits)
