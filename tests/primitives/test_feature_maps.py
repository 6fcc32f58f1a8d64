"""ATLAS' polynomial feature map (nlc/primitives/feature_maps.py) against its formula written out,
and in the memory mixer: the same map on keys and queries, coefficients learned by the level."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.graph.sizes import level_params_and_state
from nlc.primitives.feature_maps import PolynomialFeatures, polynomial, taylor_coefficients
from nlc.graph.validate import load_spec

TINY = ["model.width=16", "model.heads=2", "train.seq_len=16", "train.batch=2"]


def written_out(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """phi(x)_j = sum_i a[h, i] x_j^i, term by term."""
    out = torch.zeros_like(x)
    for h in range(a.shape[0]):
        for i in range(a.shape[1]):
            out[:, h] += a[h, i] * x[:, h] ** i
    return out


@pytest.mark.parametrize("degree", [1, 2, 3, 8])
def test_polynomial_is_the_formula(degree):
    g = torch.Generator().manual_seed(degree)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    a = torch.randn(3, degree + 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(polynomial(x, a), written_out(x, a), rtol=1e-12, atol=1e-12)


def test_taylor_coefficients_are_one_over_factorials():
    assert taylor_coefficients(3) == [1.0, 1.0, 0.5, 1 / 6]
    fm = PolynomialFeatures(heads=2, degree=4)
    got = torch.stack(tuple(fm.coefficients), dim=1)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, torch.tensor([[1 / math.factorial(i) for i in range(5)]] * 2))
    assert all(p.dim() == 1 for p in fm.parameters())  # vector knobs: no weight decay, no Muon


def test_initial_map_is_the_normalised_taylor_series_at_unit_rms():
    x = torch.nn.functional.normalize(torch.randn(1, 2, 3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    s = 8 ** 0.5 * x  # unit RMS per entry
    phi = 1 + s + s ** 2 / 2 + s ** 3 / 6
    torch.testing.assert_close(PolynomialFeatures(2, 3)(x), phi / phi.norm(dim=-1, keepdim=True), rtol=1e-5, atol=1e-6)


@given(st.integers(1, 8), st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_degree_one_with_a0_zero_a1_one_is_the_identity(degree, seed):
    """a = (0, 1, 0, ...): phi(x) = x; on unit-norm x (what the map takes) the normalised map too."""
    x = torch.nn.functional.normalize(torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(seed)), dim=-1)
    a = torch.zeros(3, degree + 1)
    a[:, 1] = 1.0
    torch.testing.assert_close(polynomial(x, a), x, rtol=0, atol=0)
    fm = PolynomialFeatures(3, degree)
    with torch.no_grad():
        for i, p in enumerate(fm.coefficients):
            p.fill_(1.0 if i == 1 else 0.0)
    torch.testing.assert_close(fm(x), x, rtol=1e-6, atol=1e-6)


@given(st.integers(1, 8), st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_unit_norm_in_unit_norm_out_and_per_token(degree, seed):
    """Bounded on unit-norm inputs (|x_j| <= 1), unit-norm out, and token by token: the map of a
    sequence is the map of each token (nothing crosses time, so streaming splits it anywhere)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(2, 2, 7, 5, generator=g), dim=-1)
    fm = PolynomialFeatures(2, degree)
    with torch.no_grad():
        for p in fm.coefficients:
            p.copy_(torch.randn(2, generator=g))
    y = fm(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(2, 2, 7), rtol=1e-4, atol=1e-4)
    cut = int(torch.randint(1, 7, (), generator=g))
    torch.testing.assert_close(torch.cat([fm(x[:, :, :cut]), fm(x[:, :, cut:])], 2), y, rtol=0, atol=0)


def test_coefficients_get_gradients():
    fm = PolynomialFeatures(2, 3)
    x = torch.nn.functional.normalize(torch.randn(1, 2, 4, 6, generator=torch.Generator().manual_seed(1)), dim=-1)
    (fm(x) * torch.randn(1, 2, 4, 6, generator=torch.Generator().manual_seed(2))).sum().backward()
    for p in fm.coefficients:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


SPEC = """nlc: 1
extends: base/small.yaml
levels:
  mem:
    type: memory
    memory: {kind: matrix}
    update: {rule: delta, lr: 0.5}
    chunk: 4
    keys: {from: input, norm: l2}
    queries: {from: input, norm: l2}
    features: {kind: polynomial, degree: 3}
model:
  blocks: [{layers: [mem]}]
"""


def test_the_mixer_maps_keys_and_queries_with_one_map_owned_by_the_level():
    model = nlc.compile(SPEC, overrides=TINY, seed=0)
    mixer = getattr(model, model.LAYERS[0]).mixer
    assert mixer.features is not None and mixer.features.degree == 3
    owned = {id(p) for p in model.parameters_by_level()["mem"]}
    assert all(id(p) in owned for p in mixer.features.coefficients)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    state = mixer.init_state(2)
    mapped, _ = mixer.project(x, state)
    raw, _ = mixer.sources.project(x, {})
    for role in ("q", "k"):
        torch.testing.assert_close(mapped[role], mixer.features(raw[role]))
    torch.testing.assert_close(mapped["v"], raw["v"])
    # retrieve (MAC's read) reads the memory at phi(q) too
    h, _ = mixer.retrieve(x, state)
    torch.testing.assert_close(h, mixer.output(mixer.read_memory(state, mapped["q"]), x))


def test_the_coefficients_are_trained_by_the_loss():
    model = nlc.compile(SPEC, overrides=TINY, seed=0)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    logits, _ = model(x)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.roll(-1, 1).flatten())
    loss.backward()
    coefficients = getattr(model, model.LAYERS[0]).mixer.features.coefficients
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in coefficients)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_graph_counts_the_coefficients():
    spec = load_spec(SPEC, overrides=TINY)
    model = nlc.compile(SPEC, overrides=TINY, seed=0)
    counted, _ = level_params_and_state(spec, "mem")
    assert counted == sum(p.numel() for p in model.parameters_by_level()["mem"])


def test_the_map_captures_whole_with_torch_compile():
    fm = PolynomialFeatures(2, 3)
    x = torch.nn.functional.normalize(torch.randn(1, 2, 4, 6, generator=torch.Generator().manual_seed(3)), dim=-1)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(fm, backend="eager", fullgraph=True)(x), fm(x), rtol=0, atol=0)


def test_a_mac_memory_reads_through_the_map_and_streams_equal_to_whole():
    """Titans MAC reads its memory with ``retrieve`` (segment queries) and writes it with the
    attention output: both go through the map, split mid-chunk or not."""
    overrides = ["model.width=32", "model.heads=2", "model.blocks.0.repeat=1", "levels.lmm.chunk=8",
                 "levels.lmm.features={kind: polynomial, degree: 2}"]
    model = nlc.compile("titans_mac", overrides=overrides, seed=0)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    whole, _ = model(x)
    state, parts = model.init_state(2), []
    for a, b in ((0, 7), (7, 16)):
        logits, state = model(x[:, a:b], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-4, atol=1e-4)
    memory = next(m for m in model.modules() if getattr(m, "features", None) is not None)
    with torch.no_grad():
        memory.features.coefficients[2].add_(1.0)
    assert not torch.allclose(model(x)[0], whole)
