"""Generated source never contains user text except as a Python literal.

``nlc.compile`` executes the source it generates, so any text from a spec (its name and
descriptions, level names, its file name, override text, a checkpoint's stored spec) that
reached that source unescaped would be code. Each test puts hostile text into one of
those fields and checks that (a) compiling executes nothing of it (the payloads set
``builtins.NLC_PWNED``), (b) the source parses, its comments are one line each and it has
no line break but ``\\n`` (so ``linecache`` and the tokenizer agree), and (c) the text
comes back exactly from the module's literals.
"""
from __future__ import annotations

import ast
import builtins
import io
import json
import re
import shlex
import sys
import tokenize

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import nlc
from nlc.lower.names import comment, identifier
from nlc.errors import SpecError
from nlc.graph.validate import validate

CANARY = "NLC_PWNED"
PAYLOAD = f"__import__('builtins').__setattr__({CANARY!r}, 1)"
FRAGMENTS = ['"""', "'''", '"', "'", "\\", "\\N{BULLET}", "\\x41", "\n", "\r", "\r\n", "\x00",
             "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029", "#", "é", "\U0001f642",
             "(", ")", "{", "}", ";", " and ", ":", "-", "\t", PAYLOAD]
HOSTILE = [
    f'x""" and {PAYLOAD} and """',
    f"x''' and {PAYLOAD} and '''",
    f"x\n{PAYLOAD}\n#",
    f"x\r{PAYLOAD}\r#",
    f"x\u2028{PAYLOAD}\u2028#",
    f"x\x0c\n{PAYLOAD}\n",
    f"x\\\n{PAYLOAD}",
    f"x\x00{PAYLOAD}",
    f"\\N{{BULLET}}' + {PAYLOAD} + '",
]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# any text: hostile fragments mixed with arbitrary characters (no lone surrogates: YAML and
# file names cannot carry them)
any_char = st.characters(blacklist_categories=("Cs",))
user_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(any_char, max_size=6)),
                     max_size=10).map("".join)

TINY = """\
nlc: 1
name: {name}
description: {description}
levels:
  attn: {{type: attention}}
  mlp: {{type: mlp, expansion: 1, description: {description}}}
  outer: {{type: optimizer, rule: adamw, lr: 1.0e-3}}
model:
  width: 8
  heads: 2
  blocks:
    - layers: [attn, mlp]
"""


def quoted(text: str) -> str:
    """A YAML double-quoted scalar for any text: everything but printable ASCII escaped."""
    return '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\U{ord(c):08x}"
                         for c in text) + '"'


def tiny(name: str = "tiny", description: str = "a tiny model") -> str:
    return TINY.format(name=quoted(name), description=quoted(description))


@pytest.fixture(autouse=True)
def _no_canary():
    if hasattr(builtins, CANARY):  # pragma: no cover - only after a failed test
        delattr(builtins, CANARY)
    yield
    assert not hasattr(builtins, CANARY), "compiling executed text from the spec"


def compiled(source, overrides=()):
    """The compiled model, after checking nothing was executed and the source is sound."""
    model = nlc.compile(source, overrides=list(overrides))
    assert not hasattr(builtins, CANARY), "compiling executed text from the spec"
    check_source(model.source)
    return model


def check_source(source: str) -> None:
    ast.parse(source)
    assert source.splitlines() == source.split("\n")[:-1], "a line break other than \\n"
    assert all(c.isprintable() or c == "\n" for c in source)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    assert all("\n" not in t.string for t in tokens if t.type == tokenize.COMMENT)


def strings(source: str) -> set[str]:
    """Every string literal of the module."""
    return {n.value for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def constants(source: str) -> dict[str, object]:
    """The module's plain ``NAME = literal`` assignments."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            out[node.targets[0].id] = node.value.value
    return out


@SETTINGS
@given(name=user_text, description=user_text)
@example(name=HOSTILE[0], description=HOSTILE[1])
@example(name=HOSTILE[2], description=HOSTILE[3])
@example(name=HOSTILE[4], description=HOSTILE[5])
@example(name=HOSTILE[6], description=HOSTILE[7])
@example(name=HOSTILE[8], description="")
def test_spec_name_and_descriptions_stay_literals(name, description):
    model = compiled(tiny(name, description))
    expected = name or "model"  # an empty name falls back to "model"
    assert constants(model.source)["SPEC"] == expected
    assert model.name == expected
    assert type(model).__name__ == "Model"  # never derived from the name
    assert model.spec.description == description
    assert model.spec.levels["mlp"].description == description


filename_text = user_text.map(lambda t: t.replace("/", "").replace("\x00", "")[:40])


@SETTINGS
@given(stem=filename_text)
@example(stem="x\n" + PAYLOAD + "\n#")
@example(stem='x"""' + PAYLOAD)
@example(stem="x\r\u2028\x85\x0c'")
def test_spec_file_name_stays_a_literal(stem, tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / f"{stem}.yaml"
    try:
        path.write_text(tiny(), encoding="utf-8")
    except (OSError, UnicodeEncodeError):  # pragma: no cover - a name this file system refuses
        assume(False)
    model = compiled(path)
    found = constants(model.source)
    assert found["SOURCE"] == str(path)
    assert shlex.split(found["REGENERATE"]) == ["nlc", "compile", str(path), "--emit", "FILE"]
    assert model.ir.levels["mlp"].origin == f"{path}:6"
    assert f"{path}:6" in strings(model.source)


def override_text(text: str) -> str:
    """``text`` without the characters a YAML stream may not hold (NUL, form feed, ...)."""
    return re.sub(r"[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]", "", text)


@SETTINGS
@given(text=user_text.map(override_text))
@example(text=f"x''' and {PAYLOAD} and '''")
@example(text=f'x""" and {PAYLOAD} and """')
def test_override_text_stays_a_literal(text):
    """The override replaces a whole level, so its text becomes that level's origin, which
    the source quotes in the level constant, the layer origins and comments."""
    override = "levels.mlp={type: mlp, expansion: 1, description: '%s'}" % text.replace("'", "''")
    try:
        model = compiled(tiny(), [override])
    except SpecError:  # YAML the override cannot hold (a line break it folds badly, ...)
        assume(False)
    origin = f"<override 1: {override}>:1"
    assert model.ir.levels["mlp"].origin == origin
    assert origin in strings(model.source)
    assert all(origin in model.ORIGINS[layer] for layer in model.LAYERS if layer.endswith("_mlp"))


def test_overrides_are_in_the_regenerate_command():
    """``REGENERATE`` carries the overrides that produced the model, each quoted."""
    overrides = ["model.width=16", f'name=x""" {PAYLOAD}', "~levels.mlp.description"]
    model = compiled(tiny(), overrides)
    assert shlex.split(constants(model.source)["REGENERATE"]) == [
        "nlc", "compile", "<text>", *overrides, "--emit", "FILE"]


@SETTINGS
@given(name=user_text)
@example(name="attn\n")
@example(name="a-b")
@example(name="class")
@example(name=f"x\n{PAYLOAD}\n")
@example(name="é")
def test_level_names_that_are_not_identifiers_are_refused_at_their_line(name):
    assume(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))
    text = tiny().replace("  mlp: {", f"  {quoted(name)}: {{").replace("[attn, mlp]", f"[attn, {quoted(name)}]")
    spec, issues = validate(text)
    assert not hasattr(builtins, CANARY)
    assert spec is None
    assert any(i.severity == "error" and i.line == 6 and "not an identifier" in i.message for i in issues)


@SETTINGS
@given(a=st.text(any_char, max_size=12), b=st.text(any_char, max_size=12))
@example(a="x_61_", b="a")
@example(a="class", b="x_636c617373_")
@example(a="é", b="e")
def test_identifier_is_a_one_to_one_map_into_identifiers(a, b):
    for text in (a, b):
        made = identifier(text)
        assert made.isascii() and made.isidentifier() and not made.startswith("__")
        assert made == text or re.fullmatch(r"x_[0-9a-f]*_", made)
    assert (identifier(a) == identifier(b)) == (a == b)
    assert identifier("cms_fast") == "cms_fast"


@SETTINGS
@given(text=user_text)
def test_a_comment_is_one_printable_ascii_line(text):
    made = comment(text)
    assert made.startswith("# ") and all(" " <= c <= "~" for c in made)
    tokens = list(tokenize.generate_tokens(io.StringIO(f"x = 1  {made}\n").readline))
    assert [t.string for t in tokens if t.type == tokenize.COMMENT] == [made]


def test_the_reported_yaml_does_not_run_a_shell_command(tmp_path, monkeypatch):
    """Issue 12's reproducer: a name closing the old docstring ran ``touch PWNED``."""
    from nlc.cli.app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.yaml").write_text(
        "nlc: 1\nextends: transformer\n"
        """name: 'x\"\"\" and __import__("os").system("touch PWNED") and \"\"\"'\n""", encoding="utf-8")
    result = CliRunner().invoke(app, ["compile", "e.yaml", "--emit", "out.py"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "PWNED").exists()
    source = (tmp_path / "out.py").read_text(encoding="utf-8")
    check_source(source)
    assert constants(source)["SPEC"] == 'x""" and __import__("os").system("touch PWNED") and """'


def test_a_checkpoint_spec_with_a_payload_name_loads_without_running_it(tmp_path):
    """A checkpoint's meta.json is user data too: its spec goes through the loader and the
    code generator like any other, whoever wrote it (its hash is no signature)."""
    from nlc.spec.load import spec_to_yaml
    from nlc.training import load_checkpoint, save_checkpoint, spec_hash

    model = compiled(tiny())
    save_checkpoint(tmp_path, model, {}, {"step": 0, "spec_yaml": spec_to_yaml(model.spec),
                                         "spec_sha256": spec_hash(model.spec)})
    meta_file = tmp_path / "checkpoint" / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    name = HOSTILE[0] + "\n" + HOSTILE[2]
    spec = nlc.load_spec(meta["spec_yaml"], [f"name={quoted(name)}"])
    meta.update(spec_yaml=spec_to_yaml(spec), spec_sha256=spec_hash(spec))
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    loaded, _ = load_checkpoint(tmp_path)
    assert not hasattr(builtins, CANARY)
    assert loaded.name == name and type(loaded).__name__ == "Model"
    check_source(loaded.source)
    assert constants(loaded.source)["SPEC"] == name


def test_the_module_name_is_not_the_spec_name():
    model = compiled(tiny(f"os.path{PAYLOAD}"))
    module = type(model).__module__
    assert re.fullmatch(r"nlc_generated_[0-9a-f]{16}", module)
    assert sys.modules[module].__file__ == f"<nlc generated {module[-16:]}>"
