"""Memory levels with ``period: P`` (issue 13, one clock): the memory ticks every P tokens.

* reference == fast: at every tick the memory equals the one the same mixer reaches with
  period 1 (the rule writes the P tokens since the last tick), and every output equals a
  read of the memory of the last tick (a loop written here, token by token);
* the clock, observed: the memory changes after tokens P-1, 2P-1, ... and nowhere else;
* streaming == whole at any split, and causality;
* validation: a chunk-frozen rule's chunk must divide P, a ticking memory reads before its
  write, HOPE's memories tick every token: each refused at its YAML line;
* a spec with ``period: 4`` compiles and trains from YAML, finite.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.graph.validate import validate

F64 = torch.float64

# memory fields of the rule families (each a different primitive), with the chunk a tick needs
FAMILIES = {
    "linear_attention": "objective: {kind: dot}, update: {rule: gd, lr: 0.2}, chunk: 2",
    "delta_rule": "update: {rule: delta, lr: 0.5}, chunk: 8",
    "deep_gd": "memory: {kind: mlp, depth: 2}, update: {rule: momentum, lr: 0.05, momentum: 0.5}, chunk: 2",
    "dgd_l2": "update: {rule: dgd, lr: 0.3}, chunk: 4",
}


def spec(family: str, period: int, extra: str = "") -> str:
    return ("nlc: 1\nlevels:\n"
            f"  mem: {{type: memory, period: {period}, keys: {{from: input, norm: l2}}, "
            f"{FAMILIES[family]}{extra}}}\n"
            "  opt: {type: optimizer}\n"
            "model: {width: 16, heads: 2, blocks: [{layers: [mem]}]}\n"
            "train: {seq_len: 32, batch: 2}\n")


def mixer_of(model):
    return getattr(model, model.LAYERS[0]).mixer


def build(family: str, period: int):
    model = nlc.compile(spec(family, period), seed=0).to(F64)
    return model, mixer_of(model)


def inputs(T: int, seed: int) -> torch.Tensor:
    return torch.randn(2, T, 16, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("period", [4, 8])
def test_ticks_equal_period_one_and_reads_lag_to_the_last_tick(family, period):
    ticking, m = build(family, period)
    _, every = build(family, 1)
    every.load_state_dict(m.state_dict())  # the same parameters, period 1
    T = 3 * period + 3
    x = inputs(T, 0)
    y, _ = m(x, m.init_state(2), 0)
    # the reference: token by token, the memory of the last tick read, written at each tick
    q = m.project(x, m.init_state(2))[0]["q"]  # (B, H, T, Dh): projections stream exactly
    state, last_tick, reads = every.init_state(2), None, []
    for t in range(T):
        if t % period == 0:
            last_tick = every.memory_at(state, t)
        reads.append(m.read_memory(last_tick, q[:, :, t:t + 1]))
        _, state = every(x[:, t:t + 1], state, t)
        if (t + 1) % period == 0:  # at a tick: the memory period 1 reaches
            _, ticked = m(x[:, :t + 1], m.init_state(2), 0)
            for key, value in every.memory_at(state, t + 1).items():
                torch.testing.assert_close(m.memory_at(ticked, t + 1)[key], value, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(y, m.output(torch.cat(reads, 2), x), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_memory_changes_only_at_ticks(family):
    period = 4
    _, m = build(family, period)
    x = inputs(13, 1)
    state = m.init_state(2)
    for t in range(13):
        before = m.memory_at(state, t)
        _, state = m(x[:, t:t + 1], state, t)
        after = m.memory_at(state, t + 1)
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        assert changed == ((t + 1) % period == 0), (family, t)


@settings(max_examples=15, deadline=None)
@given(family=st.sampled_from(sorted(FAMILIES)), period=st.sampled_from([2, 4, 8]),
       cuts=st.lists(st.integers(1, 20), max_size=4, unique=True), seed=st.integers(0, 2**16))
def test_streaming_equals_whole_and_is_causal(family, period, cuts, seed):
    _, m = build(family, period)
    x = inputs(21, seed)
    whole, end = m(x, m.init_state(2), 0)
    state, outs, cuts = m.init_state(2), [], sorted(cuts)
    for a, b in zip([0, *cuts], [*cuts, 21]):
        y, state = m(x[:, a:b], state, a)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=1e-9, atol=1e-10)
    for key, value in m.memory_at(end, 21).items():
        torch.testing.assert_close(m.memory_at(state, 21)[key], value, rtol=1e-9, atol=1e-10)
    t = cuts[0] if cuts else 10
    changed = x.clone()
    changed[:, t:] += 1.0
    after, _ = m(changed, m.init_state(2), 0)
    torch.testing.assert_close(after[:, :t], whole[:, :t], rtol=0, atol=0)


@pytest.mark.parametrize("fields, path, words", [
    (("deep_gd", 4, "chunk: 8"), "levels.mem.period", "chunk 8 does not divide 4"),
    (("delta_rule", 4, ", read: after_write"), "levels.mem.read", "read as it stood at its last tick"),
    (("linear_attention", "never", ""), "levels.mem.period", "period 'never'"),
])
def test_what_a_ticking_memory_cannot_do_is_refused_at_its_line(fields, path, words):
    family, period, extra = fields
    text = spec(family, period) if extra.startswith("chunk") else spec(family, period, extra)
    text = text.replace("chunk: 2", extra) if extra.startswith("chunk") else text
    _, issues = validate(text)
    found = [i for i in issues if i.path == path and i.severity == "error"]
    assert found and words in found[0].message, [i.format() for i in issues]
    assert found[0].line == 3  # the level's line in the YAML


def test_hope_memories_tick_every_token():
    _, issues = validate("specs/hope.yaml", ["levels.memory.period=4"])
    assert any(i.path == "levels.memory.period" and "every token" in i.message for i in issues)


def test_a_period_4_memory_trains_from_yaml():
    model = nlc.compile(spec("deep_gd", 4), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(12):
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.1, losses
    assert model.schedule.token_periods["mem"] == 4
