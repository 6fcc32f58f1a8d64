"""``lifetime: document`` (issue 13): a level carried across sequences and started afresh
where a document begins, on data laid out so that documents begin on its grid.

* the layout (nlc.data.documents): every document begins on the grid, the split's tokens and
  next-token targets survive in order, padding is never scored;
* the streams: consecutive steps continue each row's text, and every document start and
  lane wrap falls on the grid;
* the reset, observed: after a document start a model of document levels gives exactly the
  logits of the same document run alone from a fresh state, however the stream is cut into
  sequences, row by row (a row without a start is untouched);
* training and resume: a document spec trains on data with document offsets, resumes from a
  mid-stream checkpoint bit for bit on CPU, and data without offsets is refused;
* validation: a layer's levels share a lifetime, a nested state has its source's.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.data.documents import IGNORE, PAD, lay_out, offsets_of, split_for
from nlc.graph.validate import validate
from tests.runtime.test_lifetime import stream_spec


def doc_spec(periods: list[int], chunk: int, nested: bool) -> str:
    return stream_spec(periods, chunk, nested, life="document")


# --------------------------------------------------------------------------- the layout
@settings(max_examples=40)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=8), st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 99))
def test_every_document_begins_on_the_grid_and_every_token_is_scored_once(lengths, period, seed):
    tokens = torch.randint(1, 256, (sum(lengths),), generator=torch.Generator().manual_seed(seed))
    if tokens.numel() < 2:
        return
    docs = lay_out(tokens, offsets_of(lengths), period)
    begins = torch.nonzero(docs.starts).flatten()
    assert len(begins) == len(lengths) and bool((begins % period == 0).all())
    assert docs.inputs.numel() == sum(-(-k // period) * period for k in lengths)
    real = docs.inputs != PAD  # tokens drawn from 1..255: PAD marks exactly the padding
    assert torch.equal(docs.inputs[real], tokens)
    assert torch.equal(docs.targets[docs.targets != IGNORE], tokens[1:])
    assert bool((docs.targets[~real] == IGNORE).all())  # padding is never scored
    scored = torch.nonzero(docs.targets != IGNORE).flatten()
    assert torch.equal(docs.inputs[scored], tokens[:-1])  # each target follows its own input


def test_offsets_are_checked():
    tokens = torch.arange(10)
    for bad, match in ((torch.tensor([0, 5, 5]), "strictly increasing"), (torch.tensor([0, 12]), r"\[0, 10\)"),
                       (torch.tensor([0.0, 1.0]), "integer")):
        with pytest.raises(nlc.NLCError, match=match):
            lay_out(tokens, bad, 4)
    assert lay_out(tokens, torch.tensor([3]), 4).starts.nonzero().flatten().tolist() == [0, 4]  # 0 is implied


@settings(max_examples=20)
@given(st.lists(st.integers(5, 60), min_size=3, max_size=10), st.sampled_from([1, 2, 4, 6]), st.integers(1, 9),
       st.integers(0, 999))
def test_streams_continue_their_text_and_reset_only_on_the_grid(lengths, period, seq_len, seed):
    tokens = torch.arange(sum(lengths)) % 200 + 1
    docs = lay_out(tokens, offsets_of(lengths), period)
    batch = 2
    lane = docs.inputs.numel() // batch // period * period
    if lane <= seq_len:
        with pytest.raises(nlc.NLCError, match="smaller batch or seq_len"):
            docs.stream(batch, seq_len, 1, seed)
        return
    steps = [docs.stream(batch, seq_len, s, seed) for s in range(1, 2 * lane // seq_len + 3)]
    x = torch.cat([w[0] for w in steps], 1)
    starts = torch.cat([w[2] for w in steps], 1)
    offset = seed % lane // period * period
    for b in range(batch):  # row b reads lane b from the offset on, wrapping at the lane's end
        want = docs.inputs[b * lane + (offset + torch.arange(x.shape[1])) % lane].long()
        assert torch.equal(x[b], want)
    positions = offset + torch.nonzero(starts)[:, 1]  # stream positions of the starts: all on the grid
    assert bool((positions % period == 0).all())


# --------------------------------------------------------------------------- the reset
def run_cut(model, x, y, starts, cuts):
    state, outs = model.init_state(x.shape[0]), []
    for a, b in zip([0, *cuts], [*cuts, x.shape[1]]):
        logits, state = model(x[:, a:b], state, targets=y[:, a:b], starts=starts[:, a:b])
        outs.append(logits)
        state = model.next_sequence(state, x.shape[0])
    return torch.cat(outs, 1)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.sampled_from([2, 3, 4, 6]), min_size=1, max_size=3), st.sampled_from([1, 2, 4]), st.booleans(),
       st.integers(1, 40), st.integers(1, 40), st.lists(st.integers(1, 30), max_size=3), st.integers(0, 2**16))
def test_after_a_document_start_the_model_reads_as_if_from_a_fresh_state(periods, chunk, nested, first, second,
                                                                       pieces, seed):
    """Two documents in one stream, row 0 only (row 1 one long document): row 0's logits on
    the second document equal that document run alone from a fresh state; row 1's equal a run
    without any start; and cutting the stream into sequences at any points changes nothing."""
    if nested:
        periods = sorted(set(periods))
    model = nlc.compile(doc_spec(periods, chunk, nested), seed=0)
    grid = model.document_period
    assert grid == math.lcm(chunk, *periods)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(1, 256, (first,), generator=g), torch.randint(1, 256, (second + 1,), generator=g)
    docs = lay_out(torch.cat([a, b]), torch.tensor([0, first]), grid)
    x0, y0, s0 = docs.inputs.long(), docs.targets, docs.starts
    x1 = torch.randint(1, 256, (x0.numel() + 1,), generator=g)
    x = torch.stack([x0, x1[:-1]])
    y = torch.stack([y0, x1[1:]])
    starts = torch.stack([s0, torch.zeros_like(s0)])
    starts[1, 0] = True
    cuts = sorted({c for c in torch.tensor(pieces).cumsum(0).tolist() if 0 < c < x.shape[1]}) if pieces else []
    logits = run_cut(model, x, y, starts, cuts)
    begin = int(torch.nonzero(s0).flatten()[1])
    alone, _ = model(x0[None, begin:], model.init_state(1), targets=y0[None, begin:])
    torch.testing.assert_close(logits[0, begin:], alone[0], rtol=1e-4, atol=1e-5)
    plain, _ = model(x[1:], model.init_state(1), targets=y[1:])
    torch.testing.assert_close(logits[1], plain[0], rtol=1e-4, atol=1e-5)
    # and the first document was read with the state it built: a reset is not a no-op
    carried, _ = model(x0[None], model.init_state(1), targets=y0[None])
    assert not torch.allclose(carried[0, begin:], alone[0])


def test_a_document_start_off_the_grid_is_refused_with_the_layer():
    model = nlc.compile(doc_spec([4], 2, False), seed=0)
    x = torch.randint(0, 256, (1, 9))
    starts = torch.zeros_like(x, dtype=torch.bool)
    starts[0, 6] = True
    with pytest.raises(nlc.NLCError, match=r"token 6 of the sequence, where layer 'b0_r0_c0' \(lifetime: "
                                           r"document\) is 2 tokens into its period of 4.*nlc.data.lay_out"):
        model(x, targets=x, starts=starts)


def test_starts_are_ignored_by_a_model_without_document_levels():
    model = nlc.compile(stream_spec([4], 2, False), seed=0)
    x = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    starts = torch.ones_like(x, dtype=torch.bool)
    torch.testing.assert_close(model(x, targets=x, starts=starts)[0], model(x, targets=x)[0], rtol=0, atol=0)
    assert model.document_period is None and model.document_layers == ()


# --------------------------------------------------------------------------- training
def doc_data(seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    train, val = torch.randint(1, 64, (3000,), generator=g), torch.randint(1, 64, (800,), generator=g)
    return SimpleNamespace(name="docs", train=train, val=val, vocab=64,
                           train_starts=torch.arange(0, 3000, 37), val_starts=torch.arange(0, 800, 23))


def train_spec() -> str:
    spec = doc_spec([3, 6], 2, False).replace("train: {seq_len: 8, batch: 2}", "train: {seq_len: 10, batch: 2}")
    return spec.replace("opt: {type: optimizer}", "opt: {type: optimizer, lr: 0.003, schedule: constant, warmup: 0}")


def test_a_resumed_document_run_ends_with_the_uninterrupted_weights(tmp_path):
    data, spec, kw = doc_data(), train_spec(), dict(progress=False)
    whole = nlc.train(spec, data, out=tmp_path / "a", steps=8, **kw)
    nlc.train(spec, data, out=tmp_path / "b", steps=4, **kw)
    resumed = nlc.train(spec, data, out=tmp_path / "b", steps=8, resume=True, **kw)
    a, b = dict(whole.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(whole.carried) >= {"b0_r0_mem", "b0_r0_c0", "b0_r0_c1"}
    assert math.isfinite(whole.val_bpb)


def test_data_without_document_offsets_is_refused(tmp_path):
    data = SimpleNamespace(name="plain", train=torch.randint(0, 64, (3000,)), val=torch.randint(0, 64, (800,)),
                           vocab=64)
    with pytest.raises(nlc.NLCError, match="no document offsets \\(train_starts\\).*load_corpus"):
        nlc.train(train_spec(), data, out=tmp_path, steps=1, progress=False)


def test_evaluate_stream_resets_documents_and_rounds_segments_to_the_grid():
    from nlc.evaluate import evaluate_stream

    model = nlc.compile(doc_spec([4], 2, False), seed=0)
    out = evaluate_stream(model, split_for(doc_data(), "val", model.document_period), 2, 7, 4, 0)
    assert out["carried"]["segment"] == out["fresh"]["segment"] == 8
    assert out["carried"]["tokens"] == out["fresh"]["tokens"] <= 2 * 8 * 4
    assert out["carried"]["loss"] != out["fresh"]["loss"]


def test_the_union_of_domains_keeps_their_document_offsets():
    from nlc.continual.domains import union_corpus

    a = SimpleNamespace(train=torch.arange(10), val=torch.arange(4), vocab=256, train_bytes=10, val_bytes=4,
                        train_starts=torch.tensor([0, 4, 8]), val_starts=torch.tensor([0, 2]))
    b = SimpleNamespace(train=torch.arange(7), val=torch.arange(3), vocab=256, train_bytes=7, val_bytes=3,
                        train_starts=torch.tensor([0, 5]), val_starts=torch.tensor([0]))
    union = union_corpus({"a": a, "b": b})
    assert union.train_starts.tolist() == [0, 4, 7, 12] and union.val_starts.tolist() == [0, 2, 4]


# --------------------------------------------------------------------------- validation
BASE = """nlc: 1
levels:
  c: {type: mlp, period: 8, objective: {kind: task}, update: {rule: gd, lr: 0.01}, lifetime: document}
  d: {type: mlp, period: 4, objective: {kind: task}, update: {rule: gd, lr: 0.01}, lifetime: stream}
  opt: {type: optimizer}
model: {width: 16, blocks: [{layers: [c, d]}]}
"""


@pytest.mark.parametrize("old, new, path, fragment", [
    ("layers: [c, d]", "layers: [{parallel: [c, d]}]", "model.blocks.0.layers.0", "'c' document, 'd' stream"),
    ("lr: 0.01}, lifetime: stream}", "lr: 0.01}, lifetime: stream, init: {from: c}}", "levels.d.lifetime",
     "re-initialised from 'c', which lives for one document"),
])
def test_lifetimes_that_cannot_run_together_are_refused_at_their_line(old, new, path, fragment):
    spec, issues = validate(BASE.replace(old, new, 1))
    errors = [i for i in issues if i.severity == "error"]
    assert spec is None and [e.path for e in errors] == [path] and fragment in errors[0].message
    assert errors[0].line is not None
    assert validate(BASE)[0] is not None


def test_a_new_run_given_carry_starts_its_document_levels_afresh(tmp_path):
    """train(carry=...) (a continual stage) reads new text: a document layer starts from its
    initial state, a stream layer goes on from the carried one."""
    from nlc.runtime.lifetime import CLOCK

    spec = "\n".join(line.replace("lifetime: document", "lifetime: stream") if line.startswith("  c") else line
                     for line in train_spec().splitlines())  # the memory per document, c0 and c1 per stream
    model = nlc.compile(spec, seed=0)
    assert model.document_layers == ("b0_r0_mem",) and set(model.carried_layers) == {"b0_r0_mem", "b0_r0_c0",
                                                                                     "b0_r0_c1"}
    first = nlc.train(model, doc_data(), out=tmp_path / "a", steps=2, progress=False)
    seen = {}
    original = type(first.model).forward

    def spy(self, tokens, state=None, targets=None, starts=None):
        seen.setdefault("state", state)
        return original(self, tokens, state, targets, starts)

    with torch.no_grad():
        fresh = {k: {n: v.clone() if isinstance(v, torch.Tensor) else v for n, v in layer.items()}
                 for k, layer in first.model.init_state(2).items() if isinstance(layer, dict)}
    type(first.model).forward = spy
    try:
        carry = {k: v for k, v in first.carried.items() if k != "b0_r0_mem"}  # a document layer's need not be given
        nlc.train(first.model, doc_data(1), out=tmp_path / "b", steps=1, progress=False, carry=carry)
    finally:
        type(first.model).forward = original
    state = seen["state"]
    assert all(torch.equal(state["b0_r0_mem"][k], fresh["b0_r0_mem"][k]) for k in fresh["b0_r0_mem"] if k != CLOCK)
    assert state["b0_r0_c1"][CLOCK] == first.carried["b0_r0_c1"][CLOCK] == 20 % 6  # not a fresh clock
    assert any(not torch.equal(state["b0_r0_c1"][k], fresh["b0_r0_c1"][k])
               for k in fresh["b0_r0_c1"] if k != CLOCK)


def test_a_window_of_padding_only_trains_without_a_nan(tmp_path):
    """Documents of 3 tokens on a grid of 8 in windows of 4: some steps see padding only in
    every row; their loss is 0 (nothing scored), not NaN."""
    spec = doc_spec([8], 1, False).replace("train: {seq_len: 8, batch: 2}", "train: {seq_len: 4, batch: 2}")
    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(name="tiny-docs", vocab=64, train=torch.randint(1, 64, (600,), generator=g),
                           val=torch.randint(1, 64, (300,), generator=g), train_starts=torch.arange(0, 600, 3),
                           val_starts=torch.arange(0, 300, 3))
    result = nlc.train(spec, data, out=tmp_path, steps=6, progress=False)
    losses = [r["loss"] for r in result.metrics if r["kind"] == "train"]
    assert 0.0 in losses and all(math.isfinite(x) for x in losses) and math.isfinite(result.val_bpb)
