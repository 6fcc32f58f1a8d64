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

Gate convention (normalised, paper notes section 7.3): ``lr`` is the step size
(eta in NL/HOPE, theta in Titans); ``retention`` multiplies the old state (alpha in
NL/HOPE/MIRAS, ``1 - alpha`` in Titans); ``momentum`` decays the surprise
(eta in Titans).
"""
