"""Continuum Memory System (CMS) as modules: meta-learned initial parameters around the
chunked form.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch   T tokens   L number of levels   d / Din / Dout block widths   Dh hidden width
    C_l       chunk size of level l   theta_0  the meta-learned initial parameters

:class:`CMSBlock` is one level (NL-arXiv Eqs. 70-71), :class:`ContinuumMemorySystem` several
(sequential NL-arXiv Eqs. 70-71/73, independent NL-arXiv Eq. 74, nested NL-arXiv Eq. 72);
both expand their parameters into per-sequence fast state and run :mod:`~nlc.primitives.cms.chunk`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .chunk import cms_block_chunked, cms_chunked
from .levels import POLICIES, SIGNALS, VARIANTS
from .mlp import cms_init_params
from .state import cms_init_levels, cms_init_state

__all__ = ["CMSBlock", "ContinuumMemorySystem"]


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
    * nested: a chain of ``d -> d`` levels (any order, e.g. fast -> slow) with NL-arXiv Eq. 72
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
