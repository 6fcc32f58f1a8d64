"""Level primitives: associative-memory update rules as pure torch functions.

Notation used across this subpackage (every module repeats the part it uses):

    B  batch            H  heads             T  tokens in the call
    C  chunk size       N  number of chunks  Dk key dim per head
    Dv value dim        Dh hidden width of an MLP memory

Tensors are laid out ``(B, H, T, D)``; per-token gates are ``(B, H, T)``.
State is a ``dict[str, Tensor]`` whose tensors all lead with ``B`` (one memory
per sequence). Each rule has a *reference* form (a per-token loop that reads as
the paper's equation) and a *chunked* form (vectorised inside a chunk, a loop
over chunks) that returns the same outputs and state.

Layout: one sub-package per update-rule family, each with the same files::

    matrix/     matrix memories: linear attention, (gated) delta rule, DGD, Omega
    deep/       MLP memories: Titans, MIRAS (Moneta, Yaad, Memora), ATLAS, TTT
    selfmod/    HOPE's self-modifying memories
    cms/        Continuum Memory System levels
    attention/  softmax attention, the non-parametric level

    <family>/__init__.py   the family's public ops (what the runtime and benchmarks import)
    <family>/reference.py  the per-token recurrence, read as the paper's equation
    <family>/chunk.py      the parallel (chunkwise) form: same signature, same results
    <family>/...           only what the family needs besides: the helpers both forms share
                           (terms.py, common.py, cache.py), kernels, state layout, modules

reference.py and chunk.py never import each other. The building blocks that several
families, the runtime or the optimizers use sit directly here: ``layers.py`` (norms, MLPs,
RoPE, short convolution, read-out gate), ``activations.py`` (the memory MLPs' activations
and their derivatives), ``feature_maps.py`` (ATLAS' polynomial map), ``newton_schulz.py``
(Muon's orthogonalisation), ``guards.py`` (finite checks, gradient clip / normalise).

Gate convention (normalised across NL-arXiv Eq. 88, Titans Eqs. 9-14 and MIRAS §3):
``lr`` is the step size (eta in NL/HOPE, theta in Titans); ``retention`` multiplies the old
state (alpha in NL/HOPE/MIRAS, ``1 - alpha`` in Titans); ``momentum`` decays the surprise
(eta in Titans).
"""
