"""HOPE's self-modifying mixer (nlc.runtime.selfmod) on the variants of its pattern: the
components' short conv, a momentum, rule gd, static roles (NL-arXiv Table 6's ablations) and
no component at all. Every variant the validator accepts compiles, trains one step with finite
loss and gradients, and streams exactly (float64, a mid-chunk cut and token-by-token calls).

Notation: B batch, T tokens, D width; the spec is HOPE's pattern at width 16, 2 heads, the
components' chunk 2 and the main memory's chunk 4.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F

import nlc
from nlc.primitives.layers import l2_normalize
from nlc.runtime.projections import split_heads
from nlc.runtime.selfmod import SelfModifyingMemory
from nlc.graph.validate import validate

NAMES = {"k": "mem_k", "v": "mem_v", "eta": "mem_lr", "alpha": "mem_alpha", "q": "mem_q"}


def hope_spec(components=("k", "v", "eta", "alpha"), *, rule="dgd", momentum=None, conv=0,
              retention="component") -> str:
    """HOPE's pattern with the given component roles; the others static: keys / values /
    queries projected from the input, lr a knob from the input, retention ``component``, a
    constant (``const``), a knob from the input (``input``) or absent (``none``)."""
    lr = "{from: mem_lr, init: 0.05, max: 0.5}" if "eta" in components else "{from: input, init: 0.05, max: 0.5}"
    update = f"rule: {rule}, lr: {lr}"
    if retention != "none":
        update += ", retention: " + {"component": "{from: mem_alpha, init: 0.99}", "const": "0.99",
                                     "input": "{from: input, init: 0.99}"}[retention]
    if momentum is not None:
        update += f", momentum: {momentum}"
    keys = "mem_k" if "k" in components else "{from: input, norm: l2}"
    values = "mem_v" if "v" in components else "{from: input, conv: 4}"
    conv_x = f", conv: {conv}" if conv else ""
    lines = ["nlc: 1", "extends: base/small.yaml", "levels:"]
    for role in components:
        lines += [f"  {NAMES[role]}:", "    type: memory",
                  "    memory: {kind: mlp, depth: 2, expansion: 2, residual: true}",
                  "    objective: {kind: l2, self_target: true}", f"    update: {{{update}}}", "    chunk: 2",
                  f"    keys: {keys}", f"    values: {values}",
                  f"    queries: {{from: input, project: false{conv_x}, norm: l2}}"]
    queries = "{from: mem_q, norm: l2}" if "q" in components else "{from: input, conv: 4, norm: l2}"
    lines += ["  memory:", "    type: memory", "    memory: {kind: mlp, depth: 2, expansion: 2, residual: true}",
              "    objective: {kind: l2, self_target: true}", f"    update: {{{update}}}", "    chunk: 4",
              "    keys: " + ("{from: mem_k, norm: l2}" if "k" in components else keys),
              f"    values: {values}", f"    queries: {queries}",
              "  attn: {type: attention}", "model:", "  width: 16", "  heads: 2",
              "  blocks: [{layers: [memory, attn]}]", "train: {seq_len: 16, batch: 2}"]
    return "\n".join(lines) + "\n"


VARIANTS = {
    "hope": {},
    "conv": dict(conv=4),
    "momentum": dict(momentum=0.9),
    "learned-momentum": dict(momentum="{learned: 0.5}"),
    "input-momentum": dict(momentum="{from: input, init: 0.5, max: 0.9}", conv=4),
    "gd": dict(rule="gd"),
    "gd-momentum": dict(rule="momentum", momentum=0.9),
    "static-k": dict(components=("v", "eta", "alpha")),
    "static-v": dict(components=("k", "eta", "alpha")),
    "static-gates": dict(components=("k", "v"), retention="input"),
    "no-retention": dict(components=("k", "v", "eta"), retention="none"),
    "adaptive-q": dict(components=("k", "v", "eta", "alpha", "q"), conv=2),
    "all-static": dict(components=(), retention="const", momentum=0.5),
    "all-static-gd": dict(components=(), rule="gd", retention="none"),
}


def compile_variant(name: str, dtype=torch.float32):
    return nlc.compile(hope_spec(**VARIANTS[name]), seed=0, dtype=dtype)


def mixer(model) -> SelfModifyingMemory:
    return getattr(model, model.LAYERS[0]).mixer


def tokens(T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_validates_trains_and_reads_its_roles(name):
    """Valid, a finite step, and the parameters of exactly the components it names."""
    text = hope_spec(**VARIANTS[name])
    spec, issues = validate(text)
    assert spec is not None and not [i for i in issues if i.severity == "error"], [i.format() for i in issues]
    model = nlc.compile(text, seed=0)
    x = tokens(16)
    logits, _ = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), x.roll(-1, 1).flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    components = VARIANTS[name].get("components", ("k", "v", "eta", "alpha"))
    levels = model.parameters_by_level()
    assert {n for n in NAMES.values() if n in levels} == {NAMES[r] for r in components}
    m = mixer(model)
    assert isinstance(m, SelfModifyingMemory)
    assert tuple(r for r in m.roles if r != "memory") == components
    assert m.precondition == (VARIANTS[name].get("rule", "dgd") == "dgd")
    assert (m.momentum is not None) == ("momentum" in VARIANTS[name])


@pytest.mark.parametrize("name", ["conv", "input-momentum", "static-k", "all-static", "adaptive-q"])
def test_streaming_equals_whole(name):
    """Token by token, then a cut mid-chunk: the logits and the state of one whole call
    (conv histories, momentum buffers and tail recomputed from the chunk-boundary anchor)."""
    model = compile_variant(name, torch.float64)
    x = tokens(19, seed=1)
    whole, whole_state = model(x)
    state, parts = model.init_state(2), []
    for a, b in zip([*range(6), 11], [*range(1, 6), 11, 19]):
        logits, state = model(x[:, a:b], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-9, atol=1e-10)
    layer = model.LAYERS[0]
    assert state[layer].keys() == whole_state[layer].keys()
    for key, value in whole_state[layer].items():
        torch.testing.assert_close(state[layer][key], value, rtol=1e-9, atol=1e-10, msg=key)


@pytest.mark.parametrize("name", ["hope", "momentum", "adaptive-q"])
def test_calls_on_the_components_grid_compute_each_tokens_roles_once(name):
    """Calls of 2 tokens (the components' chunk) inside the main memory's chunk of 4 (what
    a teach loop does): pass 1 sees every token once, only pass 2 recomputes its tail (of
    kept roles), and the logits are the whole call's."""
    model = compile_variant(name, torch.float64)
    m = mixer(model)
    seen = {"roles": 0, "memory": 0}
    for part, method in (("roles", "_roles"), ("memory", "_memory")):
        original = getattr(m, method)

        def counted(x, state, pos, original=original, part=part):
            seen[part] += x.shape[1]
            return original(x, state, pos)
        setattr(m, method, counted)
    x = tokens(16, seed=2)
    state, parts = model.init_state(2), []
    for a in range(0, 16, 2):
        logits, state = model(x[:, a:a + 2], state)
        parts.append(logits)
    assert seen == {"roles": 16, "memory": 16 // 4 * (2 + 4)}  # per main chunk: 2 new, then 2 kept + 2 new
    for key in ("roles", "memory"):
        delattr(m, "_" + key)
    torch.testing.assert_close(torch.cat(parts, 1), model(x)[0], rtol=1e-9, atol=1e-10)


def test_constant_zero_momentum_is_the_rule_without_momentum_exactly():
    """momentum: 0 keeps no buffers: the same parameters, state and logits as no momentum."""
    plain, zero = nlc.compile(hope_spec(), seed=0), nlc.compile(hope_spec(momentum=0), seed=0)
    x = tokens(16)
    (a, sa), (b, sb) = plain(x), zero(x)
    assert torch.equal(a, b)
    layer = plain.LAYERS[0]
    assert sa[layer].keys() == sb[layer].keys() and not any(k.startswith("S") for k in sa[layer])
    momentum, _ = nlc.compile(hope_spec(momentum=0.5), seed=0)(x)
    assert (momentum - a).abs().max() > 1e-4  # a momentum changes the model


def test_momentum_buffers_are_state():
    m = mixer(compile_variant("momentum"))
    state = m.init_state(3)
    for role in ("k", "v", "eta", "alpha", "memory"):
        for n in ("1", "2"):
            assert torch.equal(state[f"S{n}_{role}"], torch.zeros_like(state[f"W{n}_{role}"]))


def test_the_components_read_one_shared_causal_conv_of_their_input():
    """conv: 4 on the components' queries: one depthwise conv (D channels, window 4) of x,
    then the l2 norm per head; its history is the state's ``conv_x``."""
    m = mixer(compile_variant("conv"))
    src = m.component_input
    weight = dict(src.named_parameters())
    assert list(weight) == ["conv_w4"] and weight["conv_w4"].shape == (16, 4)
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(3))
    xc, hist = src(x, None)
    padded = torch.cat([x.new_zeros(2, 3, 16), x], 1)
    expect = sum(padded[:, i:i + 7] * weight["conv_w4"][:, i] for i in range(4))
    torch.testing.assert_close(xc, l2_normalize(split_heads(expect, 2)))
    torch.testing.assert_close(hist, x[:, -3:])
    assert m.init_state(2)["conv_x"].shape == (2, 3, 16)


def _marked(text: str, old: str, new: str, nth: int = 1, mark: str | None = None) -> str:
    """``text`` with the ``nth`` occurrence of line fragment ``old`` replaced by ``new`` and
    that line (or the first line holding ``mark``) marked ``# <-``, where the refusal must point."""
    parts = text.split(old)
    assert len(parts) > nth, old
    text = old.join(parts[:nth]) + new + "\x00" + old.join(parts[nth:])
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if (mark or "\x00") in line)
    lines[at] += "  # <-"
    return "\n".join(lines).replace("\x00", "") + "\n"


SELF_TARGET = "self_target: true"


@pytest.mark.parametrize("variant,old,new,nth,mark,path,fragment", [
    ("static-k", "keys: {from: input, norm: l2}", "keys: {from: input}", 2, None, "levels.mem_lr.keys",
     "the component 'mem_lr' reads the static keys of 'memory' (one projection serves the pattern)"),
    ("all-static", "memory: {kind: mlp, depth: 2, expansion: 2, residual: true}", "memory: {kind: matrix}", 1,
     SELF_TARGET, "levels.memory.objective.self_target", "self-generated values (self_target) run only in HOPE's "
     "self-modifying pattern, where 'memory' needs a residual depth-2 MLP memory"),
    ("all-static-gd", "rule: gd", "rule: delta", 1, SELF_TARGET, "levels.memory.objective.self_target",
     "where 'memory' needs rule dgd (or gd / momentum)"),
    ("hope", "queries: {from: input, project: false, norm: l2}", "queries: {from: input, norm: l2}", 1,
     None, "levels.mem_k.queries", "reads its input unprojected"),
    ("momentum", "momentum: 0.9}", "momentum: 0.5}", 1, None, "levels.mem_k.update",
     "the memories of the pattern share one lr, retention and momentum"),
])
def test_refusals_of_the_variants(tmp_path, variant, old, new, nth, mark, path, fragment):
    from tests.graph.test_capabilities import assert_refused

    assert_refused(tmp_path, _marked(hope_spec(**VARIANTS[variant]), old, new, nth, mark), path, fragment)


def test_dgd_on_an_mlp_memory_without_self_targets_is_refused(tmp_path):
    from tests.graph.test_capabilities import assert_refused

    text = hope_spec(**VARIANTS["all-static"]).replace("objective: {kind: l2, self_target: true}",
                                                       "objective: {kind: l2}")
    text = _marked(text, "rule: dgd", "rule: dgd")
    assert_refused(tmp_path, text, "levels.memory.update.rule",
                   "DGD (NL-arXiv Eq. 88) on an MLP memory runs only in HOPE's self-modifying pattern")


@st.composite
def pattern_specs(draw) -> str:
    """A HOPE-pattern spec with drawn roles, rule, knobs, sources and chunks: any subset of
    components, static keys / values / queries with any source options, lr / retention /
    momentum of every kind, rule dgd / gd / momentum, the components' conv and norm."""
    components = tuple(r for r in ("k", "v", "eta", "alpha", "q") if draw(st.booleans()))
    rule = draw(st.sampled_from(["dgd", "gd", "momentum"]))
    gate = st.sampled_from(["0.5", "{learned: 0.5}", "{from: input, init: 0.5}"])
    momentum = {"momentum": draw(gate), "dgd": draw(st.one_of(st.none(), gate)), "gd": None}[rule]
    retention = None if "alpha" in components else draw(st.one_of(st.none(), gate))
    lr = ("{from: mem_lr, init: 0.05, max: 0.5}" if "eta" in components
          else draw(st.sampled_from(["0.05", "{learned: 0.05}", "{from: input, init: 0.05, max: 0.5}"])))

    def static(norm: bool) -> str:
        opts = [f"conv: {draw(st.sampled_from([0, 2, 4]))}", f"project: {draw(st.sampled_from(['true', 'false']))}",
                f"activation: {draw(st.sampled_from(['none', 'silu']))}"] + (["norm: l2"] if norm else [])
        return "{from: input, " + ", ".join(opts) + "}"

    update = f"rule: {rule}, lr: {lr}"
    if "alpha" in components:
        update += ", retention: {from: mem_alpha, init: 0.99}"
    elif retention is not None:
        update += f", retention: {retention}"
    if momentum is not None:
        update += f", momentum: {momentum}"
    keys = "mem_k" if "k" in components else static(True)
    values = "mem_v" if "v" in components else static(False)
    comp_queries = "{from: input, project: false, conv: %d, norm: l2}" % draw(st.sampled_from([0, 3, 4]))
    co = draw(st.sampled_from([1, 2, 4]))
    lines = ["nlc: 1", "extends: base/small.yaml", "levels:"]
    for role in components:
        lines += [f"  {NAMES[role]}:", "    type: memory",
                  "    memory: {kind: mlp, depth: 2, expansion: 2, residual: true}",
                  "    objective: {kind: l2, self_target: true}", f"    update: {{{update}}}", f"    chunk: {co}",
                  f"    keys: {keys}", f"    values: {values}", f"    queries: {comp_queries}"]
    lines += ["  memory:", "    type: memory", "    memory: {kind: mlp, depth: 2, expansion: 2, residual: true}",
              "    objective: {kind: l2, self_target: true}", f"    update: {{{update}}}",
              f"    chunk: {co * draw(st.sampled_from([1, 2]))}",
              "    keys: " + ("{from: mem_k, norm: l2}" if "k" in components else keys), f"    values: {values}",
              "    queries: " + ("{from: mem_q, norm: l2}" if "q" in components else static(True)),
              "  attn: {type: attention}", "model:", "  width: 16", "  heads: 2",
              "  blocks: [{layers: [memory, attn]}]", "train: {seq_len: 16, batch: 2}"]
    return "\n".join(lines) + "\n"


@settings(max_examples=15, deadline=None)
@given(text=pattern_specs())
def test_every_pattern_the_validator_accepts_trains_and_streams(text):
    """Validation equals capability over the pattern's space: each drawn spec is valid (every
    draw is a legal pattern), trains one finite step, and streams exactly at a mid-chunk cut."""
    spec, issues = validate(text)
    assert spec is not None, [i.format() for i in issues]
    model = nlc.compile(text, seed=0, dtype=torch.float64)
    x = tokens(11, seed=2)
    whole, _ = model(x)
    loss = F.cross_entropy(whole.flatten(0, 1), x.roll(-1, 1).flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    state, parts = model.init_state(2), []
    for a, b in ((0, 3), (3, 11)):
        logits, state = model(x[:, a:b], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole.detach(), rtol=1e-9, atol=1e-10)


TABLE_6 = {  # NL-arXiv Table 6 row -> (spec, components, rule dgd, a momentum)
    "HOPE": ("hope", ("k", "v", "eta", "alpha"), True, True),
    "DGD replaced by GD": ("ablations/hope_gd", ("k", "v", "eta", "alpha"), False, True),
    "w/o momentum": ("ablations/hope_no_momentum", ("k", "v", "eta", "alpha"), True, False),
    "w/o weight decay": ("ablations/hope_no_weight_decay", ("k", "v", "eta"), True, True),
    "w/o inner projection k": ("ablations/hope_static_k", ("v", "eta", "alpha"), True, True),
    "w/o inner projection v": ("ablations/hope_static_v", ("k", "eta", "alpha"), True, True),
    "w/o inner projection q (adaptive q)": ("ablations/hope_adaptive_q", ("k", "v", "eta", "alpha", "q"), True, True),
    "static k, v, eta, alpha": ("ablations/hope_static_projections", (), True, True),
}


@pytest.mark.parametrize("row", TABLE_6)
def test_the_table_6_ablations_say_their_row(row):
    """Each ablation spec compiles to hope.yaml's mixer with exactly its row's change."""
    name, components, dgd, momentum = TABLE_6[row]
    model = nlc.compile(f"{name}", overrides=["model.width=16", "model.heads=2"], seed=0)
    m = mixer(model)
    assert tuple(r for r in m.roles if r != "memory") == components
    assert m.precondition == dgd and (m.momentum is not None) == momentum
    retention = "component" if "alpha" in m.roles else "knob" if "alpha" in m.knobs else "none"
    assert retention == {"w/o weight decay": "none", "static k, v, eta, alpha": "knob"}.get(row, "component")
    static = {"q", "k", "v"} - set(components)
    assert set(m.sources.irs if m.sources is not None else ()) == static
    assert m.component_input is None or m.component_input.irs["queries"].conv == 4
