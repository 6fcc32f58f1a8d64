"""Regression tests for the bugs the random-spec properties (``test_generated_properties.py``)
found, each on a minimal spec: what the language accepts now runs correctly, and what the
runtime cannot execute is refused by validation, with the YAML line and a hint, before any
code is generated.

Notation: B batch, T tokens, V vocabulary (256).
"""
from __future__ import annotations

import pytest
import torch
import yaml

import nlc
from nlc.errors import SpecError
from nlc.spec import Spec
from nlc.graph.validate import validate
from nlc.spec.load import load_raw
from tests.compiler.generated_helpers import (
    CMS,
    check_logits,
    forward_checking_teach_segments,
    next_tokens,
    runs_or_is_refused_clearly,
    spec,
    tokens,
)


def assert_refused_by_validation(text: str, path: str, fragment: str) -> None:
    """``nlc.compile`` raises a SpecError whose issue at ``path`` says ``fragment``, with the
    YAML line and a hint (so ``nlc validate`` catches the spec too)."""
    with pytest.raises(SpecError) as info:
        nlc.compile(text, seed=0)
    found = [i for i in info.value.issues if i.path == path and fragment in i.message]
    assert found, [i.format() for i in info.value.issues]
    assert all(i.file == "<text>" and i.line is not None and i.hint for i in found)


NESTED_INIT = {
    "memory_from_slower_memory": ("""
        nlc: 1
        levels:
          slow: {type: memory, period: 2, chunk: 2}
          fast: {type: memory, init: {from: slow}}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [slow, fast]}]}
        """, "levels.fast.init", "not a CMS level driven by the task objective"),
    "cms_from_a_level_of_another_block": (f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow]}}, {{layers: [fast]}}]}}
        """, "levels.fast.init", "block 1 does not apply 'slow' in a layer of its own"),
    "cms_from_a_level_applied_in_a_parallel_layer": (f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          attn: {{type: attention}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [{{parallel: [slow, attn]}}, fast]}}]}}
        """, "levels.fast.init", "block 0 does not apply 'slow' in a layer of its own"),
    # a nested CMS level inside a parallel layer (first or second mixer): init_state used to
    # fail ('Parallel' object has no attribute 'state_from' / an unlocated NotImplementedError)
    "nested_cms_first_in_a_parallel_layer": (f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow, {{parallel: [fast, slow]}}]}}]}}
        """, "model.blocks.0.layers.1", "cannot share a layer"),
    "nested_cms_second_in_a_parallel_layer": (f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow, {{parallel: [slow, fast]}}]}}]}}
        """, "model.blocks.0.layers.1", "cannot share a layer"),
}


@pytest.mark.parametrize("case", sorted(NESTED_INIT))
def test_nested_initial_state_the_runtime_cannot_wire_is_refused_by_validation(case):
    """Used to be a plain ValueError from code generation, or a crash in init_state."""
    text, path, fragment = NESTED_INIT[case]
    assert_refused_by_validation(spec(text), path, fragment)


def test_nested_cms_in_a_layer_of_its_own_runs():
    """The supported form: the nested level starts from its slower level's state."""
    model = nlc.compile(spec(f"""
        nlc: 1
        levels:
          slow: {CMS % (4, "")}
          fast: {CMS % (2, ", init: {from: slow}")}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [slow, fast]}}]}}
        """), seed=0)
    assert dict(model.NESTED) == {"b0_r0_fast": "b0_r0_slow"}
    state = model.init_state(2)
    for key, value in state["b0_r0_slow"].items():
        if key in state["b0_r0_fast"] and not key.startswith("acc."):
            assert torch.equal(state["b0_r0_fast"][key], value), key
    x = tokens(32, 0)
    check_logits(model(x, targets=next_tokens(x))[0], 32)


COUPLED = {
    # a memory reading from an MLP level went to SelfModifyingMemory, whose _roles read
    # `level.memory` of the MLPIR (AttributeError)
    "keys_from_an_mlp": ("""
        nlc: 1
        levels:
          f: {type: mlp}
          m: {type: memory, keys: f}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [m]}]}
        """, "levels.m.keys.from"),
    "lr_from_a_cms_level": (f"""
        nlc: 1
        levels:
          c: {CMS % (2, "")}
          m: {{type: memory, update: {{rule: gd, lr: {{from: c}}}}}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [m]}}]}}
        """, "levels.m.update.lr.from"),
}


@pytest.mark.parametrize("case", sorted(COUPLED))
def test_memory_reading_a_non_memory_level_is_refused_by_validation(case):
    text, path = COUPLED[case]
    with pytest.raises(SpecError) as info:
        nlc.compile(spec(text), seed=0)
    (issue,) = info.value.issues
    assert issue.path == path and issue.line is not None
    assert "is an mlp level; this place needs a level of type memory" in issue.message


def test_memory_reading_values_from_another_memory_is_refused_clearly():
    """Keys from the input, values from a memory: not HOPE's coupling. _roles used to raise
    KeyError 'input'; validation now refuses it at the field (nlc.capabilities)."""
    text = spec("""
        nlc: 1
        levels:
          src: {type: memory, keys: {from: input, norm: l2}}
          m: {type: memory, values: src, keys: {from: input, norm: l2}}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [m]}]}
        """)
    with pytest.raises(SpecError) as info:
        nlc.compile(text, seed=0)
    [issue] = info.value.issues
    assert (issue.path, issue.line) == ("levels.m.values.from", 5)  # text starts with a newline
    # HOPE's pattern now takes static keys, lr and retention (NL-arXiv Table 6's static rows), so
    # what 'm' lacks is the self-generated target that makes a memory self-modifying
    assert "reads level 'src'" in issue.message and "self_target: true" in issue.message


CASE_COLLISIONS = {
    # same type: compiled silently, layer 'f' ran level 'F' (hidden 64), 'f' had no parameters
    "same_type": """
        nlc: 1
        levels:
          f: {type: mlp, hidden: 16}
          F: {type: mlp, hidden: 64}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [f, F]}]}
        """,
    # different types: AttentionMixer got the MLPIR (AttributeError)
    "different_types": """
        nlc: 1
        levels:
          a: {type: attention}
          A: {type: mlp}
          opt: {type: optimizer}
        model: {width: 16, blocks: [{layers: [a, A]}]}
        """,
}


@pytest.mark.parametrize("case", sorted(CASE_COLLISIONS))
def test_level_names_differing_in_case_get_their_own_constants(case):
    text = spec(CASE_COLLISIONS[case])
    runs_or_is_refused_clearly(text)
    model = nlc.compile(text, seed=0)
    names = list(yaml.safe_load(text)["levels"])[:2]
    for name in names:
        assert f"\nLEVEL_{name} = " in model.source, name
    counts = model.parameter_counts()
    assert all(counts.get(name, 0) > 0 for name in names), counts
    if case == "same_type":  # hidden 16 vs 64: W_in, W_gate (D x h) and W_out (h x D), D = 16
        assert (counts["f"], counts["F"]) == (3 * 16 * 16, 3 * 16 * 64)


@pytest.mark.parametrize("memory", ["{kind: matrix}", "{kind: mlp}, init: zero"])
@pytest.mark.parametrize("q", [3.0, 4.0])
def test_lq_retention_of_a_zero_memory_is_refused(memory, q):
    """Moneta's W = A / ||A||_q^(q-2) was 0/0 = NaN at the first token for q > 2 on every
    memory whose weights start at zero; floored, it divides the first small writes by a
    vanishing norm and reached 1e18 within 32 tokens (whole-schema fuzz). Validation rule 10
    refuses it at the q, and q 2 runs."""
    text = spec(f"""
        nlc: 1
        levels:
          m: {{type: memory, memory: {memory}, keys: {{from: input, norm: l2}},
               update: {{rule: gd, lr: 0.1, retention_kind: lq, q: {q}}}}}
          opt: {{type: optimizer}}
        model: {{width: 16, blocks: [{{layers: [m]}}]}}
        """)
    spec_, issues = validate(text)
    (error,) = issues
    assert spec_ is None and error.path == "levels.m.update.q" and "starts at zero" in error.message
    runs_or_is_refused_clearly(text.replace(f"q: {q}", "q: 2.0"))


def test_default_deep_memory_is_refused():
    """An MLP memory with the language's defaults (rule gd, lr 1.0, keys not l2-normalised)
    diverges to NaN within a few chunks: validation refuses it, located at the lr (it used to
    warn; a spec that validates must run finitely), and the refused model does produce
    non-finite logits when built without validation (the refusal is not a false alarm)."""
    text = spec("""
        nlc: 1
        levels:
          m: {type: memory, memory: {kind: mlp}, chunk: 4}
          opt: {type: optimizer}
        model: {width: 16, heads: 1, blocks: [{layers: [m]}]}
        """)
    spec_, issues = validate(text)
    assert spec_ is None
    (error,) = issues
    assert (error.severity, error.path, error.line) == ("error", "levels.m.update.lr", 4)
    assert "diverges" in error.message and "norm: l2" in error.hint
    unchecked = Spec.model_validate(load_raw(text).data)
    unchecked._raw = load_raw(text)
    model = nlc.compile(unchecked, seed=0)
    x = tokens(32, 0)
    assert not model(x)[0].isfinite().all()
    assert "norm: l2} with lr < 0.1," in error.hint  # an MLP memory's bound on unit-norm keys
    for fix in (["levels.m.update={rule: gd, lr: 0.1}"],
                ["levels.m.keys={from: input, norm: l2}", "levels.m.update={rule: gd, lr: 0.09}"]):
        assert validate(text, fix)[1] == []


def test_teach_segments_keep_a_longer_memory_chunk_whole():
    """The teach loop calls every layer in segments of ``teach_period`` (2 here); a memory
    whose chunk (8) spans several segments still computes what one call does."""
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
