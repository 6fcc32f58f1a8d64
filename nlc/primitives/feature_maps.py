"""Feature maps of a memory's keys and queries: ATLAS' polynomial map (ATLAS §3, polynomial
feature map).

Notation::

    B batch   H heads   T tokens   Dh head dim   p degree
    x  (B, H, T, Dh) keys or queries, l2-normalised per head (|x_j| <= 1)
    a  (H, p + 1) coefficients, a[h, i] multiplying x^i in head h

ATLAS raises a memory's capacity by writing it at ``phi(k)`` and reading it at ``phi(q)``
for a feature map ``phi``. Its full polynomial map ``phi_p(x) = [x^beta]_{|beta| <= p}`` holds
every monomial of degree <= p, C(Dh + p, p) features (6,545 for Dh 32, p 3): it would widen the
memory's input by that much. nlc implements the form ATLAS' models use, an elementwise
polynomial with learned coefficients::

    phi(x)_j = sum_{i=0}^{p} a[h, i] x_j^i            (x_j^i: the j-th entry to the power i)
    a[h, i] = 1 / i!                                   at initialisation

(the Taylor series of ``exp``, the kernel of softmax attention), computed by Horner's rule
(:func:`polynomial`). It keeps Dh, so every memory rule runs on it unchanged. The memory sees
(:class:`PolynomialFeatures`)::

    k' = phi(s k) / ||phi(s k)||,   q' = phi(s q) / ||phi(s q)||,   s = sqrt(Dh)

* ``s``: the map is evaluated at unit RMS per entry, where ``1, x, x^2/2, ...`` are all of order
  one. At the entries of a unit vector (about 1/sqrt(Dh)) the powers >= 2 would add about 1/(2 Dh)
  each (1.6% at Dh 32): the map would be ``1 + x`` whatever its degree, and two random keys would
  map to a cosine of 0.97 (at unit RMS: 0.62 at degree 2, 0.47 at degree 3). Bounded:
  ``|s x_j| <= sqrt(Dh)``.
* the l2 norm: the stable learning rates of the delta and DGD rules (and validation's rule 10)
  assume unit-norm keys, and ``a_0 = 1`` alone gives a norm of sqrt(Dh).
* one map (one set of coefficients) for keys and queries, so reads and writes live in one
  feature space.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import l2_normalize

__all__ = ["PolynomialFeatures", "polynomial", "taylor_coefficients"]


def taylor_coefficients(degree: int) -> list[float]:
    """``[1/0!, 1/1!, ..., 1/degree!]``: the exponential's Taylor series up to ``degree``."""
    return [1.0 / math.factorial(i) for i in range(degree + 1)]


def polynomial(x: Tensor, coefficients: Tensor) -> Tensor:
    """``sum_i a[h, i] x^i`` elementwise, per head: ``x`` (B, H, T, Dh), ``coefficients`` (H, p + 1),
    p >= 1 -> (B, H, T, Dh), by Horner's rule ``(...(a_p x + a_{p-1}) x + ...) x + a_0``."""
    a = coefficients[:, :, None, None]  # (H, p + 1, 1, 1): broadcast over T and Dh
    y = a[:, -1] * x + a[:, -2]
    for i in range(coefficients.shape[1] - 3, -1, -1):
        y = y * x + a[:, i]
    return y


class PolynomialFeatures(nn.Module):
    """``phi(s x) / ||phi(s x)||``, ``s = sqrt(Dh)``, with ``phi`` the polynomial of :func:`polynomial`
    (module docstring).

    ``PolynomialFeatures(heads, degree)``; ``forward(x (B, H, T, Dh)) -> (B, H, T, Dh)``.
    Parameters: ``coefficients.i`` (H,), the coefficient of ``x^i`` per head, from ``1/i!``; one
    vector per power, so the outer optimizer treats them as the vector knobs they are (no weight
    decay, not orthogonalised as a matrix by Muon).
    """

    def __init__(self, heads: int, degree: int) -> None:
        super().__init__()
        if degree < 1:
            raise ValueError(f"a polynomial feature map has degree >= 1, got {degree}")
        self.degree = degree
        self.coefficients = nn.ParameterList(
            [nn.Parameter(torch.full((heads,), a)) for a in taylor_coefficients(degree)])

    def forward(self, x: Tensor) -> Tensor:
        a = torch.stack(tuple(self.coefficients), dim=1)
        return l2_normalize(polynomial(x * math.sqrt(x.shape[-1]), a))

    def extra_repr(self) -> str:
        return f"degree={self.degree}"
