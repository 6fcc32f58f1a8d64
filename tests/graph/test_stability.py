"""Validation rule 10's bound for MLP memories (nlc/graph/stability.py, ``DEEP_STEP_LIMIT``):
an unguarded MLP memory on unit-norm keys whose ``lr x window x (1 + (depth - 1) hidden /
head_dim)`` reaches the limit is refused at its lr's line; below it, and above it with a
gradient guard, it trains finitely. The whole-schema fuzz found this class (a deep memory on
head dim 2 at the default lr 1 was NaN at the first step)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.graph.stability import DEEP_STEP_LIMIT


def deep_spec(head_dim: int, heads: int, hidden: int, depth: int, activation: str, lr: float,
              window: int, guard: dict) -> str:
    level = {"type": "memory", "heads": heads, "chunk": 1,
             "memory": {"kind": "mlp", "hidden": hidden, "depth": depth, "activation": activation},
             "objective": {"kind": "l2", "window": window}, "keys": {"from": "input", "norm": "l2"},
             "update": {"rule": "gd", "lr": lr, **guard}}
    return yaml.safe_dump({"nlc": 1, "levels": {"m": level, "opt": {"type": "optimizer"}},
                           "model": {"width": head_dim * heads, "heads": heads, "blocks": [{"layers": ["m"]}]},
                           "train": {"seq_len": 32, "batch": 2}}, sort_keys=False)


def losses(spec, steps: int = 3) -> list[float]:
    from nlc.training.optim import OuterLevels

    model = nlc.compile(spec, seed=0)
    outer = OuterLevels(model, steps)
    out = []
    for step in range(steps):
        x = torch.randint(0, spec.model.vocab, (2, 33), generator=torch.Generator().manual_seed(step))
        logits, _ = model(x[:, :-1], model.init_state(2), targets=x[:, 1:])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        outer.step(step + 1)
        out.append(loss.item())
    return out


shapes = st.tuples(st.sampled_from([2, 4, 8, 16]), st.sampled_from([1, 2]), st.sampled_from([16, 32, 64]),
                   st.sampled_from([2, 3]), st.sampled_from(["gelu", "silu", "relu", "identity"]),
                   st.sampled_from([1, 2]))


def kernel(head_dim: int, hidden: int, depth: int) -> float:
    return 1 + (depth - 1) * hidden / head_dim


@settings(max_examples=12)
@given(shapes, st.floats(0.05, 0.95))
def test_below_the_bound_an_mlp_memory_trains_finitely(shape, fraction):
    head_dim, heads, hidden, depth, activation, window = shape
    lr = fraction * DEEP_STEP_LIMIT / (window * kernel(head_dim, hidden, depth))
    spec, issues = nlc.validate(deep_spec(head_dim, heads, hidden, depth, activation, lr, window, {}))
    assert spec is not None, [i.format() for i in issues]
    assert all(math.isfinite(v) for v in losses(spec))


@settings(max_examples=12)
@given(shapes, st.floats(1.0, 40.0))
def test_past_the_bound_it_is_refused_at_its_lr_unless_guarded(shape, factor):
    head_dim, heads, hidden, depth, activation, window = shape
    lr = min(100.0, factor * DEEP_STEP_LIMIT / (window * kernel(head_dim, hidden, depth)))
    text = deep_spec(head_dim, heads, hidden, depth, activation, lr, window, {})
    spec, issues = nlc.validate(text)
    error, = [i for i in issues if i.severity == "error"]
    assert spec is None and error.path == "levels.m.update.lr" and "tangent kernel" in error.message
    assert text.splitlines()[error.line - 1].strip().startswith("lr:")
    guarded, issues = nlc.validate(deep_spec(head_dim, heads, hidden, depth, activation, lr, window,
                                             {"grad_clip": 1.0}))
    assert guarded is not None, [i.format() for i in issues]
    assert all(math.isfinite(v) for v in losses(guarded))


def test_the_fuzz_finding_is_refused_and_its_hint_trains():
    """Head dim 2, hidden 32, depth 2 at lr 1: kernel 17, NaN at the first step before the rule."""
    spec, issues = nlc.validate(deep_spec(2, 4, 32, 2, "gelu", 1.0, 1, {}))
    error, = issues
    assert spec is None and "= 17" in error.message and "use lr < 0.029" in error.hint
    spec, _ = nlc.validate(deep_spec(2, 4, 32, 2, "gelu", 0.028, 1, {}))
    assert all(math.isfinite(v) for v in losses(spec))


def test_an_mlp_memory_on_the_dot_objective_with_raw_keys_is_refused():
    """Fuzz finding: a Hebbian (dot) MLP memory's two layers feed each other's growth; on
    projected keys (|k|^2 about head_dim / 3) at lr 1 it was NaN within 16 tokens."""
    text = deep_spec(32, 1, 8, 2, "gelu", 1.0, 1, {}).replace("kind: l2", "kind: dot").replace("norm: l2", "norm: none")
    spec, issues = nlc.validate(text)
    error, = issues
    assert spec is None and error.path == "levels.m.update.lr" and "reinforces itself" in error.message
    assert nlc.validate(text.replace("norm: none", "norm: l2"))[0] is not None  # the hint's fix


def test_lp_above_two_needs_a_gradient_guard():
    """Fuzz finding: matrix memories on lp, p 3, at the default lr went NaN within 24 tokens."""
    text = deep_spec(8, 2, 16, 2, "gelu", 0.01, 1, {}).replace("kind: l2", "kind: lp\n      p: 3")
    text = text.replace("kind: mlp", "kind: matrix").replace("      hidden: 16\n      depth: 2\n      activation: gelu\n", "")
    spec, issues = nlc.validate(text)
    error, = issues
    assert spec is None and error.path == "levels.m.objective.p" and "grows faster than the error" in error.message
    guarded = text.replace("lr: 0.01", "lr: 1.0\n      grad_clip: 1.0")
    spec, issues = nlc.validate(guarded)
    assert spec is not None, [i.format() for i in issues]
    assert all(math.isfinite(v) for v in losses(spec))


def test_a_learning_level_in_a_layer_without_norm_is_refused_at_the_norm():
    """Fuzz finding: CMS levels applied in ``norm: none`` layers went NaN within 5 tokens; the
    same spec with rms norms stayed finite even at lr 10."""
    text = deep_spec(8, 2, 16, 2, "gelu", 0.01, 1, {}).replace("  - layers:\n    - m\n", "  - layers:\n    - {level: m, norm: none}\n")
    assert "norm: none}" in text
    spec, issues = nlc.validate(text)
    error, = issues
    assert spec is None and error.path == "model.blocks.0.layers.0.norm" and "raw residual stream" in error.message
    assert text.splitlines()[error.line - 1].strip().startswith("- {level: m, norm: none}")
    assert nlc.validate(text.replace("norm: none", "norm: layer"))[0] is not None
