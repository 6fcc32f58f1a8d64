"""Level lifetimes (issue 13): ``lifetime: stream`` carries a level's state across
consecutive sequences of a stream, exactly; ``sequence`` is today's behaviour.

* streaming == whole: a stream cut into consecutive sequences at teach boundaries, each
  started from ``next_sequence`` of the last, gives the logits of one call on the whole
  stream (random CMS periods that need not divide each other, memory chunks, a nested chain
  of three levels run past its slowest boundary, sequence lengths not multiples of periods);
* the clock, observed: a stream CMS level's weights change at the stream positions that are
  multiples of its period and nowhere else, across sequence boundaries;
* causality with test-time learning on: changing tokens after t changes no logit at or before t;
* training: a run of a stream spec resumed from a mid-stream checkpoint ends with the same
  weights as an uninterrupted one, bit for bit on CPU, and the carried state is what makes it so;
* validation: what the runtime cannot carry is refused at its YAML line.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.runtime.lifetime import CLOCK
from nlc.graph.validate import validate

CMS = "{{type: mlp, hidden: 16, period: {p}, objective: {{kind: task}}, update: {{rule: gd, lr: 0.05}}, lifetime: {life}{extra}}}"


def stream_spec(periods: list[int], chunk: int, nested: bool, life: str = "stream") -> str:
    levels = {"mem": f"{{type: memory, chunk: {chunk}, update: {{rule: gd, lr: 0.3}}, "
                     f"keys: {{from: input, norm: l2}}, lifetime: {life}}}"}
    names = [f"c{i}" for i in range(len(periods))]
    for i, (name, p) in enumerate(zip(names, periods)):
        extra = f", init: {{from: {names[i + 1]}}}" if nested and i + 1 < len(names) else ""
        levels[name] = CMS.format(p=p, life=life, extra=extra)
    body = "\n".join(f"  {n}: {v}" for n, v in levels.items())
    return (f"nlc: 1\nlevels:\n{body}\n  opt: {{type: optimizer}}\n"
            f"model: {{width: 16, heads: 2, blocks: [{{layers: [mem, {', '.join(names)}]}}]}}\n"
            "train: {seq_len: 8, batch: 2}\n")


def run_pieces(model, inputs, targets, cuts):
    state, outs = model.init_state(inputs.shape[0]), []
    for a, b in zip([0, *cuts], [*cuts, inputs.shape[1]]):
        logits, state = model(inputs[:, a:b], state, targets=targets[:, a:b])
        outs.append(logits)
        state = model.next_sequence(state, inputs.shape[0])
    return torch.cat(outs, dim=1), state


@settings(max_examples=10)
@given(st.lists(st.sampled_from([2, 3, 4, 6, 12]), min_size=1, max_size=3), st.sampled_from([1, 2, 4]),
       st.booleans(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**16))
def test_a_stream_cut_into_sequences_equals_one_call(periods, chunk, nested, pieces, seed):
    if nested:  # a nested chain: each level re-initialised from the next slower one
        periods = sorted(set(periods))
    model = nlc.compile(stream_spec(periods, chunk, nested), seed=0)
    g = math.gcd(*periods)
    cuts = list(itertools_accumulate([g * k for k in pieces]))
    total = cuts[-1] + 2 * max(periods)  # run past the slowest boundary
    x = torch.randint(0, 256, (2, total + 1), generator=torch.Generator().manual_seed(seed))
    whole, _ = model(x[:, :-1], model.init_state(2), targets=x[:, 1:])
    streamed, _ = run_pieces(model, x[:, :-1], x[:, 1:], cuts)
    torch.testing.assert_close(streamed, whole, rtol=1e-4, atol=1e-5)


def itertools_accumulate(values):
    total = 0
    for v in values:
        total += v
        yield total


def test_the_clock_fires_at_stream_multiples_of_the_period_across_sequences():
    """Period 6 in sequences of 4 tokens: the weights change after stream tokens 6, 12, 18."""
    model = nlc.compile(stream_spec([6], 1, False), seed=0)
    layer = "b0_r0_c0"
    x = torch.randint(0, 256, (2, 21), generator=torch.Generator().manual_seed(0))
    state, changed = model.init_state(2), []
    weights = {k: v.clone() for k, v in state[layer].items() if k != CLOCK and not k.startswith("acc")}
    for t in range(20):
        _, state = model(x[:, t:t + 1], state, targets=x[:, t + 1:t + 2])
        now = {k: state[layer][k] for k in weights}
        if any(not torch.equal(now[k], weights[k]) for k in weights):
            changed.append(t + 1)  # tokens of the stream consumed when the change shows
        weights = {k: v.clone() for k, v in now.items()}
        if (t + 1) % 4 == 0:  # a sequence ends every 4 tokens
            state = model.next_sequence(state, 2)
            assert state[layer][CLOCK] == (t + 1) % 6
    assert changed == [6, 12, 18]


@settings(max_examples=8, deadline=None)
@given(st.lists(st.sampled_from([2, 3, 4, 6, 8, 12]), min_size=2, max_size=4, unique=True), st.booleans(),
       st.sampled_from(["sequence", "stream", "document"]), st.integers(1, 5), st.integers(0, 2**16))
def test_levels_change_exactly_at_the_schedules_ticks(periods, nested, life, seq, seed):
    """Random task-driven CMS periods (also ones that do not divide each other, and nested
    chains of 3-4 levels), run token by token past the slowest boundary, sequences of ``seq``
    tokens: each level's weights change exactly when the generated model's schedule fires it
    (or, nested, fires the level it is re-initialised from) and nowhere else."""
    if nested:  # c_i is re-initialised from the slower c_{i+1}
        periods = sorted(periods)
    model = nlc.compile(stream_spec(periods, 2, nested, life), seed=0)
    schedule = model.schedule
    x = torch.randint(0, 256, (2, 2 * max(periods) + 2), generator=torch.Generator().manual_seed(seed))
    state = model.init_state(2)
    names = [f"c{i}" for i in range(len(periods))]
    stream_pos = 0
    for t in range(x.shape[1] - 1):
        before = {n: {k: v.clone() for k, v in state[f"b0_r0_{n}"].items() if k[0] == "w"} for n in names}
        _, state = model(x[:, t:t + 1], state, targets=x[:, t + 1:t + 2])
        for n in names:
            now = state[f"b0_r0_{n}"]
            changed = any(not torch.equal(now[k], v) for k, v in before[n].items())
            due = schedule.fires(n, stream_pos) or schedule.resets_after(n, stream_pos)
            assert changed == due, (n, t, stream_pos, periods)
            if schedule.resets_after(n, stream_pos):  # the cascade ran slowest first: the source's new weights
                source = state[f"b0_r0_{schedule.resets[n]}"]
                assert all(torch.equal(now[k], source[k]) for k in before[n]), (n, t, "reset from stale weights")
        stream_pos += 1
        if (t + 1) % seq == 0:  # a sequence ends: a stream goes on counting, a sequence starts afresh
            state = model.next_sequence(state, 2)
            if life == "sequence":
                stream_pos = 0


def test_a_parallel_layer_of_periods_4_and_6_runs_in_segments_of_their_gcd():
    """Independent CMS in one parallel layer, periods 4 and 6: the teach segments are the gcd (2),
    never the minimum (4 would cross the 6-token boundary), and a token-by-token run (the
    segments the schedule gives a stream) equals the whole call."""
    levels = "\n".join(f"  c{i}: {CMS.format(p=p, life='sequence', extra='')}" for i, p in enumerate((4, 6)))
    spec = (f"nlc: 1\nlevels:\n{levels}\n  opt: {{type: optimizer}}\n"
            "model: {width: 16, heads: 2, blocks: [{layers: [{parallel: [c0, c1], combine: learned}]}]}\n"
            "train: {seq_len: 32, batch: 2}\n")
    model = nlc.compile(spec, seed=0)
    assert model.teach_period == 2
    x = torch.randint(0, 256, (2, 25), generator=torch.Generator().manual_seed(2))
    whole, _ = model(x[:, :-1], targets=x[:, 1:])
    state, parts = model.init_state(2), []
    for a in range(0, 24, 2):
        y, state = model(x[:, a:a + 2], state, targets=x[:, a + 1:a + 3])
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-6)


def test_generation_goes_on_from_a_carried_stream_state():
    """generate(state=...) continues the streams: greedy decoding after reading text equals the
    same stream decoded by hand, and a fresh state gives the default call."""
    from nlc.generate import GenerateError, generate

    model = nlc.compile(stream_spec([3, 6], 2, False).replace("lr: 0.05", "lr: 0.2"), seed=0).eval()
    x = torch.randint(0, 256, (1, 30), generator=torch.Generator().manual_seed(4))
    read, prompt = x[:, :24], x[:, 24:]
    with torch.no_grad():
        _, state = model(read, model.init_state(1), targets=x[:, 1:25])
        carried = model.next_sequence(state, 1)
        new = generate(model, prompt, 4, top_k=1, state=carried)
        logits, s = model(prompt, dict(carried), targets=torch.cat([prompt[:, 1:], torch.full((1, 1), -100)], 1))
        want = []
        for _ in range(4):
            token = logits[:, -1].argmax(-1)
            want.append(token)
            logits, s = model(token[:, None], s, targets=torch.full((1, 1), -100))
    assert new.tolist() == torch.stack(want, 1).tolist()
    assert torch.equal(generate(model, prompt, 4, top_k=1, state=model.init_state(1)), generate(model, prompt, 4, top_k=1))
    with pytest.raises(GenerateError, match="start of a sequence"):
        generate(model, prompt, 2, state=state)  # mid-sequence: pos is not 0
    with pytest.raises(GenerateError, match="holds \\[3\\] rows, the prompt 1"):
        generate(model, prompt, 2, state=model.init_state(3))
    empty, _ = model(x[:, :0], model.init_state(1), targets=x[:, :0])  # no tokens: no teach segment
    assert empty.shape == (1, 0, 256)


def test_sequence_levels_forget_and_stream_levels_remember():
    text = stream_spec([4], 1, False, life="sequence")
    seq, streamed = nlc.compile(text, seed=0), nlc.compile(text.replace("lifetime: sequence", "lifetime: stream"),
                                                           seed=0)
    x = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    for model, same in ((seq, True), (streamed, False)):
        state = model.init_state(2)
        _, state = model(x[:, :8], state, targets=x[:, 1:9])
        second, _ = model(x[:, 8:16], model.next_sequence(state, 2), targets=x[:, 9:17])
        fresh, _ = model(x[:, 8:16], model.init_state(2), targets=x[:, 9:17])
        assert torch.equal(second, fresh) is same


@settings(max_examples=6)
@given(st.integers(1, 14), st.integers(0, 2**16))
def test_test_time_learning_is_causal(t, seed):
    model = nlc.compile(stream_spec([2, 4], 2, False), seed=0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (1, 17), generator=g)
    y = x.clone()
    y[:, t + 1:] = torch.randint(0, 256, (1, 16 - t), generator=g)
    state = model.init_state(1)
    _, state = model(x[:, :8], state, targets=x[:, 1:9])  # some carried state first
    carried = model.next_sequence(state, 1)
    a, _ = model(x[:, 8:16], dict(carried), targets=x[:, 9:17])
    b, _ = model(y[:, 8:16], dict(carried), targets=y[:, 9:17])
    last = t - 8  # positions of the second sequence at or before t
    if last >= 0:
        torch.testing.assert_close(a[:, :last + 1], b[:, :last + 1], rtol=0, atol=0)


def test_a_resumed_stream_run_ends_with_the_uninterrupted_weights(tmp_path):
    torch.manual_seed(0)
    data = SimpleNamespace(name="random", train=torch.randint(0, 64, (4000,)), val=torch.randint(0, 64, (600,)),
                           vocab=64)
    spec = stream_spec([3, 6], 2, False).replace("train: {seq_len: 8, batch: 2}", "train: {seq_len: 10, batch: 2}")
    spec = spec.replace("opt: {type: optimizer}", "opt: {type: optimizer, lr: 0.003, schedule: constant, warmup: 0}")
    kw = dict(progress=False)
    whole = nlc.train(spec, data, out=tmp_path / "a", steps=6, **kw)
    nlc.train(spec, data, out=tmp_path / "b", steps=3, **kw)
    resumed = nlc.train(spec, data, out=tmp_path / "b", steps=6, resume=True, **kw)
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    # without the carried state the resumed run differs: the state is what makes it exact
    from nlc.training import checkpoint as ckpt

    nlc.train(spec, data, out=tmp_path / "c", steps=3, **kw)
    meta_file = ckpt.find_checkpoint(tmp_path / "c") / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert set(meta["stream_clocks"]) == {"b0_r0_mem", "b0_r0_c0", "b0_r0_c1"}
    assert meta["stream_clocks"]["b0_r0_c1"] == 30 % 6
    # a checkpoint whose carried state is dropped resumes from fresh state: other weights
    del meta["stream_clocks"]
    meta_file.write_text(json.dumps(meta))
    forgetful = nlc.train(spec, data, out=tmp_path / "c", steps=6, resume=True, **kw)
    c = dict(forgetful.model.named_parameters())
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_continual_stage_goes_on_from_the_last_stages_streams(tmp_path, monkeypatch):
    """nlc.continual trains stage after stage with train(carry=the last result.carried): the
    clocks run on across the stages, and the carried state changes what the next stage learns."""
    from nlc.continual.stream import train_in_sequence

    torch.manual_seed(0)
    stages = [(f"d{k}", SimpleNamespace(name=f"d{k}", train=torch.randint(0, 64, (3000,)) + 64 * k,
                                        val=torch.randint(0, 64, (400,)) + 64 * k, vocab=256)) for k in range(2)]
    spec = stream_spec([3, 6], 2, False).replace("train: {seq_len: 8, batch: 2}", "train: {seq_len: 10, batch: 2}")
    seen = []

    def score(model, k):
        return [0.0]

    from nlc.training.loop import train as real_train

    def recording_train(*args, **kw):  # what each stage starts from and ends with
        result = real_train(*args, **kw)
        seen.append((kw.get("carry"), result.carried))
        return result

    monkeypatch.setattr("nlc.training.train", recording_train)  # what train_in_sequence imports (nlc.train's train)
    train_in_sequence(nlc.compile(spec, seed=0), stages, 3, tmp_path, 0, False, score)
    monkeypatch.undo()
    (first_in, first_out), (second_in, second_out) = seen
    assert first_in is None and second_in is first_out
    assert second_out["b0_r0_c1"][CLOCK] == (2 * 3 * 10) % 6 and first_out["b0_r0_c1"][CLOCK] == 30 % 6
    fresh = real_train(nlc.compile(spec, seed=0), stages[0][1], out=tmp_path / "fresh", steps=3, progress=False)
    carried = real_train(fresh.model, stages[1][1], out=tmp_path / "carried", steps=1, progress=False,
                         carry=fresh.carried)
    forgot = real_train(nlc.compile(spec, seed=0), stages[0][1], out=tmp_path / "fresh2", steps=3, progress=False)
    forgot = real_train(forgot.model, stages[1][1], out=tmp_path / "forgot", steps=1, progress=False)
    a, b = dict(carried.model.named_parameters()), dict(forgot.model.named_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a)
    mid = real_train(nlc.compile(spec, seed=0), stages[0][1], out=tmp_path / "mid", steps=1, progress=False)
    with pytest.raises(nlc.NLCError, match="start of a sequence"):
        real_train(mid.model, stages[1][1], out=tmp_path / "mid2", steps=1, progress=False,
                   carry={**mid.carried, "pos": 5})
    with pytest.raises(nlc.NLCError, match="carry or resume"):
        real_train(spec, stages[0][1], out=tmp_path / "fresh", steps=4, resume=True, carry=fresh.carried,
                   progress=False)


def test_evaluate_stream_carried_equals_fresh_only_without_stream_levels():
    from nlc.evaluate import evaluate_stream

    tokens = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(0))
    for life, equal in (("sequence", True), ("stream", False)):
        model = nlc.compile(stream_spec([4], 2, False, life=life), seed=0)
        out = evaluate_stream(model, tokens, 2, 8, 4, 0)
        assert (out["carried"]["loss"] == out["fresh"]["loss"]) is equal
        assert out["carried"]["tokens"] == out["fresh"]["tokens"] == 2 * 8 * 4


# --------------------------------------------------------------------------- validation
BASE = """nlc: 1
levels:
  a: {type: attention}
  c: {type: mlp, period: 8, objective: {kind: task}, update: {rule: gd, lr: 0.01}, lifetime: stream}
  d: {type: mlp, period: 4, objective: {kind: task}, update: {rule: gd, lr: 0.01}}
  f: {type: mlp}
  opt: {type: optimizer}
model: {width: 16, blocks: [{layers: [a, c, d, f]}]}
"""


@pytest.mark.parametrize("old, new, path, fragment", [
    ("f: {type: mlp}", "f: {type: mlp, lifetime: stream}", "levels.f.lifetime", "no in-context state"),
    ("layers: [a, c, d, f]", "layers: [a, {parallel: [c, d]}, f]", "model.blocks.0.layers.1", "share a lifetime"),
    ("update: {rule: gd, lr: 0.01}}", "update: {rule: gd, lr: 0.01}, init: {from: c}}", "levels.d.init",
     "re-initialised from 'c', which lives for the stream"),
])
def test_what_cannot_be_carried_is_refused_at_its_line(old, new, path, fragment):
    text = BASE.replace(old, new, 1)
    spec, issues = validate(text)
    errors = [i for i in issues if i.severity == "error"]
    assert spec is None and [e.path for e in errors] == [path] and fragment in errors[0].message
    assert errors[0].line is not None


def test_a_period_beyond_the_sequence_warns_only_for_a_sequence_level():
    text = BASE.replace("period: 4", "period: 512")
    warned = [i.path for i in validate(text)[1]]
    assert "levels.d.period" in warned
    text = text.replace("update: {rule: gd, lr: 0.01}}\n  f", "update: {rule: gd, lr: 0.01}, lifetime: stream}\n  f")
    assert "levels.d.period" not in [i.path for i in validate(text)[1]]


def test_nlc_eval_prints_carried_beside_fresh_bpb(tmp_path):
    from typer.testing import CliRunner

    from nlc.cli.app import app

    spec = tmp_path / "s.yaml"
    spec.write_text(stream_spec([4, 8], 2, False).replace("train: {seq_len: 8, batch: 2}",
                                                         "train: {seq_len: 16, batch: 2, eval_batches: 2}"))
    run = tmp_path / "run"
    trained = CliRunner().invoke(app, ["train", str(spec), "--out", str(run), "--steps", "2", "--no-progress",
                                       "--sample-tokens", "0"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "lm.json"
    result = CliRunner().invoke(app, ["eval", str(run / "checkpoint"), "--task", "lm", "--lengths", "16",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.stdout.split())
    assert "carried" in words and "fresh" in words and "levels carried across segments: c0, c1, mem" in words
    stream = json.loads(out.read_text())["stream"]
    assert stream["levels"] == ["c0", "c1", "mem"] and stream["carried"]["tokens"] == 2 * 16 * 2
    assert stream["carried"]["bpb"] != stream["fresh"]["bpb"]
