"""Continuum Memory System (CMS): MLP blocks updated every C tokens by summed gradients.

Public API, re-exported from the family's files: ``reference.py`` (per-token loops,
``*_reference``), ``chunk.py`` (matmul forms, ``*_chunked``), ``levels.py`` (the chunk schedule
and multi-level chains both forms run on; :func:`cms_read`), ``mlp.py`` (block, error
signals, summed gradients), ``state.py`` (state layout) and ``modules.py`` (``nn.Module``
wrappers).

Notation::

    B batch   T tokens in the call   C chunk size of a level   Din / Dout block in/out dim
    (CMS blocks are token-wise MLPs on the model stream: x is (B, T, Din), no head axis)
    Dh hidden width                  L number of levels        pos tokens already streamed
    theta   a level's parameters (per-sequence fast state, batch-leading)
    eta_t   the level's learning rate (scalar, per sequence (B,) or per token (B, T))
    delta_t error signal at the block output, dL/dy_t

Update rule (NL-NeurIPS Eqs. 30-31 = NL-arXiv Eqs. 70-71)::

    y_t = MLP(theta_{xi(t)}; x_t)                         xi(t) = start of t's chunk
    theta_{i+1} = theta_i - sum_{t=i-C+1}^{i} eta_t grad_theta l(theta_{xi}; x_t)   if i = 0 mod C
                = theta_i                                                           otherwise

i.e. mini-batch GD with batch = chunk: the per-token gradients are taken at the frozen
chunk-start parameters, *summed* over exactly the C tokens of the chunk (the lower limit
``i-C`` printed in NL-NeurIPS Eq. 31 gives C+1 terms, an off-by-one typo; NL-arXiv Eq. 71
reads ``i-C+1``) and applied once at the boundary. Positions are 1-based in the equation:
the chunk ends after the token with absolute position ``pos + t + 1 = 0 (mod C)``.

Block ``kind`` (``gelu | silu | relu | swiglu``, ``residual``) and error ``signal``: see
:mod:`~nlc.primitives.cms.mlp`. ``"local"`` is the associative L2 loss against ``target``
(``None``: the block's own input, so Dout must equal Din); ``"task"`` takes an external teach
signal ``delta = dL_task/dy``. Because the task signal of chunk ``j`` is only known after
the model's loss on it, a compiler runs ``y = cms_read(state, x_chunk)`` -> loss -> ``delta``
-> ``cms_*_chunked(state, x_chunk, delta=delta)`` chunk by chunk; the ``*_chunked`` forms also
accept a whole sequence's ``delta`` when it is known in advance (``local`` needs none).

State: ``dict[str, Tensor]``, all batch-leading: the parameters (``w_in``, ...) and, for
each, a pending gradient sum ``acc.<name>`` (:mod:`~nlc.primitives.cms.state`). Initialise
with :func:`cms_init_state` from meta-learned parameters (``expand`` keeps the graph, so
outer gradients reach them). Multi-level states prefix every key with ``level{i}.``.

Partial final chunk (``policy``):

* ``"carry"`` (default): the partial chunk's gradient sum stays in ``acc.*`` and is applied
  when the chunk completes in a later call; pass ``pos`` = tokens already consumed, so
  chunk boundaries sit at absolute multiples of C. Streaming at any split == whole.
* ``"flush"``: the end of the call is a chunk boundary of every level (the partial sum is
  applied now; the next call starts fresh chunks; ``pos`` is ignored).
* ``"drop"``: the partial sum is discarded (``pos`` is ignored; chunks restart at each call).

Variants with several levels (NL-arXiv §7.1; details in :mod:`~nlc.primitives.cms.levels`):
``"sequential"`` chain (NL-arXiv Eqs. 70-71/73), ``"independent"`` weighted sum
``sum_l w_l MLP_l(x)`` (NL-arXiv Eq. 74, ``weights (L,)``), ``"nested"`` chain with
slow -> fast re-initialisation (NL-arXiv Eq. 72; the slowest level's initial state is the
meta-learned one; :func:`cms_reinit_from` is the same reset for a compiler that drives the
blocks one by one).

Forms: ``*_reference`` loops over tokens and takes each per-token gradient with
``torch.func.grad`` (read as the equation); ``*_chunked`` runs matmuls per chunk (a Python
loop over the union of all levels' boundaries only). Same signature, same results.
"""
from .chunk import cms_block_chunked, cms_chunked
from .levels import POLICIES, SIGNALS, VARIANTS, cms_read
from .mlp import (
    KINDS, cms_apply_update, cms_chunk_grad, cms_forward, cms_init_params, cms_local_delta, cms_mlp,
    cms_param_shapes, cms_task_surrogate,
)
from .modules import CMSBlock, ContinuumMemorySystem
from .reference import cms_block_reference, cms_reference
from .state import (
    cms_init_levels, cms_init_state, cms_merge_levels, cms_reinit_from, cms_split_levels,
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
    "cms_forward",
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
