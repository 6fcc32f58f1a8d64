"""Ranges and bounds of the spec language (issue 12, part 3).

Every number a spec holds has the range its meaning allows, checked by the pydantic models
(and so written into the JSON Schema): gates in [0, 1) or (0, 1], step sizes positive and
bounded, sizes with generous maxima, nothing NaN or infinite. A field a rule would ignore
is an error; a model larger than ``nlc.limits`` ``model_bytes`` is refused before anything
is allocated; learning rates outside a rule's stable range are warned about.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc.limits
from nlc.errors import Issue
from nlc.graph.sizes import level_sizes, model_params
from nlc.spec import load_raw, spec_to_yaml
from nlc.graph.validate import load_spec, validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "nlc.schema.json").read_text(encoding="utf-8"))

# A small valid spec: an MLP memory stepping by momentum, and its optimizer.
SPEC = """\
nlc: 1
levels:
  mem:
    type: memory
    memory: {kind: mlp, depth: 2, expansion: 2}
    update:
      rule: momentum
      lr: 0.1
      momentum: 0.9
      weight_decay: 0.0
    chunk: 16
    keys: {from: input, norm: l2}
  outer: {type: optimizer, rule: adamw, lr: 1.0e-3, betas: [0.9, 0.95], eps: 1.0e-8}
model:
  width: 32
  heads: 2
  blocks:
    - repeat: 2
      layers: [mem]
train: {batch: 2, seq_len: 64, steps: 10}
"""

# A matrix memory (the exact rules) beside attention with persistent tokens.
MATRIX = """\
nlc: 1
levels:
  persist: {type: persistent, tokens: 4}
  attn: {type: attention, persistent: persist}
  mem:
    type: memory
    update: {rule: delta, lr: 1.0}
    keys: {from: input, norm: l2}
    read: after_write
  outer: {type: optimizer, lr: 1.0e-3}
model:
  width: 32
  heads: 2
  blocks:
    - repeat: 1
      layers: [attn, mem]
train: {batch: 2, seq_len: 64}
"""


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not unique in the spec"
    return text.replace(old, new)


def _at(text: str, needle: str, within: str | None = None) -> tuple[int, int]:
    """1-based line and column of ``needle`` in ``text``: unique there, or the last one
    inside the (unique) text ``within``."""
    if within is not None and needle in within:
        start = text.index(within) + within.rindex(needle)
    else:
        assert text.count(needle) == 1, needle
        start = text.index(needle)
    before = text[:start]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def _errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


def _only_error(text: str) -> Issue:
    spec, issues = validate(text)
    errors = _errors(issues)
    assert spec is None and len(errors) == 1, [i.format() for i in issues]
    return errors[0]


@pytest.mark.parametrize("text", [SPEC, MATRIX], ids=["momentum", "matrix"])
def test_the_base_specs_are_clean(text: str):
    spec, issues = validate(text)
    assert spec is not None and issues == [], [i.format() for i in issues]


# --------------------------------------------------------------------------- refused at their line
# (old text, new text, the bad value as written, dotted path, message)
_KEYS = "keys: {from: input, norm: l2}"
BAD = [
    ("momentum: 0.9", "momentum: 2.0", "2.0", "levels.mem.update.momentum",
     "momentum must be in [0, 1); got 2.0"),
    ("momentum: 0.9", "momentum: 1.0e9", "1.0e9", "levels.mem.update.momentum",
     "momentum must be in [0, 1); got 1000000000.0"),
    ("momentum: 0.9", "momentum: 1", "1", "levels.mem.update.momentum",
     "momentum must be in [0, 1); got 1.0"),
    ("momentum: 0.9", "momentum: -0.5", "-0.5", "levels.mem.update.momentum",
     "momentum must be in [0, 1); got -0.5"),
    ("momentum: 0.9", "momentum: {learned: 1.5}", "1.5", "levels.mem.update.momentum.learned",
     "momentum must be in [0, 1); got 1.5"),
    ("momentum: 0.9", "momentum: {from: input, init: 0.5, max: 2}", "2", "levels.mem.update.momentum.max",
     "a momentum gate stays in (0, 1); max 2.0 lets it leave"),
    ("lr: 0.1", "lr: 1.0e9", "1.0e9", "levels.mem.update.lr", "lr must be in (0, 100]; got 1000000000.0"),
    ("lr: 0.1", "lr: 0", "0", "levels.mem.update.lr", "lr must be in (0, 100]; got 0.0"),
    ("lr: 0.1", "lr: {from: input, init: 0.1, max: 1.0e9}", "1.0e9", "levels.mem.update.lr.max",
     "lr max must be <= 100; got 1000000000.0"),
    ("lr: 0.1", "lr: {learned: -0.1}", "-0.1", "levels.mem.update.lr.learned", "lr must be in (0, 100]; got -0.1"),
    ("momentum: 0.9", "momentum: 0.9\n      retention: 0", "0", "levels.mem.update.retention",
     "retention must be in (0, 1]; got 0.0"),
    ("momentum: 0.9", "momentum: 0.9\n      retention: 1.5", "1.5", "levels.mem.update.retention",
     "retention must be in (0, 1]; got 1.5"),
    ("momentum: 0.9", "momentum: 0.9\n      forget: 1.0", "1.0", "levels.mem.update.forget",
     "forget must be in [0, 1); got 1.0"),
    ("weight_decay: 0.0", "weight_decay: 1.0", "1.0", "levels.mem.update.weight_decay",
     "got 1.0; input should be less than 1"),
    ("lr: 1.0e-3,", "lr: 1.0e9,", "1.0e9", "levels.outer.lr",
     "got 1000000000.0; input should be less than or equal to 10"),
    ("betas: [0.9, 0.95]", "betas: [0.9, 1.5]", "1.5", "levels.outer.betas.1", "got 1.5; input should be less than 1"),
    ("betas: [0.9, 0.95]", "betas: [-0.1, 0.95]", "-0.1", "levels.outer.betas.0",
     "got -0.1; input should be greater than or equal to 0"),
    ("eps: 1.0e-8", "eps: 0", "0", "levels.outer.eps", "got 0; input should be greater than or equal to 0.000000000001"),
    ("eps: 1.0e-8", "eps: 1.0e-323", "1.0e-323", "levels.outer.eps",
     "got 1e-323; input should be greater than or equal to 0.000000000001"),  # fuzz: NaN weights after one step
    ("rule: adamw", "rule: sgd", "[0.9, 0.95]", "levels.outer.betas",
     "rule 'sgd' does not read 'betas' (rules that do: adamw, adam, muon, m3, dmgd)"),
    ("repeat: 2", "repeat: 2000000", "2000000", "model.blocks.0.repeat",
     "got 2000000; input should be less than or equal to 1024"),
    ("width: 32", "width: 100000", "100000", "model.width", "got 100000; input should be less than or equal to 65536"),
    ("expansion: 2", "expansion: 1000", "1000", "levels.mem.memory.expansion",
     "got 1000; input should be less than or equal to 64"),
    ("chunk: 16", "chunk: 1000000", "1000000", "levels.mem.chunk",
     "got 1000000; input should be less than or equal to 4096"),
    ("seq_len: 64", "seq_len: 1e30", "1e30", "train.seq_len", "got 1e+30; expected an integer"),
    *[(_KEYS, f"{_KEYS}\n    queries: {{from: input, norm: l2}}\n    features: {features}", written, path, message)
      for features, written, path, message in [
          ("{kind: polynomial, degree: 0}", "0", "levels.mem.features.degree", "got 0; input should be greater than 0"),
          ("{kind: polynomial, degree: 9}", "9", "levels.mem.features.degree",
           "got 9; input should be less than or equal to 8"),
          ("{kind: cubic, degree: 3}", "cubic", "levels.mem.features.kind",
           "got 'cubic'; expected 'identity' or 'polynomial'"),
          ("{kind: polynomial}", "{kind: polynomial}", "levels.mem.features.degree",
           "kind 'polynomial' needs 'degree'"),
          ("{kind: identity, degree: 2}", "2", "levels.mem.features.degree",
           "'degree' only applies to kind 'polynomial'")]],
    (_KEYS, f"{_KEYS}\n    features: {{kind: polynomial, degree: 3}}", "{kind: polynomial, degree: 3}",
     "levels.mem.features", "the polynomial feature map takes l2-normalised keys and queries: x^3 of the "
     "unnormalised queries grows as |x|^3"),
    ("steps: 10", "steps: 10000000000", "10000000000", "train.steps",
     "got 10000000000; input should be less than or equal to 100000000"),
]


@pytest.mark.parametrize("old, new, written, path, message", BAD, ids=[f"{b[3]}={b[2]}" for b in BAD])
def test_bad_value_refused_at_its_line(old: str, new: str, written: str, path: str, message: str):
    text = _edit(SPEC, old, new)
    error = _only_error(text)
    assert (error.path, error.file, error.line, error.column) == (path, "<text>", *_at(text, written, new))
    assert error.message.startswith(message), error.format()


def test_range_errors_carry_a_fix():
    error = _only_error(_edit(SPEC, "momentum: 0.9", "momentum: 2.0"))
    assert error.format() == ("<text>:9:17: levels.mem.update.momentum: momentum must be in [0, 1); got 2.0 "
                              "(the fraction of the previous update kept, e.g. momentum: 0.9)")
    sgd = _only_error(_edit(SPEC, "rule: adamw", "rule: sgd"))
    assert sgd.hint == "remove 'betas', or use one of those rules"


def test_eps_on_sgd_is_refused():
    text = _edit(_edit(SPEC, "rule: adamw", "rule: sgd"), " betas: [0.9, 0.95],", "")
    error = _only_error(text)
    assert (error.path, error.line) == ("levels.outer.eps", 13)
    assert error.message == "rule 'sgd' does not read 'eps' (rules that do: adamw, adam, muon, m3, dmgd, memories)"


def test_sgd_without_adam_fields_is_valid_and_round_trips():
    text = _edit(SPEC, "rule: adamw, lr: 1.0e-3, betas: [0.9, 0.95], eps: 1.0e-8", "rule: sgd, lr: 0.1")
    spec = load_spec(text)
    dumped = spec_to_yaml(spec)
    assert "betas:" not in dumped and " eps:" not in dumped  # would be refused when read back
    assert load_spec(dumped).levels["outer"] == spec.levels["outer"]


def test_persistent_tokens_are_bounded():
    text = _edit(MATRIX, "tokens: 4", "tokens: 1e30")
    error = _only_error(text)
    assert (error.path, error.line) == ("levels.persist.tokens", 3)
    assert error.message == "got 1e+30; expected an integer"
    error = _only_error(_edit(MATRIX, "tokens: 4", "tokens: 100000"))
    assert error.message == "got 100000; input should be less than or equal to 65536"


# --------------------------------------------------------------------------- NaN and infinity
@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("old, new", [
    ("lr: 0.1", "lr: {}"), ("momentum: 0.9", "momentum: {}"), ("momentum: 0.9", "momentum: {{learned: {}}}"),
    ("lr: 0.1", "lr: {{from: input, init: {}}}"), ("lr: 0.1", "lr: {{from: input, max: {}}}"),
    ("weight_decay: 0.0", "weight_decay: {}"), ("lr: 1.0e-3,", "lr: {},"), ("eps: 1.0e-8", "eps: {}"),
    ("betas: [0.9, 0.95]", "betas: [{}, 0.95]"), ("width: 32", "width: {}"), ("repeat: 2", "repeat: {}"),
    ("chunk: 16", "chunk: {}"), ("expansion: 2", "expansion: {}"), ("seq_len: 64", "seq_len: {}"),
    ("chunk: 16", "chunk: 16\n    period: {}"), ("weight_decay: 0.0", "grad_clip: {}"),
])
def test_nan_and_infinity_refused_at_their_line(old: str, new: str, bad: str):
    text = _edit(SPEC, old, new.format(bad))
    error = _only_error(text)
    assert error.line == _at(text, bad)[0]
    assert any(word in error.message for word in ("finite", "integer", "whole number")), error.format()


def _numeric_leaves(data: object, path: tuple = ()) -> list[tuple]:
    if isinstance(data, dict):
        return [leaf for key, value in data.items() for leaf in _numeric_leaves(value, (*path, key))]
    if isinstance(data, list):
        return [leaf for i, value in enumerate(data) for leaf in _numeric_leaves(value, (*path, i))]
    return [path] if isinstance(data, (int, float)) and not isinstance(data, bool) else []


@pytest.mark.parametrize("name", ["hope", "titans_lmm", "samba"])
def test_nan_anywhere_in_a_bundled_spec_is_refused(name: str):
    path = ROOT / "specs" / f"{name}.yaml"
    leaves = _numeric_leaves(load_raw(path).data)
    assert len(leaves) > 10
    for leaf in leaves:
        dotted = ".".join(map(str, leaf))
        spec, issues = validate(path, [f"{dotted}=.nan"])
        errors = _errors(issues)
        assert spec is None and errors, dotted
        assert any(e.path == dotted or e.path.startswith(dotted + ".") for e in errors), \
            (dotted, [e.format() for e in errors])


# --------------------------------------------------------------------------- the model-size budget
def test_a_huge_width_is_refused_fast_and_the_limit_can_be_raised():
    text = _edit(MATRIX, "width: 32", "width: 65536")
    start = time.perf_counter()
    spec, issues = validate(text)
    assert time.perf_counter() - start < 1.0
    error, = _errors(issues)
    assert spec is None and (error.path, error.line, error.column) == ("levels.mem", 6, 5)
    assert "above the limit of 8.0 GiB" in error.message and "level 'mem' (1 copy)" in error.message
    assert "nlc --max-model-bytes" in error.hint and "nlc.limits.raised(model_bytes=" in error.hint
    with nlc.limits.raised(model_bytes=2**50):
        spec, issues = validate(text)
    assert spec is not None and _errors(issues) == []
    assert nlc.limits.current().model_bytes == 8 * 2**30  # restored


def test_a_huge_repeat_is_refused_fast():
    text = _edit(_edit(SPEC, "width: 32", "width: 8192"), "repeat: 2", "repeat: 1024")
    start = time.perf_counter()
    error = _only_error(text)
    assert time.perf_counter() - start < 1.0
    assert error.path == "levels.mem" and "(1024 copies)" in error.message
    assert "the model needs about " in error.message and "limit" in error.message


def test_a_huge_embedding_is_blamed_on_the_width():
    text = _edit(SPEC, "width: 32", "width: 8192\n  tokenizer: gpt2\n  vocab: 1000000")
    error = _only_error(text)
    assert (error.path, error.line) == ("model.width", _at(text, "8192")[0])
    assert error.message.endswith("the embedding and head take 30.5 GiB")


def test_the_estimate_is_parameters_plus_a_batch_of_state():
    spec = load_spec(SPEC)
    floats = sum(s.total_params + spec.train.batch * s.total_state for s in level_sizes(spec).values())
    floats += sum(model_params(spec).values())
    with nlc.limits.raised(model_bytes=4 * floats):
        assert validate(SPEC)[0] is not None  # exactly at the limit: accepted
    with nlc.limits.raised(model_bytes=4 * floats - 1):
        error = _only_error(SPEC)
    assert f"nlc --max-model-bytes {4 * floats} " in error.hint


def test_the_budget_waits_for_other_errors():
    text = _edit(_edit(SPEC, "width: 32", "width: 65536"), "layers: [mem]", "layers: [mme]")
    spec, issues = validate(text)
    assert [e.message for e in _errors(issues)] == ["unknown level 'mme'"]


# --------------------------------------------------------------------------- warnings
@pytest.mark.parametrize("old, new, path, fragment", [
    ("lr: 1.0e-3}", "lr: 0.5}", "levels.outer.lr", "Adam moves every weight by about lr per step"),
    ("{rule: delta, lr: 1.0}", "{rule: delta, lr: 3.0}", "levels.mem.update.lr",
     "rule 'delta' multiplies the memory's error on a unit-norm key by (1 - lr) at every write: lr 3.0"),
    ("{rule: delta, lr: 1.0}", "{rule: dgd, lr: {from: input, init: 0.5, max: 4}}", "levels.mem.update.lr",
     "(retention - lr) at every write: a data-dependent lr up to max 4.0"),
    ("{rule: delta, lr: 1.0}", "{rule: gd, lr: {from: input, init: 0.5, max: 1.5}}", "levels.mem.update.lr",
     "by (1 - 2 lr) at every write: a data-dependent lr up to max 1.5"),
])
def test_unstable_learning_rates_warn_with_their_location(old: str, new: str, path: str, fragment: str):
    text = _edit(MATRIX, old, new)
    spec, issues = validate(text)
    assert spec is not None and _errors(issues) == []
    warning, = issues
    assert (warning.severity, warning.path, warning.line) == ("warning", path, _at(text, new)[0])
    assert fragment in warning.message


def test_a_constant_lr_that_grows_the_error_from_the_start_is_an_error():
    """gd on l2 with unit-norm keys multiplies the error by (1 - 2 lr window): lr 1.5 was a
    warning, and such a spec can reach inf within one sequence; a valid spec must run
    finitely, so a constant (or initial) lr past the edge is refused."""
    text = _edit(MATRIX, "{rule: delta, lr: 1.0}", "{rule: gd, lr: 1.5}")
    error = _only_error(text)
    assert error.path == "levels.mem.update.lr" and "(1 - 2 lr window) = -2" in error.message


@pytest.mark.parametrize("old, new", [
    ("{rule: delta, lr: 1.0}", "{rule: delta, lr: 2.0}"),  # the edge of the stable range
    ("{rule: delta, lr: 1.0}", "{rule: gd, lr: 1.0}"),
    ("{rule: delta, lr: 1.0}", "{rule: gd, lr: 50}\n    objective: {kind: dot}"),  # Hebbian: no error feedback
    ("lr: 1.0e-3}", "lr: 5, rule: sgd}"),  # plain SGD's range depends on the gradient's scale
])
def test_stable_learning_rates_do_not_warn(old: str, new: str):
    spec, issues = validate(_edit(MATRIX, old, new))
    assert spec is not None and issues == [], [i.format() for i in issues]


# --------------------------------------------------------------------------- JSON Schema
def test_the_json_schema_carries_the_ranges():
    defs = SCHEMA["$defs"]
    assert defs["MomentumKnob"]["anyOf"][0] == {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    assert defs["ForgetKnob"]["anyOf"][0] == {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    assert defs["RetentionKnob"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    assert defs["LrKnob"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "maximum": 100}
    momentum = defs["MomentumKnob"]["anyOf"][1]["properties"]
    assert {"type": "number", "minimum": 0, "exclusiveMaximum": 1} in momentum["learned"]["anyOf"]
    assert momentum["max"]["maximum"] == 1
    optimizer = defs["OptimizerLevel"]["properties"]
    assert optimizer["betas"]["prefixItems"] == 2 * [{"type": "number", "minimum": 0, "exclusiveMaximum": 1}]
    assert (optimizer["lr"]["exclusiveMinimum"], optimizer["lr"]["maximum"]) == (0, 10)
    assert (optimizer["weight_decay"]["minimum"], optimizer["weight_decay"]["exclusiveMaximum"]) == (0, 1)
    assert defs["ModelSpec"]["properties"]["width"]["maximum"] == 65536
    assert defs["Block"]["properties"]["repeat"]["maximum"] == 1024
    assert defs["PersistentLevel"]["properties"]["tokens"]["maximum"] == 65536
    assert defs["Period"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 2**20}


def test_the_json_schema_refuses_what_the_validator_refuses():
    jsonschema = pytest.importorskip("jsonschema")
    from nlc.spec.source import parse_yaml

    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    assert list(validator.iter_errors(parse_yaml(SPEC, "<text>").data)) == []
    for old, new in [("momentum: 0.9", "momentum: 2.0"), ("repeat: 2", "repeat: 2000000"),
                     ("betas: [0.9, 0.95]", "betas: [0.9, 1.0]"), ("lr: 0.1", "lr: {learned: 0}")]:
        assert not validator.is_valid(parse_yaml(_edit(SPEC, old, new), "<text>").data), new


# --------------------------------------------------------------------------- property
@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_momentum_is_accepted_iff_in_the_unit_interval(x: float):
    spec, issues = validate(_edit(SPEC, "momentum: 0.9", f"momentum: {x!r}"))
    assert (spec is not None) == (0 <= x < 1), [i.format() for i in issues]
    if spec is not None:
        assert spec.levels["mem"].update.momentum.value == x and not math.isnan(x)
    else:
        assert [e.path for e in _errors(issues)] == ["levels.mem.update.momentum"]


def test_an_expansion_that_rounds_to_no_hidden_width_is_refused_at_its_line():
    """expansion 1e-9 x width 128 rounded to a hidden width of 0: it validated, then training
    failed inside the MLP."""
    spec, issues = validate("transformer", ["levels.mlp.expansion=1e-9"])
    assert spec is None
    (issue,) = [i for i in issues if i.severity == "error"]
    assert issue.path == "levels.mlp.expansion" and "rounds to a hidden width of 0" in issue.message


def test_a_tokenizer_that_is_not_a_name_is_refused_at_its_line():
    """Fuzz finding: a list as ``model.tokenizer`` raised TypeError (unhashable) inside validation."""
    text = "nlc: 1\nlevels: {a: {type: attention}, o: {type: optimizer}}\n" \
           "model: {tokenizer: [a, b], width: 16, blocks: [{layers: [a]}]}\n"
    error = _only_error(text)
    assert (error.path, error.line) == ("model.tokenizer", 3) and "expected 'bytes' or 'gpt2'" in error.message


def test_a_model_that_is_not_a_mapping_is_refused_at_its_line():
    """Fuzz finding (a regression of the tokenizer check): ``model: -.inf`` raised TypeError."""
    error = _only_error("nlc: 1\nlevels: {a: {type: attention}, o: {type: optimizer}}\nmodel: -.inf\n")
    assert (error.path, error.line) == ("model", 3)
