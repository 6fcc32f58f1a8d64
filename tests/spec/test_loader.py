"""Unit tests of reading spec text (docs/design.md section 1.3): ``extends``, overrides,
safe loading, YAML details (``1e-3``, merge keys, duplicate keys, encodings).

The tests at the end of this file pin bugs that were found and fixed.
"""
from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from nlc.errors import SpecError
from nlc.spec import load_raw, spec_to_yaml
from nlc.graph.validate import load_spec, validate

LEVELS = """\
levels:
  cms:
    type: mlp
    period: 4
    objective: {kind: task}
    update: {rule: gd, lr: 1.0e-3}
  outer: {type: optimizer, lr: 3.0e-4}
"""
MODEL = """\
model:
  width: 32
  heads: 4
  blocks:
    - layers: [cms]
"""
MINIMAL = "nlc: 1\n" + LEVELS + MODEL + "train: {seq_len: 64, batch: 2}\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_of(source, overrides=()) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(source, overrides)
    assert info.value.issues
    return info.value.issues


def one(issues: list, fragment: str):
    """The single issue whose message contains ``fragment``."""
    found = [i for i in issues if fragment in i.message]
    assert len(found) == 1, [i.format() for i in issues]
    return found[0]


def test_minimal_is_valid():
    assert validate(MINIMAL)[1] == []


# --------------------------------------------------------------------------- extends


def test_extends_deep_merges_maps(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        levels:
          cms: {period: 8}          # one key of a nested map
          outer: {lr: 1.0e-2}
        model: {width: 64}
        train: {batch: 4}
        """)
    data = load_raw(child).data
    assert "extends" not in data
    assert data["levels"]["cms"] == {"type": "mlp", "period": 8, "objective": {"kind": "task"},
                                     "update": {"rule": "gd", "lr": 1e-3}}
    assert data["levels"]["outer"] == {"type": "optimizer", "lr": 1e-2}
    assert data["model"]["width"] == 64 and data["model"]["heads"] == 4
    assert data["model"]["blocks"] == [{"layers": ["cms"]}]
    assert data["train"] == {"seq_len": 64, "batch": 4}
    spec = load_spec(child)
    assert spec.levels["cms"].period.tokens == 8 and spec.model.width == 64


def test_extends_replaces_lists(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL.replace("[cms]", "[cms, cms]"))
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        model:
          blocks: [{layers: [cms], repeat: 3}]
        levels:
          outer: {betas: [0.8, 0.9]}
        """)
    data = load_raw(child).data
    assert data["model"]["blocks"] == [{"layers": ["cms"], "repeat": 3}]
    assert data["levels"]["outer"]["betas"] == [0.8, 0.9]


def test_extends_a_null_level_removes_the_base_level(tmp_path):
    """``levels: {X: null}`` drops X of the base (HOPE's ablations drop a component); a null
    level that the base does not have stays an error at its line."""
    write(tmp_path, "base.yaml", MINIMAL.replace("[cms]", "[cms, cms2]").replace(
        "  outer:", "  cms2: {type: mlp}\n  outer:"))
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        levels:
          cms2: null
        model: {blocks: [{layers: [cms]}]}
        """)
    assert set(load_raw(child).data["levels"]) == {"cms", "outer"}
    assert set(load_spec(child).levels) == {"cms", "outer"}
    typo = write(tmp_path, "typo.yaml", "extends: base.yaml\nlevels:\n  cms3: null\n")
    issue = one(issues_of(typo), "valid dictionary")
    assert (issue.path, issue.line) == ("levels.cms3", 3)


def test_extends_scalar_replaces_map_and_map_replaces_scalar(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        levels:
          cms: {update: {rule: gd, lr: {learned: 0.1}}}
        """)
    assert load_raw(child).data["levels"]["cms"]["update"]["lr"] == {"learned": 0.1}


def test_extends_chain_of_three(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL + "name: a\ndescription: from a\n")
    write(tmp_path, "sub/b.yaml", "extends: ../a.yaml\nname: b\nmodel: {width: 64}\n")
    c = write(tmp_path, "c.yaml", "extends: sub/b.yaml\nname: c\ntrain: {seed: 7}\n")
    spec = load_spec(c)
    assert (spec.name, spec.description, spec.model.width, spec.train.seed) == ("c", "from a", 64, 7)
    assert spec.train.seq_len == 64  # a's train map merged with c's


def test_extends_list_merges_in_order(tmp_path):
    write(tmp_path, "one.yaml", MINIMAL + "name: one\ndescription: one\n")
    write(tmp_path, "two.yaml", "name: two\nmodel: {width: 64}\n")
    child = write(tmp_path, "child.yaml", "extends: [one.yaml, two.yaml]\ndescription: child\n")
    spec = load_spec(child)
    assert (spec.name, spec.description, spec.model.width, spec.model.heads) == ("two", "child", 64, 4)


def test_extends_keeps_the_file_and_line_of_inherited_values(tmp_path):
    base = write(tmp_path, "base.yaml", MINIMAL.replace("period: 4", "period: 0"))
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n")
    issue = one(issues_of(child), "greater than 0")
    assert issue.path == "levels.cms.period.tokens"
    assert (issue.file, issue.line) == (str(base), 5)
    overridden = write(tmp_path, "fixed.yaml", "extends: base.yaml\nlevels:\n  cms: {period: -2}\n")
    issue = one(issues_of(overridden), "greater than 0")
    assert (issue.file, issue.line) == (str(overridden), 3)


def test_extends_a_bundled_spec_by_name():
    spec = load_spec("extends: hope\nname: my_hope\n")
    assert spec.name == "my_hope" and "memory" in spec.levels


@pytest.mark.parametrize("files", [
    {"a.yaml": "extends: a.yaml\n"},
    {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
    {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: a.yaml\n"},
])
def test_extends_cycle_is_reported(tmp_path, files):
    for name, text in files.items():
        write(tmp_path, name, MINIMAL + text)
    issue = one(issues_of(tmp_path / "a.yaml"), "cycle")
    assert issue.path == "extends" and "a.yaml" in issue.message and issue.line is not None


def test_extends_missing_file_is_reported_with_its_line(tmp_path):
    child = write(tmp_path, "child.yaml", "nlc: 1\nname: x\nextends: nothere.yaml\n")
    issue = one(issues_of(child), "cannot find spec 'nothere.yaml'")
    assert (issue.path, issue.file, issue.line, issue.column) == ("extends", str(child), 3, 10)
    assert issue.hint


def test_extends_missing_file_in_a_list_is_reported(tmp_path):
    write(tmp_path, "one.yaml", MINIMAL)
    child = write(tmp_path, "child.yaml", "extends:\n  - one.yaml\n  - two.yaml\n")
    issue = one(issues_of(child), "'two.yaml'")
    assert issue.path.startswith("extends") and issue.line in (2, 3)


@pytest.mark.parametrize("value", ["5", "{a: 1}", "[base.yaml, [x]]"])
def test_extends_of_the_wrong_type_is_reported(tmp_path, value):
    write(tmp_path, "base.yaml", MINIMAL)
    child = write(tmp_path, "child.yaml", f"nlc: 1\nextends: {value}\n")
    issue = one(issues_of(child), "extends")
    assert issue.path.startswith("extends") and issue.line == 2


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("override, path, expected", [
    ("model.width=64", ("model", "width"), 64),
    ("train.dtype=bfloat16", ("train", "dtype"), "bfloat16"),
    ("levels.outer.lr=1e-3", ("levels", "outer", "lr"), 1e-3),
    ("levels.outer.lr=2.5E-4", ("levels", "outer", "lr"), 2.5e-4),
    ("model.tie_embeddings=false", ("model", "tie_embeddings"), False),
    ("train.seed=0x10", ("train", "seed"), 16),
    ("levels.outer.grad_clip=null", ("levels", "outer", "grad_clip"), None),
    ("levels.outer.grad_clip=", ("levels", "outer", "grad_clip"), None),
    ("levels.outer.betas=[0.8, 0.9]", ("levels", "outer", "betas"), [0.8, 0.9]),
    ("levels.cms.update.lr={learned: 0.1}", ("levels", "cms", "update", "lr"), {"learned": 0.1}),
    ("name='123'", ("name",), "123"),
    ("name=a=b", ("name",), "a=b"),
    (" train.seed = 3", ("train", "seed"), 3),
])
def test_override_values_are_yaml_typed(override, path, expected):
    data = load_raw(MINIMAL, [override]).data
    for part in path:
        data = data[part]
    assert data == expected and type(data) is type(expected)
    load_spec(MINIMAL, [override])  # and the result is valid


def test_overrides_apply_in_order_and_address_levels_by_name():
    spec = load_spec(MINIMAL, ["levels.cms.period=8", "levels.cms.period=16", "model.blocks.0.repeat=3",
                               "model.blocks.0.layers.0={level: cms, norm: layer}", "levels.new={type: mlp}",
                               "model.blocks.0.layers=[cms, new]"])
    assert spec.levels["cms"].period.tokens == 16
    assert spec.model.blocks[0].repeat == 3
    assert [layer.level for layer in spec.model.blocks[0].layers] == ["cms", "new"]


def test_override_list_indices_negative_and_nested():
    data = load_raw(MINIMAL, ["model.blocks.-1.layers.-1=other", "levels.outer.betas=[0.9, 0.95]",
                              "levels.outer.betas.1=0.5", "model.blocks.0.layers.0=cms"]).data
    assert data["model"]["blocks"][0]["layers"] == ["cms"]
    assert data["levels"]["outer"]["betas"] == [0.9, 0.5]
    data = load_raw(MINIMAL, ["model.blocks.-1.layers.-1=other"]).data
    assert data["model"]["blocks"][0]["layers"] == ["other"]


def test_override_delete():
    data = load_raw(MINIMAL, ["~train.seq_len", "~levels.cms.update.lr", "~model.blocks.0.layers.0"]).data
    assert "seq_len" not in data["train"]
    assert data["levels"]["cms"]["update"] == {"rule": "gd"}
    assert data["model"]["blocks"][0]["layers"] == []
    spec = load_spec(MINIMAL, ["~train.seq_len", "~levels.cms.update.lr"])
    assert spec.train.seq_len == 256 and spec.levels["cms"].update.lr.value == 1.0  # the defaults


def test_override_delete_then_dangling_reference_is_reported():
    issue = one(issues_of(MINIMAL, ["~levels.cms"]), "unknown level 'cms'")
    assert issue.path.startswith("model.blocks.0.layers.0")


@pytest.mark.parametrize("override, path, fragment", [
    ("levels.nope.period=3", "levels.nope.period", "no such path 'levels.nope'"),
    ("levels.cms.nested.deeper.x=1", "levels.cms.nested.deeper.x", "no such path 'levels.cms.nested'"),
    ("~levels.nope", "levels.nope", "no such path 'levels.nope'"),
    ("~model.blocks.3", "model.blocks.3", "no such path 'model.blocks.3'"),
    ("model.blocks.3.repeat=2", "model.blocks.3.repeat", "no such path 'model.blocks.3'"),
    ("model.blocks.3=x", "model.blocks.3", "out of range"),
    ("model.blocks.foo=1", "model.blocks.foo", "foo"),
    ("train.seq_len.x=1", "train.seq_len.x", "'train.seq_len' is a value, not a mapping"),
    ("model.width", "model.width", "an override is 'path=value' or '~path'"),
    ("model.width=[1, 2", "model.width", "cannot parse the value"),
])
def test_bad_override_is_reported_clearly(override, path, fragment):
    issue = one(issues_of(MINIMAL, [override]), fragment)
    assert issue.path == path
    assert issue.file == f"<override 1: {override}>"


def test_every_bad_override_is_reported_in_one_pass():
    issues = issues_of(MINIMAL, ["levels.nope.x=1", "model.width=64", "~train.nothing", "oops"])
    assert [i.file for i in issues] == ["<override 1: levels.nope.x=1>", "<override 3: ~train.nothing>",
                                        "<override 4: oops>"]


def test_an_error_in_an_override_value_points_at_the_override():
    issue = one(issues_of(MINIMAL, ["model.width=64", "levels.cms.period=0"]), "greater than 0")
    assert issue.path == "levels.cms.period.tokens" and issue.file == "<override 2: levels.cms.period=0>"


def test_overrides_then_show_then_reload_is_identity():
    spec = load_spec(MINIMAL, ["levels.cms.period=8", "~train.batch", "model.width=64"])
    assert load_spec(spec_to_yaml(spec)) == spec


# --------------------------------------------------------------------------- safe loading


def _bombs(target: Path) -> list[str]:
    """YAML that runs ``touch target`` if a loader ever constructs Python objects."""
    cmd = f'["touch {target}"]'
    return [
        f"nlc: !!python/object/apply:os.system {cmd}\n",
        f"nlc: 1\nlevels:\n  x: !!python/object/apply:os.system {cmd}\n",
        f"nlc: 1\nmodel:\n  blocks:\n    - layers: [a, !!python/object/apply:os.system {cmd}]\n",
        f"nlc: 1\nname: !!python/object/new:os.system {cmd}\n",
        f"nlc: 1\nname: !!python/object/apply:subprocess.call [[touch, {target}]]\n",
        f"nlc: 1\nname: !!python/object/apply:os.system\n  args: {cmd}\n",
        f"!!python/object/apply:os.system {cmd}\n",
        f"nlc: 1\n? !!python/object/apply:os.system {cmd}\n: 1\n",
        "nlc: 1\nname: !!python/name:os.system\n",
        "nlc: 1\nname: !!python/module:os\n",
        "nlc: 1\nname: !!python/tuple [1, 2]\n",
    ]


@pytest.mark.parametrize("index", range(11))
def test_python_tags_are_errors_and_never_run(tmp_path, index):
    target = tmp_path / "pwned"
    text = _bombs(target)[index]
    issues = issues_of(text)
    assert any(word in i.message for i in issues for word in ("tag", "constructor", "plain scalar")), \
        [i.format() for i in issues]
    tagged_line = next(n + 1 for n, line in enumerate(text.splitlines()) if "!!python" in line)
    assert any(i.line == tagged_line for i in issues)
    assert not target.exists()


def test_python_tags_in_files_extends_and_overrides_never_run(tmp_path):
    target = tmp_path / "pwned"
    base = write(tmp_path, "base.yaml", MINIMAL + f'description: !!python/object/apply:os.system ["touch {target}"]\n')
    child = write(tmp_path, "child.yaml", "extends: base.yaml\n")
    for source in (base, child):
        issue = one(issues_of(source), "tag")
        assert (issue.file, issue.line) == (str(base), 15)
    issues_of(MINIMAL, [f'name=!!python/object/apply:os.system ["touch {target}"]'])
    assert not target.exists()


@pytest.mark.parametrize("tag", ["!!set {a, b}", "!!omap [a: 1]", "!foo {a: 1}", "!foo 1", "!!pairs [a: 1]"])
def test_other_non_plain_tags_are_errors(tag):
    issue = one(issues_of(f"nlc: 1\nname: {tag}\n"), "")
    assert issue.line == 2


# --------------------------------------------------------------------------- YAML details


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("1E3", 1e3), ("-2.5e-4", -2.5e-4), ("+1e2", 100.0), ("1.0e-3", 1e-3), (".5e1", 5.0),
])
def test_exponent_floats_are_floats(text, value):
    data = load_raw(MINIMAL.replace("lr: 3.0e-4", f"lr: {text}")).data
    lr = data["levels"]["outer"]["lr"]
    assert type(lr) is float and lr == value


def test_quoted_exponent_stays_a_string():
    assert load_spec(MINIMAL + "name: '1e-3'\n").name == "1e-3"


def test_merge_keys():
    text = MINIMAL.replace("""\
  cms:
    type: mlp""", """\
  cms: &cms
    type: mlp""").replace("  outer:", """\
  cms_slow: {<<: *cms, period: 16}
  cms_two:
    <<: [*cms, {activation: gelu}]
    hidden: 64
  outer:""").replace("[cms]", "[cms, cms_slow, cms_two]")
    spec = load_spec(text)
    assert spec.levels["cms_slow"].period.tokens == 16 and spec.levels["cms_slow"].update.lr.value == 1e-3
    assert spec.levels["cms_two"].activation == "gelu" and spec.levels["cms_two"].hidden == 64
    assert spec.levels["cms_two"].period.tokens == 4


def test_merged_value_errors_point_at_the_anchor():
    text = MINIMAL.replace("  cms:\n    type: mlp\n    period: 4", "  cms: &cms\n    type: mlp\n    period: 4\n"
                           "    hidden: -1").replace("  outer:", "  cms_slow: {<<: *cms, period: 16}\n  outer:")
    issues = [i for i in issues_of(text) if "hidden" in i.path]
    assert {i.path for i in issues} == {"levels.cms.hidden", "levels.cms_slow.hidden"}
    assert {i.line for i in issues} == {6}


@pytest.mark.parametrize("text, path, line, first", [
    ("nlc: 1\nnlc: 1\n", "nlc", 2, 1),
    (MINIMAL.replace("    period: 4\n", "    period: 4\n    period: 8\n"), "levels.cms.period", 6, 5),
    (MINIMAL + "model: {}\n", "model", 15, 9),
    ("nlc: 1\nlevels: {a: 1, b: 2, a: 3}\n", "levels.a", 2, 2),
    ("1: x\n'1': y\n", "1", 2, 1),
])
def test_duplicate_keys_are_errors(text, path, line, first):
    issue = one(issues_of(text), "duplicate key")
    assert (issue.path, issue.line) == (path, line)
    assert f"first given at line {first}" in issue.message


def test_a_merge_key_does_not_count_as_a_duplicate():
    text = "nlc: 1\nbase: &b {x: 1}\nother: {<<: *b, x: 2}\n"
    assert not any("duplicate" in i.message for i in validate(text)[1])


def test_non_utf8_file_is_reported(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + "description: café\n".encode("latin-1"))
    issue = one(issues_of(path), "UTF-8")
    assert issue.file == str(path)
    child = write(tmp_path, "child.yaml", "extends: latin1.yaml\n")
    assert one(issues_of(child), "UTF-8").file == str(path)


def test_utf8_bom_and_crlf_are_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.replace("\n", "\r\n").encode())
    assert load_spec(path).model.width == 32


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("# only a comment\n", "empty"), ("[1, 2]\n", "mapping"), ("just text\n", "mapping"),
    ("a: [1, 2\n", "YAML syntax"), ("a: b: c\n", "YAML syntax"), ("a: 1\n---\nb: 2\n", "YAML syntax"),
    ("? [a]\n: 1\n", "plain scalar"), ("null: 1\n", "must be a string"), ("<<: 5\n", "merges a mapping"),
])
def test_malformed_yaml_is_a_spec_error(text, fragment):
    issues = issues_of(text)
    assert any(fragment in i.message for i in issues), [i.format() for i in issues]
    assert all(i.line is not None for i in issues if "YAML" in i.message)


def test_missing_and_directory_paths_are_spec_errors(tmp_path):
    assert one(issues_of(tmp_path / "missing.yaml"), "no such spec file")
    (tmp_path / "dir.yaml").mkdir()
    assert issues_of(tmp_path / "dir.yaml")
    assert issues_of(str(tmp_path / "dir.yaml"))


# --------------------------------------------------------------------------- known bugs
# Each test states the documented behaviour (every problem is a SpecError naming its line);
# it fails today.


@pytest.mark.parametrize("value", ["!!int abc", "!!float x", "2001-13-45", "!!timestamp 2001-02-30"])
def test_unconstructible_scalar_is_a_spec_error(value):
    issue = one(issues_of(f"nlc: 1\nname: {value}\n"), "")
    assert issue.line == 2


@pytest.mark.parametrize("override", ["name=2001-13-45", "name=!!int x"])
def test_unconstructible_override_value_is_a_spec_error(override):
    issue = one(issues_of(MINIMAL, [override]), "")
    assert issue.file == f"<override 1: {override}>"


@pytest.mark.parametrize("text", ["nlc: 1\na: &x [*x]\n", "nlc: 1\na: &x {b: *x}\n"])
def test_recursive_alias_is_a_spec_error(text):
    issue = one(_no_recursion_error(text), "")
    assert issue.line == 2


def _no_recursion_error(source) -> list:
    try:
        return issues_of(source)
    except RecursionError:  # re-raised small: pytest's report of a deep traceback takes seconds
        raise AssertionError("RecursionError escaped load_spec") from None


def test_deep_nesting_is_a_spec_error():
    _no_recursion_error("nlc: " + "[" * 800 + "]" * 800 + "\n")


def test_file_name_with_nul_is_a_spec_error():
    issues_of("spec\x00.yaml")


class _TookTooLong(Exception):
    pass


def test_alias_amplification_is_bounded():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)]

    def alarm(signum, frame):
        raise _TookTooLong()

    previous = signal.signal(signal.SIGALRM, alarm)
    # fire after 2 s, then again every 50 ms: an alarm that lands in a finaliser (__del__,
    # run by the garbage collector) is swallowed as an "unraisable exception"
    signal.setitimer(signal.ITIMER_REAL, 2.0, 0.05)
    try:
        validate("\n".join(lines) + "\n")  # loaded or rejected, either way quickly
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("period", ["'²'", "'³'"])
def test_period_with_non_ascii_digits_is_an_unknown_period(period):
    issue = one(issues_of(MINIMAL.replace("period: 4", f"period: {period}")), "period")
    assert "unknown period" in issue.message
