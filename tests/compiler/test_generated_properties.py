"""Properties of models compiled from *random* valid specs.

Every draw of :func:`tests.strategies.tiny_specs` (a :func:`valid_specs` draw shrunk to width
<= 32, vocabulary 256, at most two repeats per block, chunks / periods / MAC segments <= 16)
either compiles and runs, or is refused by ``nlc.compile`` with a clear
:class:`~nlc.errors.NLCError` that locates the layer in the YAML and names the offending level
(the language expresses more than the runtime executes: :func:`assert_clear_refusal`).
:func:`tests.strategies.runnable_specs` leaves out what the runtime refuses by design and keeps
learning rates in a stable regime, so most draws run. On one model per draw
(:func:`check_model_properties`; 8 draws by default, 50 more under ``-m slow``, those also with
task-driven CMS levels of period 1, whose teach loop runs token by token):

* logits (B, T, vocab), float32, finite; every layer applies the levels the spec names;
* causality and batch independence, exact (the teach signal of task-driven CMS levels
  included: the targets are passed);
* streaming: the sequence cut at :func:`split_points` and fed segment by segment == one call;
  the teach loop (segments of ``teach_period``) gives every other layer what one call does;
* the emitted source, imported fresh from a file, is the model (same weights, same logits);
* compiling twice with one seed gives the same parameters and logits.

Separately: the update schedule (``fires`` is the period clock, and a level's in-context
state changes exactly on the tokens where it fires), and ``torch.compile(model.run,
fullgraph=True)`` (zero graph breaks: a break raises) matching eager, on two small draws by
default and on 12 larger ones under ``-m slow``. Example counts scale with the hypothesis
profile (:func:`examples`).

Specs the language accepts but the runtime mis-handles are pinned, each by a minimal spec,
in the ``xfail(strict=True)`` tests at the end; the properties reject exactly those draws
(:func:`pinned_spec`, :func:`pinned_error`), so each bug fails one named test and no property
is weakened.

Notation: B batch, T tokens, V vocabulary (256).
"""
from __future__ import annotations

import importlib.util
import math
import re
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import event, given, note, reject, settings
from hypothesis import strategies as st

import nlc
from nlc.compiler import CompileError
from nlc.errors import NLCError, SpecError
from nlc.ir.nodes import AttentionIR, MemoryIR, MLPIR
from tests.strategies import TINY_GRID, runnable_specs, tiny_specs

B, VOCAB = 2, 256
seeds = st.integers(0, 2**16)
# longer than TINY_GRID, so every draw has at least one split point on its grid
lengths = st.integers(TINY_GRID + 1, TINY_GRID + 8)


def examples(ci: int) -> int:
    """``ci`` examples under the ``ci`` profile (tests/conftest.py: 20 by default), scaled
    with the loaded profile's ``max_examples`` (``HYPOTHESIS_PROFILE=dev``: 10x)."""
    return max(1, ci * settings.default.max_examples // 20)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic reductions; tiny matmuls are faster on one thread
    yield
    torch.set_num_threads(threads)


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def tokens(length: int, seed: int, batch: int = B) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def next_tokens(x: torch.Tensor) -> torch.Tensor:
    return torch.roll(x, -1, 1)


def spec(text: str) -> str:
    return textwrap.dedent(text)


# a task-driven CMS level: CMS % (period, extra fields)
CMS = "{type: mlp, period: %d, objective: {kind: task}, update: {rule: gd, lr: 0.01}%s}"


def _layers(data: dict) -> list:
    return [layer for block in data["model"]["blocks"] for layer in block["layers"]]


# --------------------------------------------------------------------------- pinned bugs

def _init_from(lv: dict) -> str | None:
    init = lv.get("init")
    return init.get("from") if isinstance(init, dict) else None


def _level_inputs(lv: dict) -> list[str]:
    """The levels a memory reads its keys / values / queries / knobs from."""
    values = [lv.get(f) for f in ("keys", "values", "queries")]
    values += [lv.get("update", {}).get(k) for k in ("lr", "momentum", "retention", "forget")]
    names = [v if isinstance(v, str) else v.get("from") if isinstance(v, dict) else None for v in values]
    return [n for n in names if n not in (None, "input")]


def pinned_spec(data: dict) -> str | None:
    """The xfail test below pinning a bug that ``data`` hits, decided from the spec alone."""
    levels = data["levels"]
    if len({name.upper() for name in levels}) < len(levels):
        return "test_bug_level_names_differing_in_case_collide"
    nested = {n for n, lv in levels.items() if _init_from(lv)}
    if any(isinstance(layer, dict) and nested & set(layer.get("parallel", ())) for layer in _layers(data)):
        return "test_bug_nested_cms_in_a_parallel_layer"
    for lv in levels.values():
        update = lv.get("update", {})
        if lv["type"] == "memory" and update.get("retention_kind") == "lq" and update.get("q", 2.0) > 2 \
                and (lv.get("memory", {}).get("kind", "matrix") == "matrix" or lv.get("init") == "zero"):
            return "test_bug_lq_retention_of_a_zero_memory_is_nan"
    return None


def pinned_error(data: dict, err: BaseException) -> str | None:
    """The xfail test below pinning the failure ``err`` of ``data``."""
    levels = data["levels"]
    if type(err) is ValueError and any(_init_from(lv) for lv in levels.values()) and (
            "nested initial states" in str(err) or "no layer of the same block applies" in str(err)):
        return "test_bug_nested_init_raises_plain_value_error"
    coupled = any(lv["type"] == "memory" and _level_inputs(lv) for lv in levels.values())
    if coupled and isinstance(err, CompileError) and type(err.__cause__) in (AttributeError, KeyError):
        return "test_bug_memory_reading_another_level_crashes"
    return None


def assert_clear_refusal(data: dict, err: BaseException) -> None:
    """A deliberate refusal: an NLCError (not a spec error: the spec is valid) locating the
    layer in the YAML, whose cause is a deliberate ValueError / NotImplementedError (not a
    crash) naming a level of the spec."""
    assert isinstance(err, NLCError) and not isinstance(err, SpecError), \
        f"not a located nlc error: {type(err).__name__}: {err}"
    message = str(err)
    assert re.search(r"<text>:\d+", message), f"no YAML line in: {message}"
    cause = err.__cause__
    assert cause is None or type(cause) in (ValueError, NotImplementedError), \
        f"the runtime crashed instead of refusing: {type(cause).__name__}: {cause}"
    named = set(re.findall(r"level '([^']+)'", str(cause if cause is not None else err)))
    assert named & set(data["levels"]), f"no spec level named in: {cause or err}"


def assert_layers_apply_their_levels(model) -> None:
    for layer in model.ir.layers:
        owners = {getattr(m, "level") for m in getattr(model, layer.name).modules() if hasattr(m, "level")}
        assert set(layer.levels) <= owners, (layer.name, layer.levels, owners)


def check_logits(logits: torch.Tensor, length: int) -> None:
    assert logits.shape == (B, length, VOCAB)
    assert logits.dtype == torch.float32
    assert logits.isfinite().all()


def build(data: dict, seed: int = 0):
    """The compiled model of ``data`` (its state builds); a draw that hits a pinned bug or
    that the runtime refuses (clearly: asserted) is rejected."""
    text = dump(data)
    note(text)
    if pinned_spec(data):
        reject()
    try:
        model = nlc.compile(text, seed=seed)
        model.init_state(B)
    except Exception as err:  # noqa: BLE001 - classified below
        bug = pinned_error(data, err)
        note(f"refused: {type(err).__name__}: {err}" + (f" (pinned by {bug})" if bug else ""))
        if bug is None:
            assert_clear_refusal(data, err)
        reject()
    return model


def record_coverage(model) -> None:
    """Hypothesis events (``--hypothesis-show-statistics``): what a draw exercised."""
    for name in sorted({type(m).__name__ for m in model.modules() if hasattr(m, "level")}):
        event(name)
    for kind in sorted({layer.kind for layer in model.ir.layers}):
        event(f"layer kind {kind}")
    event(f"teach period {model.teach_period}")


# --------------------------------------------------------------------------- streaming

def grid(model) -> int:
    """Cuts at multiples of this are chunk-, period- and segment-aligned for every level."""
    ir, sizes = model.ir, [1]
    for lv in ir.levels.values():
        if isinstance(lv, MemoryIR):
            sizes += [lv.chunk, lv.period]
        elif isinstance(lv, MLPIR) and lv.period:
            sizes.append(lv.period)
    for layer in ir.layers:
        if layer.kind == "context":
            sizes.append(layer.segment or ir.levels[layer.levels[1]].chunk)
    return math.lcm(*sizes)


def split_points(model, length: int, draw) -> list[int]:
    """Where the streaming check cuts a sequence of ``length`` tokens: a non-empty random set
    of multiples of :func:`grid` inside it (the runtime contract promises exact streaming at
    those). The one place to widen to ``range(1, length)`` once every mixer streams exactly
    at any split."""
    step = grid(model)
    assert step <= TINY_GRID < length, (step, length)
    return sorted(draw(st.sets(st.sampled_from(range(step, length, step)), min_size=1)))


def stream(model, x: torch.Tensor, y: torch.Tensor, cuts: list[int]) -> torch.Tensor:
    """The logits of ``x`` fed in segments ending at ``cuts``, the state carried along."""
    state, parts = model.init_state(B), []
    for a, b in zip([0, *cuts], [*cuts, x.shape[1]]):
        logits, state = model(x[:, a:b], state, targets=y[:, a:b])
        parts.append(logits)
    assert state["pos"] == x.shape[1]
    return torch.cat(parts, 1)


def forward_checking_teach_segments(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``model(x, targets=y)``'s logits. When the model has a teach loop (it calls every layer
    once per segment of ``teach_period`` tokens), also checks that each layer that does not
    teach gives what one call on its whole input gives."""
    if model.teach_period is None:
        return model(x, targets=y)[0]
    calls: dict[str, list] = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda mod, args, out, name=name: calls.setdefault(name, []).append((args, out[0])))
        for name in model.LAYERS if name not in model.teach_layers]
    try:
        logits, _ = model(x, targets=y)
    finally:
        for handle in handles:
            handle.remove()
    for name, pieces in calls.items():
        (_, state, pos), _ = pieces[0]
        with torch.no_grad():
            whole, _ = getattr(model, name)(torch.cat([args[0] for args, _ in pieces], 1), state, pos)
        torch.testing.assert_close(torch.cat([out for _, out in pieces], 1).detach(), whole,
                                   rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"layer {name}: {m}")
    return logits


def import_fresh(source: str):
    """The module of ``source`` written to a file and imported under a new name."""
    name = f"nlc_emitted_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- properties

@settings(max_examples=examples(12))
@given(data=tiny_specs(), length=lengths, seed=seeds)
def test_compiles_or_is_refused_clearly(data, length, seed):
    """Any valid draw. Finiteness is not asserted here: a draw may set learning rates at
    which its memories diverge (the defaults do: test_finding_default_memory_diverges)."""
    text = dump(data)
    note(text)
    if pinned_spec(data):
        reject()
    try:
        model = nlc.compile(text, seed=0)
        x = tokens(length, seed)
        logits, _ = model(x, targets=next_tokens(x))
    except Exception as err:  # noqa: BLE001 - classified below
        if pinned_error(data, err):
            reject()
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

    cuts = split_points(model, length, draw)
    note(f"grid {grid(model)}, cuts {cuts}")
    torch.testing.assert_close(stream(model, x, y, cuts), whole, rtol=1e-4, atol=1e-4)

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
    memory's whole state (in a MAC layer: its ``mem.*`` keys)."""
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
            own = {k[len(prefix):]: v for k, v in sub.items() if k.startswith(prefix)}
            if isinstance(level, MLPIR):
                own = {k: v for k, v in own.items() if not k.startswith("acc.") and k not in ("in", "out")}
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
    for t in range(TINY_GRID):  # one token a call: the state after token t vs before it
        _, new = model(x[:, t:t + 1], state, targets=y[:, t:t + 1])
        before, after = _level_states(model, state), _level_states(model, new)
        for key, old in before.items():
            level = ir.levels[key.split("/", 1)[1]]
            if (zero := _zero_fixed_point(level, old)) is not None:
                assert not any(after[key][k].any() for k in zero), (key, t, "left the zero fixed point")
                continue
            changed = any(not torch.equal(old[k], after[key][k]) for k in old)
            assert changed == schedule.fires(level.name, t), (key, t, schedule.fires(level.name, t))
        state = new


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


def test_teach_segments_keep_a_longer_memory_chunk_whole():
    """Regression: the teach loop calls every layer in segments of ``teach_period`` (2 here);
    a memory whose chunk (8) spans several segments still computes what one call does."""
    model = nlc.compile(spec(f"""
        nlc: 1
        levels:
          cms: {CMS % (2, "")}
          mem: {{type: memory, chunk: 8, update: {{rule: gd, lr: 0.1}}, keys: {{from: input, norm: l2}}}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [cms, mem]}}]}}
        """), seed=0)
    assert model.teach_period == 2 and model.ir.levels["mem"].chunk == 8
    x = tokens(32, 0)
    check_logits(forward_checking_teach_segments(model, x, next_tokens(x)), 32)


# --------------------------------------------------------------------------- pinned bugs
# Each test asserts the properties above on one minimal spec the language accepts; they
# fail today (xfail strict): when a fix lands, the XPASS says to drop the marker and the
# matching clause of pinned_spec / pinned_error.

def runs_or_is_refused_clearly(text: str) -> None:
    """Runs to finite logits with its layers wired to their levels, or is refused clearly."""
    data = yaml.safe_load(text)
    try:
        model = nlc.compile(text, seed=0)
        x = tokens(32, 0)
        logits, _ = model(x, targets=next_tokens(x))
    except Exception as err:  # noqa: BLE001 - classified below
        assert_clear_refusal(data, err)
        return
    check_logits(logits, 32)
    assert_layers_apply_their_levels(model)


NESTED_INIT = {
    "memory_from_slower_memory": """
        nlc: 1
        levels:
          slow: {type: memory, period: 2, chunk: 2}
          fast: {type: memory, init: {from: slow}}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [slow, fast]}]}
        """,
    "cms_from_a_level_of_another_block": f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow]}}, {{layers: [fast]}}]}}
        """,
    "cms_from_a_level_applied_in_a_parallel_layer": f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          attn: {{type: attention}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [{{parallel: [slow, attn]}}, fast]}}]}}
        """,
}


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "nlc.compile raises a plain ValueError, not a CompileError/NLCError, for 'init: {from: X}' "
    "on a memory level, or when X is not applied by a plain (non-parallel) layer of the same "
    "block: codegen/emit.py _nested_layers runs before compile()'s try"))
@pytest.mark.parametrize("case", sorted(NESTED_INIT))
def test_bug_nested_init_raises_plain_value_error(case):
    runs_or_is_refused_clearly(spec(NESTED_INIT[case]))


NESTED_IN_PARALLEL = {
    # not the first mixer: NESTED misses the layer, the first forward's init_state raises
    # CMSMixer's NotImplementedError, unlocated
    "second": f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow, {{parallel: [slow, fast]}}]}}]}}
        """,
    # the first mixer: NESTED maps the Parallel layer, which has no state_from
    "first": f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow, {{parallel: [fast, slow]}}]}}]}}
        """,
}


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "a nested CMS level ('init: {from: X}') inside a parallel layer compiles, then the first "
    "forward fails in init_state: an unlocated NotImplementedError (not the first mixer) or "
    "AttributeError: 'Parallel' object has no attribute 'state_from' (the first mixer)"))
@pytest.mark.parametrize("case", sorted(NESTED_IN_PARALLEL))
def test_bug_nested_cms_in_a_parallel_layer(case):
    text = spec(NESTED_IN_PARALLEL[case])
    assert pinned_spec(yaml.safe_load(text)) == "test_bug_nested_cms_in_a_parallel_layer"
    runs_or_is_refused_clearly(text)


COUPLED = {
    # a memory reading from an MLP level goes to SelfModifyingMemory, whose _roles reads
    # `level.memory` of the MLPIR
    "keys_from_an_mlp": """
        nlc: 1
        levels:
          f: {type: mlp}
          m: {type: memory, keys: f}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [m]}]}
        """,
    "lr_from_a_cms_level": f"""
        nlc: 1
        levels:
          c: {CMS % (2, "")}
          m: {{type: memory, update: {{rule: gd, lr: {{from: c}}}}}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [m]}}]}}
        """,
    # keys from the input, values from a memory: _roles looks up components['input']
    "values_from_a_memory": """
        nlc: 1
        levels:
          src: {type: memory}
          m: {type: memory, values: src}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [m]}]}
        """,
}


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "a memory whose sources or knobs come from another level, in anything but the exact HOPE "
    "coupling, crashes SelfModifyingMemory._roles (AttributeError: 'MLPIR' object has no "
    "attribute 'memory'; KeyError: 'input') before its 'couples memories in a way the runtime "
    "does not execute' ValueError"))
@pytest.mark.parametrize("case", sorted(COUPLED))
def test_bug_memory_reading_another_level_crashes(case):
    runs_or_is_refused_clearly(spec(COUPLED[case]))


CASE_COLLISIONS = {
    # same type: compiles silently, layer 'f' runs level 'F' (hidden 64); 'f' has no parameters
    "silent": """
        nlc: 1
        levels:
          f: {type: mlp, hidden: 16}
          F: {type: mlp, hidden: 64}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [f, F]}]}
        """,
    # different types: AttentionMixer gets the MLPIR -> AttributeError
    "crash": """
        nlc: 1
        levels:
          a: {type: attention}
          A: {type: mlp}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [a, A]}]}
        """,
}


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "codegen names each level's constant LEVEL_<NAME.upper()>: levels whose names differ only "
    "in case share one constant, the later overwrites the earlier, and the earlier level's "
    "layers run the other level (silently, or crash when the types differ)"))
@pytest.mark.parametrize("case", sorted(CASE_COLLISIONS))
def test_bug_level_names_differing_in_case_collide(case):
    text = spec(CASE_COLLISIONS[case])
    assert pinned_spec(yaml.safe_load(text)) == "test_bug_level_names_differing_in_case_collide"
    runs_or_is_refused_clearly(text)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "primitives/deep_common.py lq_norm_scale clamps |A| at finfo.tiny *before* pow(q): for "
    "q > 2 that underflows to 0, so nu(0) = 0 and W = A / nu = 0/0 = NaN at the first token "
    "for every memory whose weights start at zero (any matrix memory, an MLP memory with "
    "init: zero)"))
@pytest.mark.parametrize("memory", ["{kind: matrix}", "{kind: mlp}, init: zero"])
def test_bug_lq_retention_of_a_zero_memory_is_nan(memory):
    text = spec(f"""
        nlc: 1
        levels:
          m: {{type: memory, memory: {memory}, update: {{rule: gd, lr: 0.1, retention_kind: lq, q: 3.0}}}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [m]}}]}}
        """)
    assert pinned_spec(yaml.safe_load(text)) == "test_bug_lq_retention_of_a_zero_memory_is_nan"
    runs_or_is_refused_clearly(text)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding, not a runtime bug: an MLP memory with the language's defaults (rule gd, "
    "lr 1.0, keys not l2-normalised) diverges to NaN within a few chunks; nothing warns"))
def test_finding_default_memory_diverges():
    runs_or_is_refused_clearly(spec("""
        nlc: 1
        levels:
          m: {type: memory, memory: {kind: mlp}, chunk: 4}
          opt: {type: optimizer}
        model: {width: 16, heads: 1, blocks: [{layers: [m]}]}
        """))
