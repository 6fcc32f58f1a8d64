"""A retention gate that underflows to exactly 0 (a saturated sigmoid, float32) keeps every
gradient finite in each chunked form that takes log(retention): without the floor before the
log, log'(0) = 1/0 met the zero gradient of the floor and gave 0 * inf = NaN (HOPE's outer
gradients went NaN this way at outer lr 1.6e-2, while the loss stayed finite).

Notation: B batch, H heads, T tokens, D head width; float32, the training dtype.
"""
from __future__ import annotations

import pytest
import torch

from nlc.primitives import matrix as M
from nlc.primitives import selfmod as SM
from nlc.primitives.matrix import generalized_delta_chunked

B, H, T, D = 2, 2, 8, 4


def _inputs(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    k = torch.nn.functional.normalize(k, dim=-1)
    return [x.requires_grad_() for x in (q, k, v)]


def _saturated() -> tuple[torch.Tensor, torch.Tensor]:
    """A gate logit whose sigmoid is 0.0 exactly at every other token, and the gate."""
    logit = torch.where(torch.arange(T) % 2 == 0, -200.0, 3.0).expand(B, H, T).clone().requires_grad_()
    return logit, torch.sigmoid(logit)


@pytest.mark.parametrize("form", ["generalized", "gated_delta", "gated_linear"])
def test_matrix_rules_keep_finite_gradients_at_a_zero_gate(form):
    q, k, v = _inputs(0)
    logit, alpha = _saturated()
    assert (alpha == 0).any()
    state = {"S": torch.randn(B, H, D, D, requires_grad=True)}
    if form == "generalized":
        o, new = generalized_delta_chunked(state, q, k, v, retention=alpha, chunk=4)
    else:
        fn = M.gated_delta_rule_chunked if form == "gated_delta" else M.gated_linear_attention_chunked
        o, new = fn(state, q, k, v, torch.full((B, H, T), 0.5), alpha, chunk=4)
    (o.square().sum() + new["S"].square().sum()).backward()
    for x in (q, k, v, logit, state["S"]):
        assert torch.isfinite(x.grad).all()
    assert torch.isfinite(o).all()


def test_selfmod_keeps_finite_gradients_at_a_zero_gate():
    """HOPE's alpha memory read-out saturated: alpha = sigmoid(-200) = 0 for every token."""
    g = torch.Generator().manual_seed(1)
    params = SM.init_selfmod_params(H, D, 2 * D, generator=g)
    params["b_alpha"] = torch.full((H,), -200.0)
    params = {key: val.requires_grad_() for key, val in params.items()}
    x, q, _ = _inputs(1)
    x = torch.nn.functional.normalize(x.detach(), dim=-1).requires_grad_()
    o, new = SM.selfmod_chunked(SM.init_selfmod_state(params, B), x, {"q": q}, params=params,
                                chunk_memory=4, chunk_other=2)
    (o.square().sum() + sum(w.square().sum() for w in new.values())).backward()
    assert all(torch.isfinite(p.grad).all() for p in params.values() if p.grad is not None)
    assert torch.isfinite(x.grad).all() and torch.isfinite(q.grad).all()
