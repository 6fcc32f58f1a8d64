"""Properties of models compiled from *random* valid specs.

Every draw of :func:`tests.runnable_specs.tiny_specs` (a :func:`valid_specs` draw shrunk to width
<= 32, vocabulary 256, at most two repeats per block, chunks / periods / MAC segments <= 16)
either compiles and runs, or is refused by ``nlc.compile`` with a clear
:class:`~nlc.errors.NLCError` that locates the layer in the YAML and names the offending level
(the language expresses more than the runtime executes: :func:`assert_clear_refusal`).
:func:`tests.runnable_specs.runnable_specs` leaves out what the runtime refuses by design and keeps
learning rates in a stable regime, so most draws run. On one model per draw
(:func:`check_model_properties`; 8 draws by default, 50 more under ``-m slow``, those also with
task-driven CMS levels of period 1, whose teach loop runs token by token):

* logits (B, T, vocab), float32, finite; every layer applies the levels the spec names;
* causality and batch independence, exact (the teach signal of task-driven CMS levels
  included: the targets are passed);
* streaming: the sequence cut at random points (:func:`split_points`: anywhere, or on the
  teach-period grid of a model with a teach loop) and fed segment by segment == one call;
  the teach loop (segments of ``teach_period``) gives every other layer what one call does;
* ``lifetime: document`` layers (drawn by :func:`tests.strategies.valid_specs`): a document
  start on their grid in one row changes no logit before it and none of another row, and
  streams exactly at the same cuts;
* the teach-free layers run once per call (``before_teach``) give what running them once per
  teach segment gives;
* the emitted source, imported fresh from a file, is the model (same weights, same logits);
* compiling twice with one seed gives the same parameters and logits.

Separately: the update schedule (``fires`` is the period clock, and a level's in-context
state changes exactly on the tokens where it fires), and ``torch.compile(model.run,
fullgraph=True)`` (zero graph breaks: a break raises) matching eager, on two small draws by
default and on 12 larger ones under ``-m slow``. Example counts scale with the hypothesis
profile (:func:`examples`). The bugs these properties found have regression tests in
``test_generated_regressions.py``.

Notation: B batch, T tokens, V vocabulary (256).
"""
from __future__ import annotations

import functools

import re

import pytest
import torch
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import nlc
from nlc.ir.nodes import AttentionIR, MemoryIR, MLPIR
from nlc.runtime.lifetime import CLOCK
from tests.compiler.generated_helpers import (
    B,
    VOCAB,
    assert_clear_refusal,
    assert_layers_apply_their_levels,
    build,
    check_logits,
    dump,
    examples,
    forward_checking_teach_segments,
    import_fresh,
    lengths,
    next_tokens,
    record_coverage,
    seeds,
    stream,
    tokens,
    unsplit,
)
from tests.runnable_specs import TINY_GRID, runnable_specs, tiny_specs


def split_points(model, length: int, draw) -> list[int]:
    """Where the streaming check cuts a sequence of ``length`` tokens: a non-empty random set
    of up to four points anywhere inside it (every mixer streams exactly at any split:
    chunk-frozen memories carry their chunk phase, :mod:`nlc.runtime.aligned`). A model with
    a teach loop is cut on its ``teach_period`` grid: the teach signal is the gradient of each
    segment's loss, which reaches a CMS output through later tokens of the same segment
    (attention, say), so a call that ends inside a segment teaches on the part it saw."""
    step = model.teach_period or 1
    assert step <= TINY_GRID < length, (step, length)
    return sorted(draw(st.sets(st.sampled_from(range(step, length, step)), min_size=1, max_size=4)))


# --------------------------------------------------------------------------- properties

@settings(max_examples=examples(12))
@given(data=tiny_specs(), length=lengths, seed=seeds)
def test_compiles_or_is_refused_clearly(data, length, seed):
    """Any valid draw. Finiteness is not asserted here: a draw may set learning rates at
    which its memories diverge (validation warns about the common case, see
    test_generated_regressions.py::test_default_deep_memory_is_warned_about)."""
    text = dump(data)
    note(text)
    try:
        model = nlc.compile(text, seed=0)
        x = tokens(length, seed)
        logits, _ = model(x, targets=next_tokens(x))
    except Exception as err:  # noqa: BLE001 - classified below
        assert_clear_refusal(data, err)
        return
    assert logits.shape == (B, length, VOCAB)
    assert logits.dtype == torch.float32
    assert_layers_apply_their_levels(model)


def check_model_properties(data: dict, draw) -> None:
    """Every property of the module docstring's list on one compiled model of ``data``
    (``draw``: hypothesis' interactive draw, for the sizes, seeds and cut points)."""
    length, seed, init_seed = draw(lengths), draw(seeds), draw(seeds)
    model = build(data, seed=init_seed)
    record_coverage(model)
    assert_layers_apply_their_levels(model)
    x = tokens(length, seed)
    y = next_tokens(x)
    whole = forward_checking_teach_segments(model, x, y)
    check_logits(whole, length)

    # causal: the logits up to t do not see tokens t+1.. (the target at t, token t+1, changes too)
    t = draw(st.integers(0, length - 2))
    x2, y2 = x.clone(), y.clone()
    x2[:, t + 1:] = tokens(length - t - 1, seed + 1)
    y2[:, t:] = tokens(length - t, seed + 2)
    torch.testing.assert_close(model(x2, targets=y2)[0][:, :t + 1], whole[:, :t + 1], rtol=0, atol=0)

    # batch independence: replacing sample j changes no other sample's logits
    j = draw(st.integers(0, B - 1))
    x3 = x.clone()
    x3[j] = tokens(length, seed + 3, batch=1)[0]
    keep = [i for i in range(B) if i != j]
    torch.testing.assert_close(model(x3, targets=next_tokens(x3))[0][keep], whole[keep], rtol=0, atol=0)

    if "def before_teach" in model.source:  # the teach-free layers once per call == once per segment
        per_segment = unsplit(build(data, seed=init_seed))
        torch.testing.assert_close(per_segment(x, targets=y)[0], whole, rtol=1e-5, atol=1e-5)

    cuts = split_points(model, length, draw)
    note(f"cuts {cuts}")
    torch.testing.assert_close(stream(model, x, y, cuts), whole, rtol=1e-4, atol=1e-4)
    check_document_start(model, x, y, whole, cuts, draw)

    # the emitted source imported fresh, and a second compile with the seed: the same model
    # (on a short prefix: the weights are what these check)
    short, short_targets = x[:, :TINY_GRID // 2], y[:, :TINY_GRID // 2]
    reference, _ = model(short, targets=short_targets)
    fresh = import_fresh(model.source).Model()
    fresh.load_state_dict(model.state_dict())
    again = nlc.compile(dump(data), seed=init_seed)
    first, second = model.state_dict(), again.state_dict()
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    for other in (fresh, again):
        torch.testing.assert_close(other(short, targets=short_targets)[0], reference, rtol=0, atol=0)


def check_document_start(model, x: torch.Tensor, y: torch.Tensor, whole: torch.Tensor, cuts: list[int],
                         draw) -> None:
    """``lifetime: document`` layers: a document start on their grid, in row 0 only, changes
    no logit before it nor any of another row (against the call cut at the same point,
    exactly), and streams exactly at any cuts."""
    grid, length = model.document_period, x.shape[1]
    if grid is None or grid >= length:
        return
    event("document start")
    start = grid * draw(st.integers(1, (length - 1) // grid))
    starts = torch.zeros_like(x, dtype=torch.bool)
    starts[0, start] = True
    reset, _ = model(x, targets=y, starts=starts)
    cut = stream(model, x, y, [start])
    torch.testing.assert_close(reset[1:], cut[1:], rtol=0, atol=0)
    torch.testing.assert_close(reset[0, :start], cut[0, :start], rtol=0, atol=0)
    torch.testing.assert_close(stream(model, x, y, cuts, starts), reset, rtol=1e-4, atol=1e-4)


@settings(max_examples=examples(8))
@given(data=runnable_specs(), draw=st.data())
def test_runnable_model_properties(data, draw):
    check_model_properties(data, draw.draw)


@pytest.mark.slow
@settings(max_examples=examples(50))
@given(data=runnable_specs(min_cms_period=1), draw=st.data())
def test_runnable_model_properties_on_more_draws(data, draw):
    """Also task-driven CMS levels of period 1 (the teach loop runs token by token)."""
    check_model_properties(data, draw.draw)


def _token_period(level) -> int | None:
    if isinstance(level, AttentionIR):
        return 1
    if isinstance(level, (MemoryIR, MLPIR)) and level.period:
        return level.period
    return None


def _level_states(model, state: dict) -> dict[str, dict[str, torch.Tensor]]:
    """``"layer/level" -> that level's state tensors`` for every memory and CMS level a
    layer applies: a CMS level's weights only (not its pending sums or teach tensors), a
    memory's memory (:meth:`MemoryMixer.memory_at`; in a MAC layer, of its ``mem.*`` keys)."""
    out = {}
    for layer in model.ir.layers:
        sub = state[layer.name]
        for i, name in enumerate(layer.levels):
            level = model.ir.levels[name]
            if layer.kind == "parallel":
                prefix = f"{i}."
            elif layer.kind == "context":
                prefix = "mem." if i == 1 else None
            else:
                prefix = ""
            if prefix is None or not isinstance(level, (MemoryIR, MLPIR)) or not level.period:
                continue
            own = {k[len(prefix):]: v for k, v in sub.items() if k.startswith(prefix) and k != CLOCK}
            if isinstance(level, MLPIR):
                own = {k: v for k, v in own.items() if not k.startswith("acc.") and k not in ("in", "out")}
            else:  # the memory as it stands after the tokens consumed (through a chunk tail)
                module = getattr(model, layer.name)
                mixer = {"parallel": lambda: module.mixers[i], "context": lambda: module.memory}.get(
                    layer.kind, lambda: module.mixer)()
                own = mixer.memory_at(own, state["pos"] + sub.get(CLOCK, 0))
            out[f"{layer.name}/{name}"] = own
    return out


def _zero_fixed_point(level, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The level's weights (and momentum buffers) if they sit at zero where every gradient
    of them is zero, so that no update moves them: a CMS level (an MLP, e.g. ``init: zero``)
    or an MLP memory of depth >= 2 (``init: zero``, or shrunk to zero by an elastic-net
    retention); ``None`` otherwise."""
    if isinstance(level, MLPIR):
        weights = state
    elif isinstance(level, MemoryIR) and level.memory == "mlp" and level.depth >= 2:
        weights = {k: v for k, v in state.items() if re.fullmatch(r"[WAS]\d+", k)}
    else:
        return None
    return weights if weights and not any(w.any() for w in weights.values()) else None


@settings(max_examples=examples(5))
@given(data=runnable_specs(), seed=seeds)
def test_schedule_fires_exactly_when_state_changes(data, seed):
    model = build(data)
    ir, schedule = model.ir, model.schedule
    horizon = range(4 * TINY_GRID)
    for name, level in ir.levels.items():
        period = _token_period(level)
        assert [schedule.fires(name, t) for t in horizon] == \
            [period is not None and (t + 1) % period == 0 for t in horizon], name
    x = tokens(TINY_GRID, seed)  # the longest period fires once
    y = next_tokens(x)
    state = model.init_state(B)
    quiet = _record_learning_signals(model)
    for t in range(TINY_GRID):  # one token a call: the state after token t vs before it
        _, new = model(x[:, t:t + 1], state, targets=y[:, t:t + 1])
        before, after = _level_states(model, state), _level_states(model, new)
        for key, old in before.items():
            level = ir.levels[key.split("/", 1)[1]]
            if (zero := _zero_fixed_point(level, old)) is not None:
                assert not any(after[key][k].any() for k in zero), (key, t, "left the zero fixed point")
                continue
            changed = any(not torch.equal(old[k], after[key][k]) for k in old)
            if schedule.fires(level.name, t) and all(quiet[key][-_token_period(level):]):
                continue  # a tick with nothing to learn: every signal since the last one was 0
            assert changed == schedule.fires(level.name, t), (key, t, schedule.fires(level.name, t))
        state = new


def _record_learning_signals(model) -> dict[str, list[bool]]:
    """``"layer/level" -> [signal of token t is exactly zero]``, appended per call: a memory
    learns from its layer's input, a task-driven CMS level from its input and teach signal
    (a degenerate draw, e.g. a memory read before its first write feeding the rest, gives
    zeros; a tick on zeros rightly changes nothing)."""
    quiet: dict[str, list[bool]] = {}
    for layer in model.ir.layers:
        module = getattr(model, layer.name)
        for mixer in module.modules():
            if getattr(mixer, "level", None) not in layer.levels:
                continue
            key = f"{layer.name}/{mixer.level}"
            quiet[key] = []
            if getattr(mixer, "teach", False):
                mixer.learn = functools.partial(_learn_recorded, mixer.learn, quiet[key])
            else:
                module.register_forward_pre_hook(lambda _, args, out=quiet[key]: out.append(not bool(args[0].any())))
    return quiet


def _learn_recorded(learn, out: list[bool], state, delta, pos, due):
    out.append(not (bool(state["in"].any()) and bool(delta.any())))
    return learn(state, delta, pos, due)


def check_fullgraph_capture(data: dict, length: int, seed: int) -> None:
    """``torch.compile(model.run, fullgraph=True)`` (dynamo capture, eager backend) captures
    the whole pass (a graph break would raise) and computes what eager does."""
    model = build(data)
    x = tokens(length, seed)
    eager, _ = model.run(x, model.init_state(B))
    torch._dynamo.reset()
    try:
        logits, _ = torch.compile(model.run, backend="eager", fullgraph=True)(x, model.init_state(B))
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(logits, eager, rtol=1e-5, atol=1e-5)


@settings(max_examples=examples(2))
@given(data=runnable_specs(max_levels=3), seed=seeds)
def test_fullgraph_capture_matches_eager(data, seed):
    check_fullgraph_capture(data, TINY_GRID // 2, seed)  # short: dynamo unrolls the chunk loops


@pytest.mark.slow
@settings(max_examples=examples(12))
@given(data=runnable_specs(), length=lengths, seed=seeds)
def test_fullgraph_capture_matches_eager_on_larger_draws(data, length, seed):
    check_fullgraph_capture(data, length, seed)
