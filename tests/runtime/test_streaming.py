"""Exact streaming at any split (chunk-phase carry, nlc/runtime/aligned.py), on every bundled spec
(the ablations of specs/ablations/ included).

Each spec is shrunk (width 16, 2 heads, one block repetition) and its grids made small (memory
chunks 8, HOPE's component memories 4, CMS periods 4 / 8 / 16) so that a 40-token sequence
crosses many chunk boundaries and the teach segments (4 tokens) cut the memories' chunks.
float64 throughout; streamed and whole results agree to 1e-9 relative.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.runtime.memory import MemoryMixer

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml")) + sorted(
    f"ablations/{p.stem}" for p in (ROOT / "specs" / "ablations").glob("*.yaml"))
SMALL = ("model.width=16", "model.heads=2", "model.blocks.0.repeat=1")
SMALL_PERIOD = {16: 4, 64: 8, 128: 16, 512: 32}  # bundled CMS period -> test period
T, B, STEPWISE = 40, 2, 20  # sequence length, batch, tokens decoded one at a time first
TOL = dict(rtol=1e-9, atol=1e-10)



def small_grid(name: str) -> tuple[str, ...]:
    """Overrides giving the spec's memories and CMS levels the small test grids."""
    ir = nlc.compile(ROOT / "specs" / f"{name}.yaml", overrides=SMALL).ir
    out = list(SMALL)
    for level in ir.levels.values():
        if level.type == "memory":
            out.append(f"levels.{level.name}.chunk={8 if level.chunk >= 64 else 4}")
        elif level.type == "mlp" and level.period:
            out.append(f"levels.{level.name}.period={SMALL_PERIOD[level.period]}")
    return tuple(out)


def build(name: str):
    return nlc.compile(ROOT / "specs" / f"{name}.yaml", overrides=small_grid(name), seed=0,
                       dtype=torch.float64)


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))
    return x, torch.roll(x, -1, 1)


def stream(model, x, y, cuts):
    """Logits and final state of calls on ``x[:, a:b]`` for consecutive cuts a, b."""
    state, parts = model.init_state(x.shape[0]), []
    for a, b in zip(cuts[:-1], cuts[1:]):
        logits, state = model(x[:, a:b], state, targets=y[:, a:b])
        parts.append(logits)
    return torch.cat(parts, 1), state


def flat(state: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@lru_cache(maxsize=None)
def whole_run(name: str):
    model = build(name)
    x, y = data()
    logits, state = model(x, targets=y)
    return model, logits.detach(), flat(state)


@pytest.mark.parametrize("name", SPECS)
@settings(max_examples=3)
@given(cuts=st.lists(st.integers(STEPWISE + 1, T - 1), max_size=3, unique=True).map(sorted))
def test_streaming_equals_whole_at_any_split(name, cuts):
    """Token by token for the first 20 tokens, then random cuts: the logits and the final
    state (anchors, tails, caches, CMS weights) of one whole call."""
    model, whole, whole_state = whole_run(name)
    x, y = data()
    logits, state = stream(model, x, y, [*range(STEPWISE + 1), *cuts, T])
    torch.testing.assert_close(logits, whole, **TOL)
    state = flat(state)
    assert set(state) == set(whole_state)
    for key, value in whole_state.items():
        torch.testing.assert_close(state[key], value, **TOL, msg=key)


@pytest.mark.parametrize("name", SPECS)
def test_causal_inside_a_chunk(name):
    """Changing the tokens from t = 13 on (mid-chunk for every grid) keeps logits before t."""
    model, whole, _ = whole_run(name)
    x, y = data()
    t = 13
    changed = x.clone()
    changed[:, t:] = (changed[:, t:] + 1) % 256
    y2 = torch.roll(changed, -1, 1)
    y2[:, t - 1] = y[:, t - 1]  # the teach signal of tokens < t is unchanged
    after, _ = model(changed, targets=y2)
    torch.testing.assert_close(after[:, :t], whole[:, :t], rtol=0, atol=0)
    assert (after[:, t:] - whole[:, t:]).abs().max() > 0


def initial_states(model) -> list[torch.nn.Parameter]:
    """The meta-learned initial memories: ``state0`` of a MemoryMixer, W1/W2 of HOPE's roles."""
    return [p for n, p in model.named_parameters()
            if ".state0." in n or (".roles." in n and n.rsplit(".", 1)[1] in ("W1", "W2"))]


@pytest.mark.parametrize("name", ["hope", "titans_lmm", "titans_mac"])
def test_streamed_gradients_equal_whole_and_reach_the_initial_state(name):
    model = build(name)
    x, y = data(seed=1)
    x, y = x[:, :19], y[:, :19]

    def grads(cuts):
        model.zero_grad()
        logits, _ = stream(model, x, y, cuts)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    whole = grads([0, 19])
    streamed = grads([*range(12), 15, 19])  # 11 single tokens, then two mid-chunk cuts
    assert set(streamed) == set(whole)
    for key, value in whole.items():
        torch.testing.assert_close(streamed[key], value, **TOL, msg=key)
    init = initial_states(model)
    assert init and all(p.grad.abs().max() > 0 for p in init)


DGD_L2 = ("levels.linattn.objective.kind=l2", "levels.linattn.update.rule=dgd",  # chunk-frozen
          "levels.linattn.keys={from: input, norm: l2}")  # lr 1 on raw keys diverges: refused


@pytest.mark.parametrize("name, extra", [
    ("linear_attention", DGD_L2),  # a matrix memory with DGD on l2: the cheapest to trace
    pytest.param("titans_lmm", (), marks=pytest.mark.slow),
    pytest.param("hope", (), marks=pytest.mark.slow),
])
def test_fullgraph_captures_the_aligned_and_the_mid_chunk_call(name, extra):
    """r = 0 with whole chunks (training) and a call continuing a chunk (decoding) capture
    with ``fullgraph=True`` (a graph break would raise); compiled == eager."""
    torch._dynamo.reset()
    model = nlc.compile(ROOT / "specs" / f"{name}.yaml", overrides=small_grid(name) + extra,
                        seed=0, dtype=torch.float64)
    assert any(getattr(m, "phase", 1) > 1 for m in model.modules())
    x, _ = data()
    after5 = model.run(x[:, :5], model.init_state(B))[1]
    compiled = torch.compile(model.run, backend="eager", fullgraph=True)
    for tokens, state in ((x[:, :16], model.init_state(B)), (x[:, 5:8], after5)):
        eager, eager_state = model.run(tokens, state)
        logits, new_state = compiled(tokens, state)
        torch.testing.assert_close(logits, eager, **TOL)
        torch.testing.assert_close(flat(new_state), flat(eager_state), **TOL)


def chunk_frozen_mixer() -> MemoryMixer:
    model = build("titans_lmm")
    mixer = next(m for m in model.modules() if isinstance(m, MemoryMixer))
    assert mixer.phase == 8 and mixer.plan.chunk_frozen
    return mixer


def test_state_holds_the_anchor_and_the_tail():
    """After 11 tokens (chunk 8) the memory keys are the state at token 8, the tail the last
    3 inputs; ``memory_at`` advances the anchor over them like one primitive call."""
    mixer = chunk_frozen_mixer()
    u = torch.randn(B, 11, mixer.width, dtype=torch.float64)
    _, state = mixer(u, mixer.init_state(B), 0)
    _, at8 = mixer.step(u[:, :8], mixer.init_state(B), 0)
    _, at11 = mixer.step(u, mixer.init_state(B), 0)
    torch.testing.assert_close(state["tail"], u[:, 8:], rtol=0, atol=0)
    for key in mixer.memory_keys:
        torch.testing.assert_close(state[key], at8[key], **TOL)
        torch.testing.assert_close(mixer.memory_at(state, 11)[key], at11[key], **TOL)


def test_empty_call_and_wrong_pos():
    mixer = chunk_frozen_mixer()
    u = torch.randn(B, 5, mixer.width, dtype=torch.float64)
    _, state = mixer(u, mixer.init_state(B), 0)
    y, same = mixer(u[:, :0], state, 5)
    assert y.shape == (B, 0, mixer.width) and same.keys() == state.keys()
    with pytest.raises(ValueError, match=r"'lmm'.*5 tail tokens.*pos 4"):
        mixer(u, state, 4)
