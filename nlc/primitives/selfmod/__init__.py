"""HOPE's self-modifying Titans (NL-arXiv §8, Eqs. 83-93): memories that generate their own
keys, values, gates and targets.

Notation::

    B batch   H heads   T tokens in the call   D per-head width   Dh memory hidden width
    r         a role: the main memory (``memory``) or one of COMPONENTS = (k, v, eta, alpha, q).
              A role with a component memory is *generated* from x_t; one without is *given*
              by the caller (a static projection of the input; alpha absent = 1). HOPE
              (NL-arXiv Eq. 79): k, v, eta, alpha generated, q given. NL-arXiv Table 6's
              ablations: q generated ("adaptive q"), k or v given ("w/o inner projection"),
              alpha absent ("w/o weight decay"), all given (static projections)
    M_r(x)    = x + W1_r act(W2_r x)       residual 2-layer MLP (NL-arXiv Eq. 89)
              W2_r (Dh, D) input side, W1_r (D, Dh) output side (paper names; note that
              :mod:`nlc.primitives.deep` numbers the layers the other way round)
    S1_r, S2_r  momentum buffers of W1_r, W2_r (with ``momentum``; zeros at the start)
    beta_t    the momentum (given, (B, H, T)); none: S_{r,t} = -eta_t grad (NL-arXiv Eq. 88)
    p         1 with the DGD preconditioner (rule dgd, NL-arXiv Eq. 88), 0 without (rule gd /
              momentum: NL-arXiv Table 6's "DGD replaced by GD")
    C_m, C_o  ``chunk_memory`` (main memory) and ``chunk_other`` (the component memories)
    xi_m, xi_o  chunk starts (0-based t): xi = C floor(t / C), counted from the call start;
              M_{r,xi} is the state *before* token xi (= last state of the previous chunk)
    w_eta, b_eta, w_alpha, b_alpha   static read-outs (H, D) / (H,) of generated gates

The rule, per (batch, head), for t = 0..T-1 (s(r) = xi_m for r = memory, xi_o otherwise)::

    k_t     = l2norm(M_{k,xi_o}(x_t))  or given   (l2norm only if normalize_k; NL-arXiv §8.3)
    v_t     = M_{v,xi_o}(x_t)           or given
    eta_t   = eta_max * sigmoid(w_eta . M_{eta,xi_o}(x_t) + b_eta)       or given
    alpha_t = sigmoid(w_alpha . M_{alpha,xi_o}(x_t) + b_alpha)           or given, or 1
    q_t     = l2norm(M_{q,xi_o}(x_t))  or given   (l2norm only if normalize_q)
    vhat_{r,t} = M_{r,s(r)}(v_t)                      (self-targets, NL-arXiv Eqs. 83-85)
    L_r(W; t)  = 1/2 || M_W(k_t) - vhat_{r,t} ||^2, gradients at W = M_{r,s(r)} (frozen):
        h = act(W2 k_t), e = k_t + W1 h - vhat   (delta1),   delta2 = (W1^T e) * act'(W2 k_t)
        dL/dW1 = e h^T,   dL/dW2 = delta2 k_t^T
    S2_{r,t} = beta_t S2_{r,t-1} - eta_t delta2_{r,t} k_t^T                 (momentum)
    S1_{r,t} = beta_t S1_{r,t-1} - eta_t e_{r,t} h_{r,t}^T
    W2_{r,t} = W2_{r,t-1} (alpha_t I - p eta_t k_t k_t^T) + S2_{r,t}        (NL-arXiv Eq. 88)
    W1_{r,t} = alpha_t W1_{r,t-1} + S1_{r,t}
    o_t = M_{memory,t-1}(q_t)          (read before write, per-token state; NL-arXiv Eq. 94)

With C_m = C_o = 1 every xi is t: the exact self-referential per-token rule of NL-arXiv
Eqs. 83-88 (with Titans' momentum, below).

Choices where the paper is silent or ambiguous (NL-arXiv §8.1-8.2, Eqs. 86-91):

* eta and alpha are *scalars* per token and head: the eta / alpha memories map x_t to a
  D-vector which a static linear read-out (w, b) and a sigmoid turn into a gate (eta also
  times ``eta_max``). kmccleary3301/nested_learning also uses scalar per-token gates
  (softplus for eta); a sigmoid with a ceiling keeps the DGD step stable for unit k
  (eta < 1 + alpha).
* The DGD preconditioner (alpha I - eta k k^T) right-multiplies only W2, the one matrix whose
  input is k (dimensionally compatible); W1 gets the plain retention alpha (as kmccleary).
* The objective is 1/2 ||.||^2, the convention of the matrix case, NL-arXiv Eq. 93
  (-eta (M_xi k - vhat) k^T, as :func:`nlc.primitives.matrix.dgd_reference`).
* The inner gradient treats vhat as a constant target (derivative w.r.t. the memory only);
  the outer (meta) gradient flows through everything, k, v, eta, alpha and vhat included,
  over the whole unrolled call (full unroll; detach the carried state to truncate).
* Chunking (NL-arXiv Eqs. 90-91, xi = last state of the previous chunk: the printed
  xi = C ceil(t/C) would be the end of the current chunk, the prose says the previous one's):
  k, v, eta, alpha, the self-targets and the inner gradients come from chunk-start states.
  The printed NL-arXiv Eq. 90 also reads y_t = M_{memory,xi}(q_t); we read the per-token
  state M_{memory,t-1} under the frozen-gradient recurrence instead (same at C_m = 1, and
  causal/attention-like).
* The main memory freezes its gradients and self-target at M_{memory,xi_m} (chunk_memory
  grid); the components at their own xi_o (chunk_other grid). C_m must be a multiple of C_o.
* Momentum. NL-arXiv Eq. 88 has none, but NL-arXiv Table 6 ablates "w/o momentum", so the trained
  HOPE has one; the paper does not write it. Ours is Titans' momentum (Titans Eqs. 9-10,
  the memory HOPE makes self-modifying) of the gradient write, S = beta S - eta grad, with
  the DGD preconditioner acting, exactly per token, on the old weights and not on S (which
  holds past gradients, not weights). beta = 0 is NL-arXiv Eq. 88; C = 1 is the exact per-token rule
  (gradients at M_{t-1}). Inside a chunk the gradients are frozen as for the rest, and the
  preconditioner and the momentum stay exact recurrences: the change of W2 beyond its
  decayed start state and momentum stays in the span of the chunk's keys, one UT solve per
  chunk (:mod:`~nlc.primitives.selfmod.momentum`). Every memory keeps its own momentum
  buffers; beta_t, one per token and head, is the same for all (the components share the
  main memory's update block). Alternatives considered: a momentum carried only across
  chunks (one step of the chunk's summed write) means nothing per token and changes with the
  chunk size; one through the preconditioner too, S_t = beta_t S_{t-1}(alpha_t I - eta_t k_t
  k_t^T) - eta_t grad, would erase past gradients along the current key, which Titans'
  momentum does not, at the cost of a second UT recurrence.

Numerics. The self-targets grow with the weights (vhat = M(v), the W1 step scales with
||W||^2 ||v||), so the rule itself can blow up when ||v|| is large: with the default init,
D = 64 and ||x_t|| ~ 5 per head, the exact (chunk 1) rule overflows within ~10 tokens even
in float64, while unit-norm x stays bounded. Keep x normalised and eta_max moderate.
Retention < 1 with little write signal decays the weights towards 0 (a fixed point: M = id):
on CPU, float32 weights that reach subnormals make every op very slow
(``torch.set_flush_denormal(True)`` avoids it).

Files: ``reference.py`` the per-token loop (:func:`selfmod_reference`), ``chunk.py`` the
chunkwise-parallel form (:func:`selfmod_chunked`: two passes, the delta kernel of
:mod:`nlc.primitives.matrix`), ``momentum.py`` one chunk of a memory with momentum (used by
the chunked form), ``common.py`` roles, initial weights, state and argument checks (shared
by both forms).
"""
from .chunk import selfmod_chunked, selfmod_memory, selfmod_roles
from .common import (
    COMPONENTS, HOPE_COMPONENTS, MEMORY, components_of, init_selfmod_params, init_selfmod_state,
    mlp,
)
from .reference import selfmod_reference

__all__ = [
    "MEMORY", "COMPONENTS", "HOPE_COMPONENTS", "components_of", "init_selfmod_params",
    "init_selfmod_state", "selfmod_chunked", "selfmod_memory", "selfmod_reference", "selfmod_roles", "mlp",
]
