"""Knowledge-transfer edges compile (issue 13; rule 13, nlc.graph.transfers; nlc.runtime.transfer).

* each kind has the effect it names: conditioning adds the source's output to the target's
  input with no gradient across, backprop the same with the gradient, generation scales the
  target's output per token, initialization is the target's own nested initial state
  (re-initialised from the source at its ticks);
* at initialisation (every map zero) a model with edges equals the model without them;
* parameter counts equal ``nlc graph``'s; streaming equals one call;
* what cannot compile is refused at its YAML line.
"""
from __future__ import annotations

import pytest
import torch

import nlc
from nlc.graph.sizes import level_sizes
from nlc.runtime.transfer import Transfers
from nlc.graph.validate import load_spec, validate

SPEC = "specs/transfer.yaml"
SMALL = ["model.width=32", "model.heads=2", "train.seq_len=256"]


def build(overrides=(), seed=0):
    return nlc.compile(SPEC, overrides=[*SMALL, *overrides], seed=seed)


def tokens(T=40, seed=0):
    return torch.randint(0, 256, (2, T + 1), generator=torch.Generator().manual_seed(seed))


def randomise_maps(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Transfers):
                for w in module.maps:
                    w.copy_(0.2 * torch.randn(w.shape, generator=g))


def test_module_effects_of_each_kind():
    torch.manual_seed(0)
    t = Transfers(("conditioning", "backprop", "generation"), 8, "y")
    for w in t.maps:
        torch.nn.init.normal_(w)
    u, y = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    o = [torch.randn(2, 3, 8, requires_grad=True) for _ in range(3)]
    cond = t.condition(u, o)
    torch.testing.assert_close(cond, u + o[0] @ t.maps[0].T + o[1] @ t.maps[1].T)
    gen = t.generate(y, o)
    torch.testing.assert_close(gen, y * (1 + o[2] @ t.maps[2].T))
    grads = torch.autograd.grad(cond.sum() + gen.sum(), o, allow_unused=True)
    assert grads[0] is None  # conditioning: no gradient reaches the source
    assert grads[1].abs().sum() > 0 and grads[2].abs().sum() > 0  # backprop, generation: it does


def test_at_initialisation_the_edges_change_nothing_then_they_act():
    x = tokens()
    plain = build(["~transfer"])  # the same seed: the edges' zero maps draw no random numbers
    edged = build()
    plain_params = dict(plain.named_parameters())
    assert all(torch.equal(p, plain_params[name]) for name, p in edged.named_parameters() if name in plain_params)
    a, _ = plain(x[:, :-1], targets=x[:, 1:])
    b, _ = edged(x[:, :-1], targets=x[:, 1:])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    randomise_maps(edged)
    c, _ = edged(x[:, :-1], targets=x[:, 1:])
    assert (c - a).abs().max() > 1e-3


def test_conditioning_stops_the_gradient_and_backprop_passes_it():
    """The same map, once as conditioning and once as backprop: equal forwards (no teach
    signal: with one, backprop also carries the target's loss into the source's task-driven
    updates); the source level's parameters get a gradient through the edge only with backprop."""
    x = tokens(seed=3)

    def grads(kind):
        model = build([f"transfer.0.kind={kind}"])
        randomise_maps(model)
        logits, _ = model(x[:, :-1])
        loss = logits.square().mean()
        slow = model.parameters_by_level()["cms_slow"]
        return logits.detach(), torch.autograd.grad(loss, slow)

    fwd_c, g_c = grads("conditioning")
    fwd_b, g_b = grads("backprop")
    torch.testing.assert_close(fwd_c, fwd_b, rtol=0, atol=0)
    assert any(not torch.allclose(a, b) for a, b in zip(g_c, g_b))


def test_initialization_edge_is_the_nested_reset():
    """cms_mid is re-initialised from cms_slow's weights when cms_slow ticks (token 127)."""
    model = build(["train.seq_len=256"])
    x = tokens(T=128)
    _, state = model(x[:, :-1], targets=x[:, 1:])
    mid, slow = state["b0_r0_cms_mid"], state["b0_r0_cms_slow"]
    for key in ("w_gate", "w_up", "w_out"):
        torch.testing.assert_close(mid[key], slow[key], rtol=0, atol=0)


def test_parameter_counts_and_streaming():
    model = build()
    counts = model.parameter_counts()
    sizes = level_sizes(load_spec(SPEC, SMALL))
    assert {k: v for k, v in counts.items() if k} == \
        {k: s.total_params for k, s in sizes.items() if s.total_params}  # maps count for the target
    randomise_maps(model)
    x = tokens(T=48, seed=5)
    whole, _ = model(x[:, :-1], targets=x[:, 1:])
    state, parts = model.init_state(2), []
    for a, b in [(0, 16), (16, 32), (32, 48)]:  # on the teach grid (gcd of the CMS periods: 16)
        y, state = model(x[:, a:b], state, targets=x[:, a + 1:b + 1])
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides, path, words", [
    (["model.blocks.0.layers=[cms_fast, cms_slow, cms_mid, attn]"], "transfer.0.from",
     "with no layer of 'cms_slow' before it"),
    (["model.blocks.0.layers=[attn, cms_slow, {parallel: [cms_mid, cms_fast]}]"], "model.blocks.0.layers.2",
     "runs in a layer of its own"),
    (["transfer.0.from=outer"], "transfer.0.from", "connects levels with outputs"),
    (["transfer.3.from=attn"], "transfer.3", "does not meta-learn it"),
    (["~levels.cms_mid.init"], "transfer.3", "levels.cms_mid.init: {from: cms_slow}"),
])
def test_what_does_not_compile_is_refused_at_its_line(overrides, path, words):
    _, issues = validate(SPEC, [*SMALL, *overrides])
    found = [i for i in issues if i.path == path and i.severity == "error"]
    assert found, [i.format() for i in issues]
    assert any(words in i.message + i.hint and i.line is not None for i in found), [i.format() for i in found]


def test_an_initialization_edge_from_the_outer_optimizer_names_the_learned_init():
    spec, issues = validate(SPEC, [*SMALL, "transfer.3.from=outer", "transfer.3.to=cms_fast"])
    assert spec is not None, [i.format() for i in issues]
