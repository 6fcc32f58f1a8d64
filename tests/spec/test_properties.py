"""Property tests of the spec language (docs/design.md sections 1-2; plan C.6).

* every valid draw validates with no issue and survives YAML round trips;
* every injected mistake is reported at its path with its message;
* no input makes the loader raise anything but :class:`SpecError`;
* the error locator points at the line of a mistyped key, and reports every error in
  one pass;
* the JSON Schema of :class:`Spec` accepts every valid draw.

The tests at the end of this file pin bugs that were found and fixed.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given, note
from hypothesis import strategies as st

from nlc.errors import SpecError
from nlc.spec import Spec, load_raw, spec_to_data, spec_to_yaml
from nlc.graph.validate import load_spec, validate
from tests.spec_mutations import MUTATIONS, _typo, corrupted_specs, mutations, yaml_values, yamlish_text
from tests.strategies import ALL_KEYS, ALL_LITERALS, valid_specs

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(p for p in (ROOT / "specs").glob("*.yaml"))
BUNDLED_TEXTS = [p.read_text(encoding="utf-8") for p in BUNDLED]  # read once: draws must replay


def dump(data: dict) -> str:
    """YAML text of spec data, block style, keys in the order they were drawn."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def errors_of(text: str) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert info.value.issues, "a SpecError must list its issues"
    return info.value.issues


# --------------------------------------------------------------------------- (a) valid draws


@given(valid_specs())
def test_valid_draw_validates_and_round_trips(data):
    text = dump(data)
    note(text)
    spec, issues = validate(text)
    assert [i.format() for i in issues] == []  # no error, and no warning either
    assert load_raw(text).data == data  # the YAML text is exactly the user's data
    assert spec == Spec.model_validate(data)

    shown = spec_to_yaml(spec)  # what ``nlc show`` prints: short forms, defaults filled in
    note(shown)
    again = load_spec(shown)
    assert again == spec
    assert spec_to_data(again) == spec_to_data(spec)
    assert spec_to_yaml(again) == shown  # printing is a fixed point
    assert Spec.model_validate(spec_to_data(spec)) == spec


# --------------------------------------------------------------------------- (b) mutations


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@given(data=st.data())
def test_mutation_is_reported_at_its_path(kind, data):
    mutated, prefix, fragment = data.draw(mutations((kind,)))
    text = dump(mutated)
    note(text)
    issues = errors_of(text)
    shown = [i.format() for i in issues]
    note(shown)
    assert any(i.path.startswith(prefix) and fragment in i.message and i.severity == "error"
               for i in issues), f"expected {prefix!r}: ...{fragment}... in {shown}"
    for issue in issues:  # every error says where it is
        assert issue.file == "<text>" and issue.line is not None and issue.column is not None


@given(data=st.data())
def test_dangling_name_is_located_at_the_name(data):
    """The issue of an unknown level name points at the line where the name is written."""
    mutated, prefix, fragment = data.draw(mutations(("dangling",)))
    ghost = fragment.split("'")[1]
    text = dump(mutated)
    lines = [n + 1 for n, line in enumerate(text.splitlines())
             if line.strip().endswith((f" {ghost}", f"-{ghost}", f"'{ghost}'"))
             or line.strip() in (f"- {ghost}", f"- '{ghost}'")]
    assume(len(lines) == 1)  # written once (a typo may repeat elsewhere as a real key)
    [issue] = [i for i in errors_of(text) if fragment in i.message]
    assert issue.line == lines[0]


# --------------------------------------------------------------------------- (c) robustness


def _loads_or_spec_error(text: str) -> None:
    try:
        spec = load_spec(text)
    except SpecError as err:
        assert err.issues and all(i.message for i in err.issues)
        assert str(err)  # renders
    else:
        assert isinstance(spec, Spec)


def _not_a_known_crash(text: str) -> bool:
    """A NUL in what looks like a file name is a known crash (test_loader.py)."""
    return not ("\x00" in text and "\n" not in text and text.endswith((".yaml", ".yml")))


@given(st.text().filter(_not_a_known_crash))
def test_arbitrary_text_raises_only_spec_error(text):
    _loads_or_spec_error(text)


@given(yaml_values)
def test_arbitrary_yaml_data_raises_only_spec_error(value):
    _loads_or_spec_error(yaml.safe_dump(value))


@given(yamlish_text)
def test_yaml_looking_text_raises_only_spec_error(text):
    _loads_or_spec_error(text)


@given(corrupted_specs())
def test_spec_with_a_random_subtree_raises_only_spec_error(data):
    """Deep in a spec, any junk value is a SpecError, never a crash of the graph checks."""
    text = dump(data)
    note(text)
    _loads_or_spec_error(text)
    spec, issues = validate(text)  # validate never raises either
    assert (spec is None) == any(i.severity == "error" for i in issues)


# --------------------------------------------------------------------------- (d) error locator


def _key_nodes(node: yaml.Node, path: tuple = ()) -> list[tuple[tuple, yaml.ScalarNode]]:
    """(path, key node) of every mapping key in a composed document; the keys a merge
    (``<<: *anchor``) brings in are listed at the merging mapping's path."""
    out = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                for source in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    out += _key_nodes(source, path)
                continue
            out.append(((*path, key.value), key))
            out += _key_nodes(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _key_nodes(item, (*path, i))
    return out


def _is_name(path: tuple) -> bool:
    """Keys that are names, not fields: level names, search paths, ``when`` paths."""
    parent = path[:-1]
    return parent == ("levels",) or parent[-2:] == ("search", "space") or parent[-1:] == ("when",)


def _is_tag(path: tuple) -> bool:
    """Keys that pick a union member: their typo is a missing tag, located at the parent."""
    return ((len(path) == 3 and path[0] == "levels" and path[2] == "type")
            or (len(path) == 4 and path[0] == "levels" and path[2] == "memory" and path[3] == "kind")
            or (path[:2] == ("model", "blocks") and len(path) == 6 and path[-1] in ("level", "parallel", "context")))


def _mapping_starts(node: yaml.Node, out: dict | None = None) -> dict[int, int]:
    """id(key node) -> line where the mapping holding it starts (an anchor may come first)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out.setdefault(id(key), node.start_mark.line + 1)
            _mapping_starts(value, out)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _mapping_starts(item, out)
    return out


def _field_keys(root: yaml.Node) -> list[tuple[tuple, yaml.ScalarNode]]:
    """Keys that are fields, each key node once (an anchored mapping is reached again
    through every alias of it: the first path is kept)."""
    seen: set[int] = set()
    out = []
    for path, key in _key_nodes(root):
        if not _is_name(path) and id(key) not in seen:
            seen.add(id(key))
            out.append((path, key))
    return out


def _with_typo(text: str, key: yaml.ScalarNode, typo: str) -> str:
    start = key.start_mark.index
    assert text[start:start + len(key.value)] == key.value
    return text[:start] + typo + text[start + len(key.value):]


@st.composite
def spec_texts(draw):
    """A bundled spec as written (comments, flow style, extends) or a dumped valid draw."""
    if draw(st.booleans()):
        return draw(st.sampled_from(BUNDLED_TEXTS))
    return dump(draw(valid_specs()))


@given(spec_texts(), st.data())
def test_typo_is_reported_at_the_line_of_its_key(text, data):
    root = yaml.compose(text)
    path, key = data.draw(st.sampled_from(_field_keys(root)), label="key")
    typo = _typo(data.draw, key.value, ALL_KEYS)
    line, column = key.start_mark.line + 1, key.start_mark.column + 1
    issues = errors_of(_with_typo(text, key, typo))
    shown = [i.format() for i in issues]
    if _is_tag(path):  # the union member is unknown: reported at the mapping that holds the key
        starts = {line, _mapping_starts(root)[id(key)]}
        assert any(i.line in starts and i.file == "<text>" for i in issues), shown
    else:
        assert any(i.message == f"unknown key '{typo}'" and (i.file, i.line, i.column) == ("<text>", line, column)
                   for i in issues), shown


@given(spec_texts(), st.data())
def test_independent_typos_are_all_reported_in_one_pass(text, data):
    keys = [(p, k) for p, k in _field_keys(yaml.compose(text)) if not _is_tag(p)]
    first = data.draw(st.sampled_from(keys), label="first")
    unrelated = [(p, k) for p, k in keys
                 if p[:len(first[0])] != first[0] and first[0][:len(p)] != p]
    assume(unrelated)
    second = data.draw(st.sampled_from(unrelated), label="second")
    typos: dict[int, str] = {}
    (_, early), (_, late) = sorted((first, second), key=lambda pk: pk[1].start_mark.index)
    for key in (late, early):  # edit from the end: the earlier index stays valid
        typos[id(key)] = _typo(data.draw, key.value, ALL_KEYS | set(typos.values()))
        text = _with_typo(text, key, typos[id(key)])
    issues = errors_of(text)
    shown = [i.format() for i in issues]
    for key in (early, late):
        column = key.start_mark.column + 1
        if key is late and late.start_mark.line == early.start_mark.line:  # shifted by the first edit
            column += len(typos[id(early)]) - len(early.value)
        where = ("<text>", key.start_mark.line + 1, column)
        assert any(i.message == f"unknown key '{typos[id(key)]}'" and (i.file, i.line, i.column) == where
                   for i in issues), (where, shown)


def _scalar_values(node: yaml.Node, path: tuple = ()) -> list[tuple[tuple, yaml.ScalarNode]]:
    """(path, node) of every scalar value (mapping values and list items)."""
    out = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                for source in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    out += _scalar_values(source, path)
            elif isinstance(value, yaml.ScalarNode):
                out.append(((*path, key.value), value))
            else:
                out += _scalar_values(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if isinstance(item, yaml.ScalarNode):
                out.append(((*path, i), item))
            else:
                out += _scalar_values(item, (*path, i))
    return out


@given(spec_texts(), st.data())
def test_misspelt_word_or_name_is_reported_at_its_line(text, data):
    """A misspelt enumerated word (``rule: gd``, ``type: memory``, ``period: never``) or
    level name (``keys: mem_k``, a layer) is an error located at the line of the word."""
    names = set(load_raw(text).data["levels"])
    root = yaml.compose(text)
    seen, words = set(), []
    for path, node in _scalar_values(root):
        if (node.style is None and node.tag == "tag:yaml.org,2002:str" and id(node) not in seen
                and node.value in ALL_LITERALS | names and "search" not in path
                and path[-1] not in ("description", "name", "data")):
            seen.add(id(node))
            words.append((path, node))
    assume(words)
    path, node = data.draw(st.sampled_from(words), label="word")
    typo = _typo(data.draw, node.value, ALL_LITERALS | names)
    issues = errors_of(_with_typo(text, node, typo))
    assert any(i.line == node.start_mark.line + 1 and i.file == "<text>" for i in issues), \
        [i.format() for i in issues]


def _leaves(data, path: tuple = ()) -> list[tuple[tuple, object]]:
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(data, list) and data and all(isinstance(x, (dict, list)) for x in data):
        return [leaf for i, v in enumerate(data) for leaf in _leaves(v, (*path, i))]
    return [(path, data)]


def _yaml_value(value) -> str:
    """One-line YAML text of a value, as a user would type it after ``path=``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text[:-len("\n...\n")] if text.endswith("\n...\n") else text[:-1]


@given(valid_specs(), st.data())
def test_override_with_the_same_value_changes_nothing(data, draw):
    """``path=value`` with the value already there (as YAML text) is the identity, and
    ``~path`` removes exactly that key."""
    leaves = [(p, v) for p, v in _leaves(data) if not any("." in str(part) for part in p)]
    path, value = draw.draw(st.sampled_from(leaves), label="leaf")
    dotted = ".".join(map(str, path))
    text = dump(data)
    override = f"{dotted}={_yaml_value(value)}"
    assert load_raw(text, [override]).data == data
    assert load_spec(text, [override]) == load_spec(text)

    deleted = load_raw(text, [f"~{dotted}"]).data
    parent, expected = deleted, copy.deepcopy(data)
    for part in path[:-1]:
        parent, expected = parent[part], expected[part]
    assert path[-1] not in parent if isinstance(parent, dict) else len(parent) == len(expected) - 1
    spec, issues = validate(text, [f"~{dotted}"])  # a default, or an error; never a crash
    assert (spec is None) == any(i.severity == "error" for i in issues)


# --------------------------------------------------------------------------- (e) JSON Schema


@pytest.fixture(scope="module")
def schema_validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = Spec.model_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_errors(validator, data: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


@given(valid_specs())
def test_json_schema_accepts_every_valid_draw(schema_validator, data):
    assert _schema_errors(schema_validator, data) == []


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_json_schema_accepts_bundled_specs(schema_validator, path):
    assert _schema_errors(schema_validator, load_raw(path).data) == []


def test_json_schema_is_not_vacuous(schema_validator):
    """Values of the wrong type, unknown keys and unknown level types are rejected."""
    data = load_raw(ROOT / "specs" / "hope.yaml").data
    for path, value in [(("model", "width"), "wide"), (("model", "widht"), 128),
                        (("levels", "memory", "type"), "memroy"), (("nlc",), 2)]:
        bad = copy.deepcopy(data)
        target = bad
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        assert _schema_errors(schema_validator, bad), path


# --------------------------------------------------------------------------- known bugs
# Each test states the behaviour the spec language documents; it fails today.

_MINIMAL = """\
nlc: 1
levels:
  cms:
    type: mlp
    period: 4
    objective: {kind: task}
    update: {rule: gd, lr: 1.0e-3}
  outer: {type: optimizer}
model:
  width: 32
  heads: 4
  blocks:
    - layers: [cms]
train: {seq_len: 64}
"""


def _minimal(old: str, new: str) -> str:
    assert old in _MINIMAL
    return _MINIMAL.replace(old, new, 1)


def test_minimal_spec_is_valid():
    """The base of the known-bug tests below is itself valid."""
    assert validate(_MINIMAL)[1] == []


@pytest.mark.parametrize("knob", ["retention", "forget"])
def test_mlp_knob_from_unknown_level_is_reported(knob):
    issues = errors_of(_minimal("lr: 1.0e-3}", f"lr: 1.0e-3, {knob}: {{from: ghost}}}}"))
    assert any(i.path.startswith(f"levels.cms.update.{knob}") and "unknown level 'ghost'" in i.message
               for i in issues)


@pytest.mark.parametrize("rule", ["delta", "dgd"])
def test_mlp_level_rule_must_fit(rule):
    issues = errors_of(_minimal("rule: gd", f"rule: {rule}"))
    assert any(i.path == "levels.cms.update.rule" for i in issues)


def test_memory_level_rejects_steps_period():
    text = _minimal("  outer: {type: optimizer}", "  mem: {type: memory, period: {steps: 2}}\n"
                            "  outer: {type: optimizer}").replace("[cms]", "[mem, cms]")
    issues = errors_of(text)
    assert any(i.path.startswith("levels.mem.period") and "optimizer" in i.message for i in issues)


def test_max_only_applies_to_a_data_dependent_knob():
    text = _minimal("lr: 1.0e-3}", "lr: {value: 1.0e-3, max: 2.0}}")
    issues = errors_of(text)
    assert any(i.path.startswith("levels.cms.update.lr") and "max" in i.message for i in issues)


@pytest.mark.parametrize("name", ["1e5", "2E-3", "-1e+2"])
def test_spec_to_yaml_keeps_float_like_strings(name):
    spec = load_spec(_MINIMAL + f"name: '{name}'\ndescription: '{name}'\n")
    again = load_spec(spec_to_yaml(spec))
    assert again == spec


@pytest.mark.parametrize("override", ["model.blocks.0.repeat=true", "train.batch=true",
                                      "train.steps=true"])
def test_boolean_is_not_a_number(override):
    with pytest.raises(SpecError):
        load_spec(_MINIMAL, [override])



@pytest.mark.parametrize("init", ["{from: cms_slow, kind: copy}", "{from: cms_slow, level: cms_other}"])
def test_init_with_conflicting_keys_is_an_error(init):
    slow = "{type: mlp, period: 16, objective: {kind: task}, update: {rule: gd}}"
    text = _minimal("  outer: {type: optimizer}", f"  cms_slow: {slow}\n  cms_other: {slow}\n"
                    "  outer: {type: optimizer}").replace(
        "    update: {rule: gd, lr: 1.0e-3}\n", f"    update: {{rule: gd, lr: 1.0e-3}}\n    init: {init}\n"
    ).replace("[cms]", "[cms, cms_slow, cms_other]")
    assert validate(text.replace(init, "{from: cms_slow}"))[1] == []  # the same spec without the conflict
    assert any(i.path.startswith("levels.cms.init") for i in errors_of(text))


def test_level_without_type_is_a_missing_type():
    [issue] = errors_of(_minimal("  cms:\n    type: mlp\n", "  cms:\n"))
    assert issue.path == "levels.cms.type" and issue.message == "required field is missing"
    assert issue.hint and "attention|memory|mlp|persistent|optimizer" in issue.hint


@pytest.mark.parametrize("shape", ["{}", "{depth: 2}"])
def test_memory_shape_without_kind(shape):
    text = _minimal("  outer: {type: optimizer}",
                    f"  mem: {{type: memory, memory: {shape}}}\n  outer: {{type: optimizer}}").replace("[cms]", "[mem, cms]")
    spec, issues = validate(text)
    assert all("Unable to extract tag" not in i.message for i in issues), [i.format() for i in issues]


def test_every_bad_level_name_is_reported_at_its_line():
    text = _minimal("  outer: {type: optimizer}", "  outer: {type: optimizer}\n  'a.b': {type: mlp}\n  '12': {type: mlp}")
    issues = errors_of(text)
    lines = {n + 1 for n, line in enumerate(text.splitlines()) if line.startswith(("  'a.b'", "  '12'"))}
    assert {i.line for i in issues if "not an identifier" in i.message} == lines
