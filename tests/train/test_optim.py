"""Optimizer levels: parameter groups per level, weight-decay split, and the ``{steps: k}``
clock (gradients accumulate and the level steps exactly on its due steps)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nlc
from nlc.training.optim import OuterLevels

TINY = Path(__file__).parent / "tiny.yaml"
# plain SGD with a constant lr and nothing else, so every update can be written out by hand
PLAIN = [f"levels.{lv}.{key}" for lv in ("fast", "outer") for key in
         ("rule=sgd", "weight_decay=0", "grad_clip=null", "warmup=0", "schedule=constant")]


def _loss(model, tokens):
    logits, _ = model(tokens[:, :-1], model.init_state(tokens.shape[0]), targets=tokens[:, 1:])
    return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


def test_parameters_grouped_by_optimizer_level_and_decay_on_matrices_only():
    model = nlc.compile(TINY)
    outer = OuterLevels(model, total_steps=12)
    names = {lv: {n for n, _ in level.params} for lv, level in outer.levels.items()}
    assert names["fast"] == {"b0_r0_cms.mixer.init.w_gate", "b0_r0_cms.mixer.init.w_out", "b0_r0_cms.mixer.init.w_up"}
    assert names["outer"] == {"embed.weight", "final_norm.weight", "b0_r0_attn.norm.weight", "b0_r0_cms.norm.weight",
                              "b0_r0_attn.mixer.qkv.weight", "b0_r0_attn.mixer.o_proj.weight"}
    assert outer.outermost == "outer"
    by_id = {id(p): n for n, p in model.named_parameters()}
    decayed = {by_id[id(p)] for g in outer.levels["outer"].optimizer.param_groups if g["weight_decay"] > 0
               for p in g["params"]}
    assert decayed == {"b0_r0_attn.mixer.qkv.weight", "b0_r0_attn.mixer.o_proj.weight"}  # not the embedding, not norms
    assert [g["weight_decay"] for g in outer.levels["fast"].optimizer.param_groups] == [0.1]


def test_lr_per_level_on_its_own_clock():
    outer = OuterLevels(nlc.compile(TINY), total_steps=12)  # warm-up 2 updates, cosine
    # step 1: fast makes update 1 (lr/2); outer's next update (at step 2) is its first (lr/2)
    assert outer.lrs(1) == {"fast": pytest.approx(1.5e-3), "outer": pytest.approx(1.5e-3)}
    assert outer.lrs(3) == {"fast": pytest.approx(3e-3), "outer": pytest.approx(3e-3)}  # updates 3 and 2


def test_accumulating_level_steps_only_on_due_steps_with_the_mean_gradient():
    model = nlc.compile(TINY, overrides=PLAIN)
    ref = nlc.compile(TINY, overrides=PLAIN)
    ref.load_state_dict(model.state_dict())
    outer = OuterLevels(model, total_steps=4)
    lr = 3e-3
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (2, 17), generator=g) for _ in range(2)]
    fast = [n for n, _ in outer.levels["fast"].params]
    slow = [n for n, _ in outer.levels["outer"].params]
    p0 = {n: p.detach().clone() for n, p in model.named_parameters()}

    _loss(model, batches[0]).backward()
    assert outer.step(1) == {"fast"}
    params = dict(ref.named_parameters())
    g1 = dict(zip(params, torch.autograd.grad(_loss(ref, batches[0]), list(params.values()), allow_unused=True)))
    now = dict(model.named_parameters())
    for n in fast:  # fast stepped: f1 = f0 - lr g1
        torch.testing.assert_close(now[n].detach(), p0[n] - lr * g1[n], rtol=0, atol=1e-7)
    for n in slow:  # outer did not move; its gradient is kept
        assert torch.equal(now[n].detach(), p0[n]) and now[n].grad is not None

    with torch.no_grad():  # the reference takes the same fast step
        for n in fast:
            params[n].sub_(lr * g1[n])
    _loss(model, batches[1]).backward()
    assert outer.step(2) == {"fast", "outer"}
    g2 = dict(zip(params, torch.autograd.grad(_loss(ref, batches[1]), list(params.values()), allow_unused=True)))
    for n in slow:  # outer steps with the mean of the two gradients
        torch.testing.assert_close(now[n].detach(), p0[n] - lr * (g1[n] + g2[n]) / 2, rtol=0, atol=1e-7)
        assert now[n].grad is None  # and starts accumulating afresh
    for n in fast:
        torch.testing.assert_close(now[n].detach(), p0[n] - lr * g1[n] - lr * g2[n], rtol=0, atol=1e-7)
