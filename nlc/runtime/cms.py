"""Runtime mixer of a CMS level: an ``mlp`` level with ``period: C`` (NL-arXiv Eqs. 70-71).

Notation::

    B batch   T tokens in the call   D model width   Dh hidden width (``ir.hidden``)
    C the level's period (``ir.period``)   pos tokens this state consumed before the call
    theta   the block's fast weights (per sequence, in the state)   eta   the level's lr

The block ``MLP(theta; x)`` is :func:`nlc.primitives.cms.cms_mlp` of kind ``ir.activation``
(swiglu | gelu | silu | relu), ``D -> Dh -> D``, no biases (the convention ``nlc graph``
counts). Its weights are per-sequence *fast state*, initialised from meta-learned
``nn.Parameter`` s (``mixer.init``; ``init: learned``, default) or zeros (``init: zero``),
and updated every C tokens by the summed per-token gradients taken at the chunk-start
weights (mini-batch GD with batch = chunk)::

    theta <- theta - sum_{t in chunk} eta_t grad_theta l_t(theta_chunkstart)   after token
                                                                            pos + t + 1 = 0 (mod C)

Chunk boundaries sit at absolute multiples of C (the primitives' ``carry`` policy: the
partial chunk's sum waits in ``acc.*`` until the chunk completes in a later call).

State (``dict[str, Tensor]``, batch-leading, the layout of
:func:`nlc.primitives.cms.cms_init_state`): the weights ``w_gate, w_up, w_out`` (swiglu) or
``w_in, w_out`` (B, ...), and their pending sums ``acc.<name>``. A ``task`` mixer's forward
adds ``"in"`` (its input x, (B, T, D)), ``"out"`` (its output y, (B, T, D), in the
autograd graph) and the read's hidden activations (``"hidden_pre"`` [, ``"hidden_up"``],
``"hidden"``, (B, T, Dh)); ``learn`` consumes and drops them (the summed gradient is taken
at the weights the read used, so it reuses the read's activations instead of recomputing
them: two matmuls fewer per level and segment, and their backward).

Objectives (``ir.objective.kind``):

* ``task`` (the LM-loss gradient at the block output, as the loss of NL-arXiv Eqs. 70-71,
  which the paper leaves open): ``teach = True``.
  ``forward`` only *reads* (``y = MLP(theta; x)`` with the current weights, no update) and
  records ``"in"``/``"out"``; the model then computes ``delta = dLoss/d out`` (a stop-gradient
  signal) and calls ``learn(state, delta, pos, due)``, which adds
  ``sum_t eta_t J_theta(x_t)^T delta_t`` (:func:`~nlc.primitives.cms.cms_chunk_grad`) to the
  pending sums and applies them (:func:`~nlc.primitives.cms.cms_apply_update`) when the
  update schedule says the level is ``due`` (the call ends a chunk). The segment of one
  forward/learn call must not cross a chunk boundary (``pos % C + T <= C``): the read used
  the weights of the chunk it started in. The model guarantees that by running in segments
  of the gcd of the task periods; ``learn`` raises otherwise. ``forward`` alone (no ``learn``, e.g. frozen evaluation) is valid at any length.
* ``l2`` (local associative loss, NL-arXiv Eq. 70 with ``l_t = ||MLP(theta; x_t) - x_t||^2``):
  the *target is the mixer's own input x* (the normalised block input: the block learns to
  reconstruct its input, so it must be ``D -> D``). Everything happens inside ``forward``
  (:func:`~nlc.primitives.cms.cms_block_chunked`, ``signal="local"``, ``target=None``);
  streaming is exact at any split.

Learning rate (``ir.rule.lr``): the one knob implementation, :class:`nlc.runtime.knobs.Knob`
with one head: constant (a float); ``learned`` -- ``max * sigmoid(r)``, one scalar ``r``
starting at ``init``; data-dependent ``from: input`` -- ``eta_t = max * sigmoid(w . x_t + b)``
(``D + 1`` parameters, ``w = 0``, ``b = logit(init / max)`` so it starts at ``init``).
Parameters of the lr belong to this level.

Flush policy (``ir.flush``): ``forward`` / ``learn`` always keep chunk boundaries at absolute
multiples of C (``carry``), so streaming equals one call. ``flush`` / ``drop`` would act where the
*sequence* ends: ``finish(state)`` applies (``flush``) or discards (``drop``) the pending
partial-chunk sums (``carry``: unchanged), boundaries staying at absolute multiples of C.
The model never calls it (a streamed sequence has no end it can see), so the spec refuses
``flush`` / ``drop`` (:mod:`nlc.capabilities`); ``finish`` serves direct callers.

What this mixer builds is the CMS part of the capability table (:mod:`nlc.capabilities`):
objectives ``task`` and ``l2`` (no window, no ``self_target``), rule ``gd`` without momentum,
retention, weight decay or gradient guards, an lr that is constant, learned or
``from: input`` per token; initial states ``learned``, ``zero`` and ``from`` (nested CMS,
NL-arXiv Eq. 72: the mixer cannot see the other level, so the model wires it with
:meth:`CMSMixer.state_from`; ``init_state`` raises). Validation refuses everything else, so
the constructor's check is an assertion of that table. ``init: {copy: LEVEL}`` is refused too.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import torch
from torch import Tensor, nn

from ..capabilities import assert_capable, cms_init_refusals, cms_refusals
from ..ir.nodes import MLPIR
from ..ir.resolve import cms_case
from ..primitives.cms import (
    cms_apply_update,
    cms_block_chunked,
    cms_chunk_grad,
    cms_forward,
    cms_init_params,
    cms_init_state,
    cms_param_shapes,
)
from .knobs import Knob
from .lifetime import TEACH_KEYS

__all__ = ["CMSMixer"]

_ACC = "acc."  # prefix of the pending gradient sums (nlc.primitives.cms state layout)
_KINDS = ("swiglu", "gelu", "silu", "relu")
_POLICIES = ("carry", "flush", "drop")


def _core(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The weights and pending sums, without the teach keys."""
    return {k: v for k, v in state.items() if k not in TEACH_KEYS}


def _weights(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k not in TEACH_KEYS and not k.startswith(_ACC)}


class CMSMixer(nn.Module):
    """One CMS level (see the module docstring for maths, state and protocol)."""

    def __init__(self, ir: MLPIR, width: int) -> None:
        super().__init__()
        name = ir.name
        self.level = name
        if not ir.period or ir.period < 1:
            raise ValueError(f"mlp level {name!r} has period 'never': it is a frozen MLP "
                             "(use MLPMixer), not a CMS level")
        if ir.rule is None or ir.objective is None:
            raise ValueError(f"CMS level {name!r} needs an update rule and an objective")
        if ir.activation not in _KINDS:
            raise ValueError(f"CMS level {name!r}: unknown activation {ir.activation!r}")
        if ir.flush not in _POLICIES:
            raise ValueError(f"CMS level {name!r}: unknown flush policy {ir.flush!r}")
        self._check_supported(ir)
        self.period, self.kind, self.policy = ir.period, ir.activation, ir.flush
        self.width, self.hidden = width, ir.hidden
        self.objective = ir.objective.kind
        self.teach = self.objective == "task"
        # the teach keys of a read's hidden activations (cms_forward's cache, in its order)
        self._cache_keys = (("hidden_pre", "hidden_up", "hidden") if self.kind == "swiglu"
                            else ("hidden_pre", "hidden"))
        self.init_kind, self.init_level = ir.init, ir.init_level
        self.lifetime = ir.lifetime  # sequence | document | stream (nlc.runtime.lifetime)

        # learning rate: the one knob implementation (nlc.runtime.knobs), one "head"
        self.lr_knob = Knob(ir.rule.lr, width, 1, role="lr", chunk=ir.period, owner=name)

        # meta-learned initial weights
        if ir.init == "learned":
            params = cms_init_params(width, ir.hidden, width, kind=ir.activation, bias=False)
            self.init = nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})
        else:  # zero, from: not parameters of this level
            self.init = None
        self._shapes = cms_param_shapes(width, ir.hidden, width, kind=ir.activation, bias=False)
        # a device/dtype anchor for states built without parameters (init zero / from)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @staticmethod
    def _check_supported(ir: MLPIR) -> None:
        """The capability table's CMS rows (validation refuses the rest). ``flush`` is left
        out: this mixer applies every policy in :meth:`finish`; the table refuses the
        policies the model never triggers."""
        if ir.init not in ("learned", "zero", "copy", "from"):
            raise ValueError(f"CMS level {ir.name!r}: unknown init {ir.init!r}")
        if ir.rule.lr.complement:
            raise ValueError(f"CMS level {ir.name!r}: the lr knob cannot be a complement (forget) gate")
        case = replace(cms_case(ir), flush="carry")
        assert_capable(f"CMS level {ir.name!r} ({ir.origin})",
                       cms_refusals(case) + cms_init_refusals(ir.init))

    # ------------------------------------------------------------------ state
    def init_state(self, batch: int) -> dict[str, Tensor]:
        if self.init_kind == "from":
            raise RuntimeError(
                f"CMS level {self.level!r}: 'init: {{from: {self.init_level}}}' (nested CMS, "
                f"NL-arXiv Eq. 72) needs level {self.init_level!r}'s state, which this mixer "
                "cannot see; the model builds it with CMSMixer.state_from(source_state)")
        if self.init is not None:
            return cms_init_state(dict(self.init.items()), batch)
        a = self._anchor
        zeros = {k: a.new_zeros(s) for k, s in self._shapes.items()}
        return cms_init_state(zeros, batch)

    def state_from(self, source_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A fresh state whose weights are ``source_state``'s (another CMS level of the same
        shape, e.g. the next slower level of a nested CMS, NL-arXiv Eq. 72) and no pending sums."""
        out: dict[str, Tensor] = {}
        for k, shape in self._shapes.items():
            v = source_state[k]
            if tuple(v.shape[1:]) != tuple(shape):
                raise ValueError(f"CMS level {self.level!r}: weight {k!r} has shape "
                                 f"{tuple(shape)}, source has {tuple(v.shape[1:])}")
            out[k] = v
        for k in self._shapes:
            out[_ACC + k] = torch.zeros_like(out[k])
        return out

    def lr(self, x: Tensor) -> Tensor | float:
        """The step size for the tokens ``x (B, T, D)``: the constant as a float (exact in
        every dtype), else the knob's gate ``(B, T)``."""
        if self.lr_knob.kind == "constant":
            return self.lr_knob.value
        return self.lr_knob(x)[0][:, 0]

    # ------------------------------------------------------------------ forward / learn
    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int
                ) -> tuple[Tensor, dict[str, Tensor]]:
        core = _core(state)
        if self.teach:
            y, cache = cms_forward(core, x, kind=self.kind)
            new = dict(core)
            new["in"], new["out"] = x, y
            new.update(zip(self._cache_keys, cache))
            return y, new
        return cms_block_chunked(core, x, chunk=self.period, lr=self.lr(x), signal="local",
                                 target=None, pos=pos, policy="carry", kind=self.kind)

    def learn(self, state: dict[str, Tensor], delta: Tensor, pos: int, due: bool) -> dict[str, Tensor]:
        """Teach step of a ``task`` level (module docstring): ``delta = dLoss/d state["out"]``
        for the tokens of the last forward call, which started after ``pos`` tokens; ``due``:
        the update schedule fires this level after the call's last token
        (:meth:`nlc.schedule.UpdateSchedule.fired`), so the pending sums are applied."""
        if not self.teach:
            raise RuntimeError(f"CMS level {self.level!r} has objective {self.objective!r}; "
                               "only 'task' levels learn from a teach signal")
        x = state["in"]
        T = x.shape[1]
        core = _core(state)
        if T == 0:
            return core
        if tuple(delta.shape) != tuple(x.shape):
            raise ValueError(f"CMS level {self.level!r}: delta has shape {tuple(delta.shape)}, "
                             f"the last forward's output has {tuple(x.shape)}")
        phase = pos % self.period
        if phase + T > self.period:
            raise ValueError(
                f"CMS level {self.level!r} (period {self.period}): the forward call of tokens "
                f"{pos}..{pos + T - 1} crosses a chunk boundary; drive task-CMS levels in "
                "segments that do not (e.g. of the gcd of their periods)")
        weights = _weights(core)
        cache = tuple(state[k] for k in self._cache_keys) if self._cache_keys[0] in state else None
        g = cms_chunk_grad(weights, x, delta.detach().to(x.dtype), self.lr(x), kind=self.kind, cache=cache)
        new = dict(core)
        for k, gk in g.items():
            new[_ACC + k] = core[_ACC + k] + gk
        if due:  # the schedule fires the level: theta <- theta - sum
            new = cms_apply_update(new, {k: new[_ACC + k] for k in g})
            for k in g:
                new[_ACC + k] = torch.zeros_like(new[_ACC + k])
        return new

    def finish(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """End of a sequence: apply (``flush``) or discard (``drop``) the pending partial-chunk
        sums; ``carry`` keeps them. Drops the teach keys."""
        core = _core(state)
        if self.policy == "carry":
            return core
        names = list(_weights(core))
        if self.policy == "flush":
            core = cms_apply_update(core, {k: core[_ACC + k] for k in names})
        for k in names:
            core[_ACC + k] = torch.zeros_like(core[_ACC + k])
        return core

    def extra_repr(self) -> str:
        return (f"level={self.level!r}, period={self.period}, kind={self.kind!r}, "
                f"objective={self.objective!r}, lr={self.lr_knob.kind}, init={self.init_kind!r}, "
                f"flush={self.policy!r}")
