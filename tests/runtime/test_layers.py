"""Layer kinds Residual and Parallel (nlc/runtime/layers.py), and small models built from
the bundled specs out of the runtime mixers."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from nlc.graph.sizes import level_sizes, model_params
from nlc.ir.nodes import AttentionIR, KnobIR, MLPIR, ObjectiveIR, RuleIR
from nlc.ir.resolve import resolve
from nlc.primitives.layers import RMSNorm
from nlc.runtime.attention import AttentionMixer
from nlc.runtime.cms import CMSMixer
from nlc.runtime.layers import Parallel, Residual
from nlc.runtime.mlp import MLPMixer
from nlc.graph.validate import load_spec

D = 8
F64 = torch.float64



def attn(window=None, name="attn") -> AttentionMixer:
    ir = AttentionIR(name=name, type="attention", order=0, frequency=Fraction(10 ** 18),
                     outer="outer", origin="t:1", heads=2, head_dim=4, window=window, rope=True,
                     persistent=None, qk_norm=False)
    return AttentionMixer(ir, D).to(F64)


def cms(period=3, objective="l2", lr=0.2, name="cms", activation="swiglu") -> CMSMixer:
    rule = RuleIR(kind="gd", lr=KnobIR("constant", lr), momentum=None, retention=None,
                  weight_decay=0.0, retention_kind="l2", q=2.0, shrink=0.0, grad_clip=None,
                  grad_normalize=False)
    ir = MLPIR(name=name, type="mlp", order=1, frequency=Fraction(1, period), outer="outer",
               origin="t:2", hidden=6, activation=activation, period=period,
               objective=ObjectiveIR(objective), rule=rule, init="learned", init_level=None,
               reset="never", flush="carry")
    return CMSMixer(ir, D).to(F64)


def mlp() -> MLPMixer:
    ir = MLPIR(name="mlp", type="mlp", order=1, frequency=Fraction(1, 2048), outer="outer",
               origin="t:3", hidden=6, activation="gelu", period=0, objective=None, rule=None,
               init="learned", init_level=None, reset="never", flush="carry")
    return MLPMixer(ir, D).to(F64)


def randomise(module):
    """Non-trivial norm gains / combine logits, so the tests see them."""
    with torch.no_grad():
        for n, p in module.named_parameters():
            if n.endswith("logits") or "norm" in n:
                p.add_(0.3 * torch.randn_like(p))
    return module


def stream(layer, x, cuts):
    state, ys = layer.init_state(x.shape[0]), []
    for a, b in zip([0] + cuts, cuts + [x.shape[1]]):
        y, state = layer(x[:, a:b], state, a)
        ys.append(y)
    return torch.cat(ys, dim=1), state


# ============================================================================ Residual
@pytest.mark.parametrize("norm", ["rms", "layer", "none"])
@pytest.mark.parametrize("residual", [True, False])
def test_residual_formula_and_state_passthrough(norm, residual):
    m = attn(window=3)
    layer = randomise(Residual(m, norm, residual, D).to(F64))
    x = torch.randn(2, 5, D, dtype=F64)
    state = layer.init_state(2)
    assert state.keys() == m.init_state(2).keys()
    y, new = layer(x, state, 0)
    u = {"rms": lambda t: t * torch.rsqrt((t * t).mean(-1, keepdim=True) + 1e-6) * layer.norm.weight,
         "layer": lambda t: F.layer_norm(t, (D,), layer.norm.weight, layer.norm.bias),
         "none": lambda t: t}[norm](x)
    y_m, s_m = m(u, m.init_state(2), 0)
    torch.testing.assert_close(y, x + y_m if residual else y_m)
    assert new.keys() == s_m.keys() and all(torch.equal(new[k], s_m[k]) for k in new)
    assert not hasattr(layer, "level")  # norms are model parameters, not a level's


def test_residual_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm"):
        Residual(mlp(), "batch", True, D)


# ============================================================================ Parallel
@pytest.mark.parametrize("combine", ["sum", "mean", "learned", "gate"])
def test_parallel_combine_formulas(combine):
    mixers = [attn(window=4), cms(3)] + ([] if combine == "gate" else [mlp()])
    layer = randomise(Parallel(mixers, combine, "rms", True, D).to(F64))
    x = torch.randn(2, 7, D, dtype=F64)
    y, state = layer(x, layer.init_state(2), 0)
    u = layer.norm(x)
    outs = [m(u, m.init_state(2), 0)[0] for m in mixers]
    if combine == "sum":
        o = sum(outs)
    elif combine == "mean":
        o = sum(outs) / len(outs)
    elif combine == "learned":
        w = torch.softmax(layer.logits, 0)
        assert torch.allclose(w.sum(), torch.tensor(1.0, dtype=F64)) and (w > 0).all()
        o = sum(wi * oi for wi, oi in zip(w, outs))
    else:  # Titans MAG: norm(attention) * sigmoid(norm(memory)), learnable norm weights
        assert isinstance(layer.norm_a, RMSNorm) and isinstance(layer.norm_m, RMSNorm)
        o = layer.norm_a(outs[0]) * torch.sigmoid(layer.norm_m(outs[1]))
    torch.testing.assert_close(y, x + o)


def test_parallel_state_layout_is_flat_and_prefixed():
    a, c, m = attn(window=3), cms(3), mlp()
    layer = Parallel([a, c, m], "sum", "rms", True, D).to(F64)
    state = layer.init_state(2)
    want = {f"0.{k}" for k in a.init_state(2)} | {f"1.{k}" for k in c.init_state(2)}
    assert set(state) == want
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    _, new = layer(torch.randn(2, 4, D, dtype=F64), state, 0)
    assert set(new) == want and new is not state
    assert not layer.teach


def test_parallel_errors():
    with pytest.raises(ValueError, match="exactly two"):
        Parallel([attn(), cms(), mlp()], "gate", "rms", True, D)
    with pytest.raises(ValueError, match="unknown combine"):
        Parallel([attn()], "max", "rms", True, D)


@given(combine=st.sampled_from(["sum", "mean", "learned", "gate"]), T=st.integers(1, 12),
       window=st.sampled_from([None, 2, 4]), C=st.integers(1, 4), data=st.data())
def test_parallel_streaming_equals_whole(combine, T, window, C, data):
    torch.manual_seed(T * 10 + C)
    layer = randomise(Parallel([attn(window), cms(C)], combine, "rms", True, D).to(F64))
    x = torch.randn(2, T, D, dtype=F64)
    cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), max_size=4)) if T > 1 else set())
    y_w, s_w = stream(layer, x, [])
    y_s, s_s = stream(layer, x, list(cuts))
    torch.testing.assert_close(y_s, y_w, rtol=1e-9, atol=1e-10)
    assert s_s.keys() == s_w.keys()
    for k in s_w:
        torch.testing.assert_close(s_s[k], s_w[k], rtol=1e-9, atol=1e-10)


def test_parallel_causal_and_batch_independent():
    layer = randomise(Parallel([attn(3), cms(2)], "gate", "rms", True, D).to(F64))
    x = torch.randn(3, 8, D, dtype=F64)
    y, _ = layer(x, layer.init_state(3), 0)
    x2 = x.clone()
    x2[:, 5] += 1.0
    x2[1] = torch.randn_like(x2[1])
    y2, _ = layer(x2, layer.init_state(3), 0)
    assert torch.equal(y[0, :5], y2[0, :5])
    assert torch.equal(y[2, :5], y2[2, :5]) and not torch.allclose(y[0, 5:], y2[0, 5:])
    for i in range(3):
        yi, _ = layer(x[i:i + 1], layer.init_state(1), 0)
        torch.testing.assert_close(yi, y[i:i + 1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("combine", ["learned", "gate"])
def test_parallel_gradients_reach_every_parameter(combine):
    layer = randomise(Parallel([attn(3), cms(2)], combine, "layer", True, D).to(F64))
    x = torch.randn(2, 6, D, dtype=F64)
    y, _ = stream(layer, x, [3])
    (y ** 2).sum().backward()
    for n, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("kind", ["residual", "parallel"])
def test_compile_fullgraph_equals_eager(kind):
    if kind == "residual":
        layer = Residual(cms(4, objective="task"), "rms", True, D).to(F64)
    else:
        layer = randomise(Parallel([attn(3), cms(2)], "gate", "rms", True, D).to(F64))
    x = torch.randn(2, 4, D, dtype=F64)
    _, state = layer(x[:, :2], layer.init_state(2), 0)
    compiled = torch.compile(layer.forward, backend="eager", fullgraph=True)
    y_c, s_c = compiled(x[:, 2:], state, 2)
    y_e, s_e = layer(x[:, 2:], state, 2)
    torch.testing.assert_close(y_c, y_e, rtol=1e-12, atol=1e-12)
    assert s_c.keys() == s_e.keys()
    for k in s_e:
        torch.testing.assert_close(s_c[k], s_e[k], rtol=1e-12, atol=1e-12)


# ============================================================================ teach through layers
def teachers(layer):
    """The CMS mixers of a layer that learn from the task loss."""
    return [m for m in layer.modules() if isinstance(m, CMSMixer) and m.teach]


def due(layer, end):
    """The reference clock: the teaching levels whose period divides ``end`` (tokens consumed)."""
    return frozenset(m.level for m in teachers(layer) if end % m.period == 0)


def test_parallel_learned_teach_shares_the_signal():
    mixers = [cms(2, "task", name="f"), cms(4, "task", name="m"), cms(8, "task", name="s")]
    layer = randomise(Parallel(mixers, "learned", "rms", True, D).to(F64))
    assert layer.teach
    x = torch.randn(2, 2, D, dtype=F64)
    y, state = layer(x, layer.init_state(2), 4)  # tokens 4, 5
    assert torch.equal(y, x + state["out"])
    delta = torch.randn(2, 2, D, dtype=F64)
    new = layer.learn(state, delta, 4, due(layer, 6))
    assert "out" not in new and not any(k.endswith(".out") or k.endswith(".in") for k in new)
    w = torch.softmax(layer.logits.detach(), 0)
    (g_auto,) = torch.autograd.grad(state["out"], state["1.out"], grad_outputs=delta,
                                    retain_graph=True)
    torch.testing.assert_close(g_auto, w[1] * delta)
    for i, m in enumerate(mixers):
        sub = {k[2:]: v for k, v in state.items() if k.startswith(f"{i}.")}
        want = m.learn(sub, w[i] * delta, 4, m.level in due(layer, 6))
        for k, v in want.items():
            torch.testing.assert_close(new[f"{i}.{k}"], v, rtol=1e-12, atol=1e-12)
    # the fast level (C = 2) completed a chunk after token 5, the others did not
    assert not torch.equal(new["0.w_out"], state["0.w_out"])
    assert torch.equal(new["1.w_out"], state["1.w_out"]) and torch.equal(new["2.w_out"], state["2.w_out"])


def test_parallel_gate_teach_uses_the_vjp_through_the_gate():
    a, c = attn(3), cms(2, "task")
    layer = randomise(Parallel([a, c], "gate", "rms", False, D).to(F64))
    assert layer.teach
    x = torch.randn(2, 2, D, dtype=F64)
    y, state = layer(x, layer.init_state(2), 0)
    delta = torch.randn(2, 2, D, dtype=F64)
    new = layer.learn(state, delta, 0, due(layer, 2))
    ya = a(layer.norm(x), a.init_state(2), 0)[0].detach()
    _, vjp = torch.func.vjp(lambda m: layer.norm_a(ya) * torch.sigmoid(layer.norm_m(m)),
                            state["1.out"].detach())
    (share,) = vjp(delta)
    want = c.learn({k[2:]: v for k, v in state.items() if k.startswith("1.")}, share, 0, True)
    for k, v in want.items():
        torch.testing.assert_close(new[f"1.{k}"], v, rtol=1e-10, atol=1e-12)
    for k in a.init_state(2):
        assert torch.equal(new[f"0.{k}"], state[f"0.{k}"])


def test_finish_passes_through_layers():
    c = cms(4, "task")
    c.policy = "drop"
    layer = Parallel([attn(2), c], "sum", "rms", True, D).to(F64)
    x = torch.randn(2, 2, D, dtype=F64)
    _, state = layer(x, layer.init_state(2), 0)
    state = layer.learn(state, torch.randn(2, 2, D, dtype=F64), 0, due(layer, 2))
    assert state["1.acc.w_out"].abs().sum() > 0
    done = layer.finish(state)
    assert done.keys() == state.keys() and not done["1.acc.w_out"].any()
    assert torch.equal(done["0.k"], state["0.k"])
    res = Residual(c, "rms", True, D)
    assert not res.finish({k[2:]: v for k, v in state.items() if k.startswith("1.")})["acc.w_out"].any()


# ============================================================================ models from specs
class StandInMemory(nn.Module):
    """A stateful causal mixer standing in for a memory level (running mean of a projection)."""

    teach = False

    def __init__(self, name, width):
        super().__init__()
        self.level = name
        self.proj = nn.Linear(width, width, bias=False)

    def init_state(self, batch):
        return {"sum": self.proj.weight.new_zeros(batch, self.proj.in_features)}

    def forward(self, x, state, pos):
        c = state["sum"].unsqueeze(1) + torch.cumsum(self.proj(x), 1)
        n = pos + torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)
        return c / n[:, None], {"sum": c[:, -1]}


def mixer_for(ir, name):
    lv = ir.levels[name]
    if lv.type == "attention":
        return AttentionMixer(lv, ir.width, ir.levels[lv.persistent] if lv.persistent else None)
    if lv.type == "mlp":
        return CMSMixer(lv, ir.width) if lv.period else MLPMixer(lv, ir.width)
    return StandInMemory(name, ir.width)


class TinyModel(nn.Module):
    """Embedding, the spec's layers, final norm, head; teach driven as NLCModel does."""

    def __init__(self, ir):
        super().__init__()
        self.embed = nn.Embedding(ir.vocab, ir.width)
        layers = []
        for L in ir.layers:
            mixers = [mixer_for(ir, n) for n in L.levels]
            if L.kind == "level":
                layers.append(Residual(mixers[0], L.norm, L.residual, ir.width))
            else:
                layers.append(Parallel(mixers, L.combine, L.norm, L.residual, ir.width))
        self.layers = nn.ModuleList(layers)
        self.final_norm = RMSNorm(ir.width)

    def run(self, tokens, targets, states, teach=True, record=None, start=0):
        teach_ids = [i for i, l in enumerate(self.layers) if l.teach] if teach else []
        period = math.gcd(*[m.period for i in teach_ids for m in teachers(self.layers[i])]) if teach_ids else tokens.shape[1]
        pos, total, logits, end = start, 0.0, [], start + tokens.shape[1]
        while pos < end:
            stop = min(end, pos + period - pos % period)
            x = self.embed(tokens[:, pos - start:stop - start])
            for i, layer in enumerate(self.layers):
                x, states[i] = layer(x, states[i], pos)
            lg = self.final_norm(x) @ self.embed.weight.T
            loss = F.cross_entropy(lg.flatten(0, 1), targets[:, pos - start:stop - start].flatten(),
                                   reduction="sum")
            if teach_ids:
                outs = [states[i]["out"] for i in teach_ids]
                deltas = torch.autograd.grad(loss, outs, retain_graph=True)
                for i, d in zip(teach_ids, deltas):
                    states[i] = self.layers[i].learn(states[i], d, pos, due(self.layers[i], stop))
            if record is not None:
                record.append((stop, [dict(s) for s in states]))
            logits.append(lg)
            total = total + loss
            pos = stop
        return torch.cat(logits, 1), total, states


def parameters_by_level(module):
    """The ownership rule of docs/runtime-contract.md (as NLCModel.parameters_by_level)."""
    owner = {}
    for mod in module.modules():
        level = getattr(mod, "level", None)
        for p in mod.parameters(recurse=level is not None):
            owner[id(p)] = level if level is not None else owner.get(id(p), "")
    counts = {}
    for p in module.parameters():
        counts[owner.get(id(p), "")] = counts.get(owner.get(id(p), ""), 0) + p.numel()
    return counts


SMALL = ["model.width=16", "model.heads=2"]
CMS_SMALL = ["levels.cms_fast.period=2", "levels.cms_mid.period=4", "levels.cms_slow.period=8"]


@pytest.mark.parametrize("spec,overrides", [
    ("transformer.yaml", []), ("swa_transformer.yaml", ["levels.swa.window=5"]),
    ("cms.yaml", CMS_SMALL), ("cms_independent.yaml", CMS_SMALL),
    ("titans_mag.yaml", ["levels.swa.window=5", "levels.persist.tokens=3"]),
])
def test_models_from_specs(spec, overrides):
    sp = load_spec("specs/" + spec, SMALL + overrides)
    ir = resolve(sp)
    torch.manual_seed(0)
    model = TinyModel(ir).to(F64)
    B, T = 2, 16
    tokens = torch.randint(0, ir.vocab, (B, T + 1))

    # per-level parameter counts agree with `nlc graph` (memory levels are stand-ins here)
    counts = parameters_by_level(model)
    sizes = level_sizes(sp)
    for name, lv in ir.levels.items():
        if lv.type in ("attention", "mlp", "persistent"):
            assert counts.get(name, 0) == sizes[name].total_params, name
    extra = model_params(sp)
    assert counts[""] == extra["embedding"] + extra["norms"] + extra["combine"]

    # teach-driven run: every CMS level's weights change exactly at multiples of its period
    record = []
    logits, loss, states = model.run(tokens[:, :-1], tokens[:, 1:],
                                     [l.init_state(B) for l in model.layers], record=record)
    assert logits.shape == (B, T, ir.vocab)
    cms_keys = []  # (layer index, state key prefix, period)
    for i, layer in enumerate(model.layers):
        mixers = [layer.mixer] if isinstance(layer, Residual) else list(layer.mixers)
        for j, m in enumerate(mixers):
            if isinstance(m, CMSMixer):
                cms_keys.append((i, "" if isinstance(layer, Residual) else f"{j}.", m.period))
    prev = [dict(s) for s in [l.init_state(B) for l in model.layers]]
    for stop, snap in record:
        for i, pre, C in cms_keys:
            changed = not torch.equal(prev[i][pre + "w_out"], snap[i][pre + "w_out"])
            assert changed == (stop % C == 0), (spec, i, pre, stop)
        prev = snap
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n

    # streaming: two calls with the carried states (split on the teach grid) == one call
    states2 = [l.init_state(B) for l in model.layers]
    lg1, _, states2 = model.run(tokens[:, :8], tokens[:, 1:9], states2)
    lg2, _, states2 = model.run(tokens[:, 8:-1], tokens[:, 9:], states2, start=8)
    torch.testing.assert_close(torch.cat([lg1, lg2], 1), logits, rtol=1e-9, atol=1e-10)
    for s2, s in zip(states2, states):
        for k in s:
            if k not in ("in", "out") and not k.endswith(".in") and not k.endswith(".out"):
                torch.testing.assert_close(s2[k], s[k], rtol=1e-9, atol=1e-10)
