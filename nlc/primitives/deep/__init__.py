"""Deep (MLP) associative memory: Titans LMM, MIRAS objectives / global retention, ATLAS Omega.

Notation::

    B batch   H heads   T tokens in the call   C chunk size (``chunk``)   N chunks
    L depth (number of weight matrices, L >= 1; L = 1 is a linear matrix memory)
    D_0 = Dk key/query dim,  D_L = Dv value dim,  D_1..D_{L-1} hidden widths (Dh)
    W_l   (B, H, D_l, D_{l-1}) layer-l weights = the memory *state*; S_l its momentum buffer
    M(x) = [x +] N(W_L act(W_{L-1} ... act(W_1 x)))   act in {gelu (erf), silu, relu, identity};
           residual=True is the HOPE form x + W_1 act(W_2 x) (NL-arXiv Eq. 89; needs Dk = Dv);
           N is TTT's output LayerNorm with ``norm``, else the identity
    xi    chunk start; every token of a chunk takes its inner gradient at M_xi
          (Titans §3.2: t' = t - mod(t, b); NL-arXiv §8.2: xi = C floor((t-1)/C))
    lr, momentum, retention, gamma: per-token gates (B, H, T) (theta, eta, 1 - alpha in Titans)
    c     Omega window (``window``), gamma_i the weight of token i inside every window

The rule (Titans Eqs. 8-14, normalised gates; MIRAS §3 attentional bias; ATLAS Omega)::

    g_t = sum_{i=t-c+1}^{t} gamma_i s_i grad_W l(M_xi; k_i, v_i)     l = objective(M(k), v)
    S_t = momentum_t S_{t-1} - lr_t g_t
    A_t = retention_t A_{t-1} + S_t
    o_t = M_{W_t}(q_t)  (read_after_write)   or   M_{W_{t-1}}(q_t)

Objectives (MIRAS attentional bias): ``l2`` ||e||^2, ``lp`` ||e||_p^p (p >= 1), ``huber``
(elementwise e^2 for |e| <= delta, 2 delta |e| - delta^2 outside: MIRAS' coordinate-wise Huber;
delta constant, per head or per token, Yaad's delta_t), ``dot`` -<M(k), v>, with e = M(k) - v.
``s_i`` is the optional inner-gradient guard of token i's *own* gradient (norm over all
weights of the memory): ``grad_normalize`` divides by max(||g_i||, eps), then
``grad_clip`` scales by clip / max(||g_i||, clip). Tensor thresholds, no ``.item()``.

Global retention (``global_retention``; MIRAS applies non-linear maps only at chunk
boundaries). A chunk boundary is the end of every chunk of the call, counted from the call
start, including the end of a final partial chunk (so a call always ends on a boundary)::

    decay    W_t = A_t                         (Titans: retention is the weight decay)
    elastic  W_t = A_t inside a chunk; at a boundary A <- W = soft_threshold(A, lambda)
    lq       (Moneta) the state keeps the accumulator A (keys ``A{l}``); at a boundary
             W = A / nu(A), nu(A) = ||A||_q^{q-2} per matrix; inside a chunk the normaliser is
             frozen: W_t = A_t / nu(A_xi). Gradients are taken at W_xi = A_xi / nu(A_xi).

With chunk = 1 every token is a boundary: the exact per-token rule of each variant. The
read at a boundary token sees the mapped weights (read_after_write reads phi(A_t)).

Streaming: calling on segments in turn with the carried state equals one call on the whole
sequence when the segment boundaries fall on multiples of ``chunk`` (the gradients are frozen
per chunk, and phi runs at the end of every call). The Omega window carries the last c-1
(k, v, gamma) as ``omega_k`` / ``omega_v`` / ``omega_gamma``; their gradients are recomputed
at the current chunk-start weights.

Files: ``reference.py`` the per-token loop (:func:`deep_memory_reference`, ``torch.func``
gradients; every variant, Muon and KL included), ``chunk.py`` the chunkwise-parallel dual
form (:func:`deep_memory_chunked`) with its two hand-written kernels (``kernels.py``: the
write keys and the stacked state layout; ``read_end.py``: the reads and the end-of-chunk
state), ``chunk_per_token.py`` the chunked form that forms per-token weights (ATLAS' Muon,
Memora's KL retention: :func:`deep_memory_per_token_chunked`), ``common.py`` what the forms
share (configuration, state, the MLP, objectives, guards, MIRAS maps), ``derivatives.py``
the objectives' and activations' analytic derivatives the kernels use.

Equation sources: Titans (arXiv 2501.00663) §3, MIRAS (arXiv 2504.13173) §3, ATLAS (arXiv
2505.23735), NL-arXiv Eq. 89.
"""
from .chunk import deep_memory_chunked
from .chunk_per_token import deep_memory_per_token_chunked
from .common import init_deep_params, init_deep_state, lq_norm_scale, mlp_forward, simplex
from .reference import deep_memory_reference

__all__ = [
    "init_deep_params", "init_deep_state", "deep_memory_reference", "deep_memory_chunked",
    "deep_memory_per_token_chunked", "mlp_forward", "lq_norm_scale", "simplex",
]
