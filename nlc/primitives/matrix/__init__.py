"""Matrix-valued associative memories: linear attention, gated/delta rules, DGD, Omega.

Notation::

    B batch   H heads   T tokens   C chunk size (``chunk``)   Dk key dim   Dv value dim
    S      memory (Dv x Dk) per (batch, head), state key ``"S"`` (B, H, Dv, Dk); read o = S q
    S_xi   state at the start of the current chunk (xi = the last state of the previous
           chunk, C floor((t-1)/C) in 1-based time: NL-arXiv §8.2, Eqs. 90-91)
    q, k   (B, H, T, Dk)      v (B, H, T, Dv)
    lr     step size eta_t: (B, H, T) or any tensor broadcastable to it (e.g. 0-d)
    retention  alpha_t multiplying the old state, (B, H, T) or broadcastable, in [0, 1];
           decays are handled in log space, so the chunked forms treat alpha below the
           smallest normal float (e.g. 0) as that float (its gradient there is zero)

Every rule is the generalized recurrence::

    S_t = S_{t-1} (alpha_t I - b_t k_t k_t^T) + u_t k_t^T,   u_t = a_t + S_xi c_t      (R)

and each rule only builds (alpha, b, a, c) (Omega, whose update sums a window of rank-1
terms, has its own loop and mixing matrix on the same chunk scan). Both forms of a rule
share one signature ``(state, q, k, v, <gates>, *, chunk=64, read_after_write=False)`` and
return ``(outputs (B, H, T, Dv), new_state)``; ``read_after_write=True``: o_t = S_t q_t,
False: o_t = S_{t-1} q_t. Exact rules (no S_xi) give the same results for every ``chunk``
and stream at any split; chunk-frozen rules (DGD with the L2 objective, Omega) depend on
``chunk`` and stream only when segments start at multiples of ``chunk`` (the chunk grid
counts from the start of each call). L2 objectives are 1/2 ||S k - v||^2 (gradient
(S k - v) k^T). Equation numbers are NL-arXiv's unless said otherwise.

Files: ``reference.py`` the per-token loops (``<rule>_reference``), ``chunk.py`` the
chunkwise-parallel forms (``<rule>_chunked``), ``terms.py`` each rule's terms of (R) (shared
by both forms), ``kernels.py`` the chunk algebra (UT transform, chunk affine maps, chunk
scan; HOPE's :mod:`nlc.primitives.selfmod` uses it too).
"""
from .chunk import (
    delta_rule_chunked,
    dgd_chunked,
    gated_delta_rule_chunked,
    gated_linear_attention_chunked,
    generalized_delta_chunked,
    linear_attention_chunked,
    omega_rule_chunked,
)
from .reference import (
    delta_rule_reference,
    dgd_reference,
    gated_delta_rule_reference,
    gated_linear_attention_reference,
    generalized_delta_reference,
    linear_attention_reference,
    omega_rule_reference,
)

__all__ = [
    "generalized_delta_reference", "generalized_delta_chunked",
    "linear_attention_reference", "linear_attention_chunked",
    "gated_linear_attention_reference", "gated_linear_attention_chunked",
    "delta_rule_reference", "delta_rule_chunked",
    "gated_delta_rule_reference", "gated_delta_rule_chunked",
    "dgd_reference", "dgd_chunked",
    "omega_rule_reference", "omega_rule_chunked",
]
