"""Continuum Memory System (CMS): MLP blocks updated every C tokens by summed gradients.

Public API; the maths lives in :mod:`nlc.primitives.cms_mlp` (block, error signals, summed
gradients), :mod:`nlc.primitives.cms_levels` (chunk schedule, multi-level chains, both
forms) and :mod:`nlc.primitives.cms_state` (state layout). Everything is re-exported here.

Notation::

    B batch   T tokens in the call   C chunk size of a level   Din / Dout block in/out dim
    (CMS blocks are token-wise MLPs on the model stream: x is (B, T, Din), no head axis)
    Dh hidden width                  L number of levels        pos tokens already streamed
    theta   a level's parameters (per-sequence fast state, batch-leading)
    eta_t   the level's learning rate (scalar, per sequence (B,) or per token (B, T))
    delta_t error signal at the block output, dL/dy_t

Update rule (NL-NeurIPS Eqs. 30-31 = NL-arXiv Eqs. 70-71; paper notes §2.1)::

    y_t = MLP(theta_{xi(t)}; x_t)                         xi(t) = start of t's chunk
    theta_{i+1} = theta_i - sum_{t=i-C+1}^{i} eta_t grad_theta l(theta_{xi}; x_t)   if i = 0 mod C
                = theta_i                                                           otherwise

i.e. mini-batch GD with batch = chunk: the per-token gradients are taken at the frozen
chunk-start parameters, *summed* over exactly the C tokens of the chunk (the printed lower
limit ``i-C`` gives C+1 terms; the notes flag it as an off-by-one typo) and applied once at
the boundary. Positions are 1-based in the equation: the chunk ends after the token with
absolute position ``pos + t + 1 = 0 (mod C)``.

Block ``kind`` (``gelu | silu | relu | swiglu``, ``residual``) and error ``signal``: see
:mod:`nlc.primitives.cms_mlp`. ``"local"`` is the associative L2 loss against ``target``
(``None``: the block's own input, so Dout must equal Din); ``"task"`` takes an external teach
signal ``delta = dL_task/dy``. Because the task signal of chunk ``j`` is only known after
the model's loss on it, a compiler runs ``y = cms_read(state, x_chunk)`` -> loss -> ``delta``
-> ``cms_*_chunked(state, x_chunk, delta=delta)`` chunk by chunk; the ``*_chunked`` forms also
accept a whole sequence's ``delta`` when it is known in advance (``local`` needs none).

State: ``dict[str, Tensor]``, all batch-leading: the parameters (``w_in``, ...) and, for
each, a pending gradient sum ``acc.<name>`` (:mod:`nlc.primitives.cms_state`). Initialise
with :func:`cms_init_state` from meta-learned parameters (``expand`` keeps the graph, so
outer gradients reach them). Multi-level states prefix every key with ``level{i}.``.

Partial final chunk (``policy``):

* ``"carry"`` (default): the partial chunk's gradient sum stays in ``acc.*`` and is applied
  when the chunk completes in a later call; pass ``pos`` = tokens already consumed, so
  chunk boundaries sit at absolute multiples of C. Streaming at any split == whole.
* ``"flush"``: the end of the call is a chunk boundary of every level (the partial sum is
  applied now; the next call starts fresh chunks; ``pos`` is ignored).
* ``"drop"``: the partial sum is discarded (``pos`` is ignored; chunks restart at each call).

Variants with several levels (NL-arXiv §7.1; details in :mod:`nlc.primitives.cms_levels`):
``"sequential"`` chain (Eqs. 70-71/73), ``"independent"`` weighted sum ``sum_l w_l MLP_l(x)``
(Eq. 74, ``weights (L,)``), ``"nested"`` chain with slow -> fast re-initialisation (Eq. 72;
the slowest level's initial state is the meta-learned one; :func:`cms_reinit_from` is the
same reset for a compiler that drives the blocks one by one).

Forms: ``*_reference`` loops over tokens and takes each per-token gradient with
``torch.func.grad`` (read as the equation); ``*_chunked`` runs matmuls per chunk (a Python
loop over the union of all levels' boundaries only). Same signature, same results.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from nlc.primitives.cms_levels import POLICIES, SIGNALS, VARIANTS, read_levels, run_levels
from nlc.primitives.cms_mlp import (
    KINDS, LrLike, check_kind, cms_apply_update, cms_chunk_grad, cms_init_params,
    cms_local_delta, cms_mlp, cms_param_shapes, cms_task_surrogate,
)
from nlc.primitives.cms_state import (
    cms_init_levels, cms_init_state, cms_merge_levels, cms_reinit_from, cms_split_levels,
    fast_params,
)

__all__ = [
    "KINDS",
    "POLICIES",
    "VARIANTS",
    "SIGNALS",
    "cms_param_shapes",
    "cms_init_params",
    "cms_init_state",
    "cms_init_levels",
    "cms_split_levels",
    "cms_merge_levels",
    "cms_mlp",
    "cms_read",
    "cms_local_delta",
    "cms_task_surrogate",
    "cms_chunk_grad",
    "cms_apply_update",
    "cms_reinit_from",
    "cms_block_reference",
    "cms_block_chunked",
    "cms_reference",
    "cms_chunked",
    "CMSBlock",
    "ContinuumMemorySystem",
]


# =========================================================================== public forms
def _block_call(form, state, x, chunk, lr, signal, target, delta, pos, policy, kind, residual):
    y, levels = run_levels([dict(state)], x, form=form, chunks=[chunk], lrs=[lr],
                           variant="sequential", weights=None, signal=signal, target=target,
                           delta=delta, pos=pos, policy=policy, kind=kind, residual=residual)
    return y, levels[0]


def _levels_call(form, state, x, **kw):
    y, levels = run_levels(cms_split_levels(state), x, form=form, **kw)
    return y, cms_merge_levels(levels)


def cms_block_chunked(state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
                      signal: str = "local", target: Optional[Tensor] = None,
                      delta: Optional[Tensor] = None, pos: int = 0, policy: str = "carry",
                      kind: str = "gelu", residual: bool = False
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """One CMS block over ``x (B, T, Din)``, chunked form (NL-arXiv Eqs. 70-71).

    Outputs of the tokens of a chunk use the chunk-start parameters; at the end of each
    chunk ``theta <- theta - sum_chunk eta_t grad l_t(theta_chunkstart)`` (one matmul per
    weight, :func:`cms_chunk_grad`). ``signal``/``target``/``delta``/``pos``/``policy``: see
    the module doc. Returns ``(y (B, T, Dout), new_state)``.
    """
    return _block_call("chunked", state, x, chunk, lr, signal, target, delta, pos, policy,
                       kind, residual)


def cms_block_reference(state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
                        signal: str = "local", target: Optional[Tensor] = None,
                        delta: Optional[Tensor] = None, pos: int = 0, policy: str = "carry",
                        kind: str = "gelu", residual: bool = False
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of :func:`cms_block_chunked` (same signature and results): for each
    token read ``y_t = MLP(theta; x_t)``, add ``eta_t grad l_t(theta)`` (``torch.func.grad``)
    to the pending sum, and apply the sum when ``pos + t + 1 = 0 (mod C)``."""
    return _block_call("reference", state, x, chunk, lr, signal, target, delta, pos, policy,
                       kind, residual)


def cms_chunked(state: Mapping[str, Tensor], x: Tensor, *, chunks: Sequence[int],
                lrs: Sequence[LrLike], variant: str = "sequential",
                weights: Optional[Tensor] = None, signal: str = "local",
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None, pos: int = 0,
                policy: str = "carry", kind: str = "gelu", residual: bool = False
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Multi-level CMS (``level{i}.*`` state), chunked form; see the module doc for
    ``variant`` (sequential Eqs. 70-71, independent Eq. 74, nested Eq. 72).

    Within each stretch between consecutive boundaries of any level, every level reads with
    its current parameters and adds its summed gradient (matmuls); at a level's boundary its
    pending sum is applied. Returns ``(y (B, T, Dout), new_state)``.
    """
    return _levels_call("chunked", state, x, chunks=chunks, lrs=lrs, variant=variant,
                        weights=weights, signal=signal, target=target, delta=delta, pos=pos,
                        policy=policy, kind=kind, residual=residual)


def cms_reference(state: Mapping[str, Tensor], x: Tensor, *, chunks: Sequence[int],
                  lrs: Sequence[LrLike], variant: str = "sequential",
                  weights: Optional[Tensor] = None, signal: str = "local",
                  target: Optional[Tensor] = None, delta: Optional[Tensor] = None,
                  pos: int = 0, policy: str = "carry", kind: str = "gelu",
                  residual: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of :func:`cms_chunked` (same signature and results). The task-signal
    gradients of all levels are ``torch.func.grad`` of ``<delta_t, y_t(theta_1..theta_L)>``."""
    return _levels_call("reference", state, x, chunks=chunks, lrs=lrs, variant=variant,
                        weights=weights, signal=signal, target=target, delta=delta, pos=pos,
                        policy=policy, kind=kind, residual=residual)


def cms_read(state: Mapping[str, Tensor], x: Tensor, *, variant: str = "sequential",
             weights: Optional[Tensor] = None, kind: str = "gelu", residual: bool = False
             ) -> Tensor:
    """Outputs with the current parameters, no update: the read a compiler runs before the
    task loss of a chunk (valid for tokens inside the current chunk of every level). Takes a
    single-block state (unprefixed) or a multi-level one (``level{i}.*``)."""
    check_kind(kind)
    if not any(k.startswith("level0.") for k in state):
        return cms_mlp(state, x, kind=kind, residual=residual)
    levels = [fast_params(lv) for lv in cms_split_levels(state)]
    if variant not in VARIANTS:
        raise ValueError(f"unknown CMS variant {variant!r}")
    if variant == "independent" and weights is None:
        raise ValueError("independent CMS needs weights")
    return read_levels(levels, x, variant=variant, weights=weights, kind=kind,
                       residual=residual)[0]


# =========================================================================== modules
def _as_param_dict(params: Mapping[str, Tensor]) -> nn.ParameterDict:
    return nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})


class CMSBlock(nn.Module):
    """One CMS block with meta-learned initial parameters (a CMS level, NL-arXiv Eqs. 70-71).

    ``init_state(batch)`` expands the meta parameters into per-sequence fast state;
    ``forward(x, state=None, *, pos=0, target=None, delta=None) -> (y, new_state)`` runs
    :func:`cms_block_chunked` (``state=None``: a fresh state, ``pos`` should then be 0).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: Optional[int] = None, *, chunk: int,
                 lr: float = 1e-2, kind: str = "gelu", bias: bool = True,
                 residual: bool = False, signal: str = "local", policy: str = "carry") -> None:
        super().__init__()
        if signal not in SIGNALS or policy not in POLICIES:
            raise ValueError(f"bad signal {signal!r} or policy {policy!r}")
        self.chunk, self.kind, self.residual = chunk, kind, residual
        self.signal, self.policy = signal, policy
        self.init = _as_param_dict(cms_init_params(d_in, d_hidden, d_out, kind=kind, bias=bias))
        self.register_buffer("lr", torch.tensor(float(lr)))

    def init_state(self, batch: int) -> dict[str, Tensor]:
        return cms_init_state(dict(self.init.items()), batch)

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None, *, pos: int = 0,
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        state = self.init_state(x.shape[0]) if state is None else state
        return cms_block_chunked(state, x, chunk=self.chunk, lr=self.lr.to(x.dtype),
                                 signal=self.signal, target=target, delta=delta, pos=pos,
                                 policy=self.policy, kind=self.kind, residual=self.residual)


class ContinuumMemorySystem(nn.Module):
    """Several CMS levels (``variant``: sequential / independent / nested; module doc).

    * sequential: level l maps ``dims[l] -> dims[l+1]`` (``dims`` has L+1 entries; an int
      means every level is ``d -> d``).
    * independent: every level ``d -> d``; learned aggregation weights ``agg`` (init 1/L).
    * nested: a chain of ``d -> d`` levels (any order, e.g. fast -> slow) with Eq. 72
      resets; one set of meta-learned parameters (the slowest level's initial state),
      every level starts from it.
    """

    def __init__(self, dims: Union[int, Sequence[int]], d_hidden: int, *,
                 chunks: Sequence[int], lrs: Union[float, Sequence[float]] = 1e-2,
                 variant: str = "sequential", kind: str = "gelu", bias: bool = True,
                 residual: bool = False, signal: str = "local", policy: str = "carry") -> None:
        super().__init__()
        n = len(chunks)
        if variant not in VARIANTS or signal not in SIGNALS or policy not in POLICIES:
            raise ValueError(f"bad variant {variant!r}, signal {signal!r} or policy {policy!r}")
        if isinstance(dims, int):
            dims = [dims] * (n + 1)
        if len(dims) != n + 1:
            raise ValueError(f"dims needs {n + 1} entries for {n} levels")
        if variant != "sequential" and len(set(dims)) != 1:
            raise ValueError(f"{variant} CMS needs every level d -> d")
        self.chunks, self.variant, self.kind = list(chunks), variant, kind
        self.residual, self.signal, self.policy = residual, signal, policy
        n_sets = 1 if variant == "nested" else n
        self.inits = nn.ModuleList(
            _as_param_dict(cms_init_params(dims[l], d_hidden, dims[l + 1], kind=kind, bias=bias))
            for l in range(n_sets))
        lrs = [float(lrs)] * n if isinstance(lrs, (int, float)) else [float(v) for v in lrs]
        self.register_buffer("lrs", torch.tensor(lrs))
        self.agg = nn.Parameter(torch.full((n,), 1.0 / n)) if variant == "independent" else None

    def init_state(self, batch: int) -> dict[str, Tensor]:
        sets = [dict(pd.items()) for pd in self.inits]
        if self.variant == "nested":
            sets = sets * len(self.chunks)
        return cms_init_levels(sets, batch)

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None, *, pos: int = 0,
                target: Optional[Tensor] = None, delta: Optional[Tensor] = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        state = self.init_state(x.shape[0]) if state is None else state
        lrs = [self.lrs[l].to(x.dtype) for l in range(len(self.chunks))]
        return cms_chunked(state, x, chunks=self.chunks, lrs=lrs, variant=self.variant,
                           weights=self.agg, signal=self.signal, target=target, delta=delta,
                           pos=pos, policy=self.policy, kind=self.kind, residual=self.residual)
