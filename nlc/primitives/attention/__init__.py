"""Softmax attention: the non-parametric level (NL-arXiv §5, Eqs. 62-63).

Notation::

    B batch   H heads   T query tokens in the call   Dk key dim   Dv value dim
    P prefix tokens (always visible)   L cached keys from earlier calls
    w sliding window (token t sees t-w+1 .. t; None = full causal)
    N_p persistent tokens (Titans Eq. 19)

NL-arXiv Eq. 62: softmax attention is the Nadaraya-Watson solution of a local L2 regression,
``M*(q) = sum_i s(k_i, q) v_i / sum_j s(k_j, q)`` with ``s(k, q) = exp(q.k * scale)``;
NL-arXiv Eq. 63 restricts the sum to a window (sliding-window attention, Titans' SWA). Keys visible to the
query at absolute position ``t``:

* every *prefix* key (``prefix_k / prefix_v``, e.g. Titans persistent tokens ``p_1..p_Np``
  (Titans Eq. 19) and MAC's retrieved memory tokens ``h_t``), scored with ``prefix_q`` (default the
  query itself);
* sequence keys at positions ``j`` with ``j <= t`` (causal) and, with a window ``w``,
  ``j >= t - w + 1``. Keys of earlier calls come from the KV cache in ``state``.

Streaming: ``state = {"k": (B, H, L, Dk), "v": (B, H, L, Dv)}`` holds the keys/values of
earlier calls (``None`` = empty). With a window the cache keeps only the last ``w-1`` tokens,
so memory is bounded; without one it grows. Calling on segments in turn with the carried
state equals one call on the whole sequence, at any split. Titans MAC attention ("full
causal attention within the segment plus the prefix") is ``state=None`` with a prefix.

RoPE is the caller's business in the functional forms (cache keys are stored as given, i.e.
already rotated). :class:`SoftmaxAttention` rotates q and k by absolute position and keeps
prefix tokens position-free: a prefix key is scored against the *unrotated* query
(``prefix_q``), so its score does not depend on where the query sits in the stream.

Two forms with the same signature and results: :func:`softmax_attention_reference` (a loop
over query tokens, ``reference.py``) and :func:`softmax_attention` (one
``F.scaled_dot_product_attention`` call with an explicit boolean mask, ``chunk.py``: the
family's parallel form, named like every family's fast form). ``cache.py`` holds the KV
cache both read and trim; ``modules.py`` the multi-head :class:`SoftmaxAttention`.
"""
from .cache import init_kv_state
from .chunk import attention_mask, softmax_attention
from .modules import SoftmaxAttention
from .reference import softmax_attention_reference

__all__ = [
    "attention_mask",
    "softmax_attention",
    "softmax_attention_reference",
    "init_kv_state",
    "SoftmaxAttention",
]
