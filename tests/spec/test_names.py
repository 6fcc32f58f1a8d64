"""A spec can be named three ways wherever one is taken: a file, a bundled name (``hope``,
``search/hope_cms``; see ``nlc ls``) or, in the Python API only, YAML text. One rule
(``nlc.spec.load.spec_source``) decides; an existing file wins over a bundled name of the
same spelling. ``nlc cp`` writes copies that validate where they land."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import nlc
from nlc import status
from nlc.cli.app import app
from nlc.cli.cp import portable_text
from nlc.errors import SpecError
from nlc.spec import spec_to_yaml
from nlc.graph.validate import load_spec, validate
from nlc.spec.load import bundled_specs, spec_source
from nlc.spec.source import SpecInputError

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = bundled_specs()
TINY_HOPE = ["model.width=16", "model.blocks.0.repeat=1"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The working directory is outside the repository: ``hope`` names no file there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def relative_extends(path: Path) -> list[str]:
    parent = yaml.safe_load(path.read_text(encoding="utf-8")).get("extends") or []
    return [item for item in ([parent] if isinstance(parent, str) else parent) if (path.parent / item).is_file()]


WITH_RELATIVE_EXTENDS = sorted(name for name, path in BUNDLED.items() if relative_extends(path))


def test_the_bundled_list_covers_every_folder():
    assert {"hope", "titans_mac", "base/small", "search/hope_cms", "ablations/hope_no_cms"} <= set(BUNDLED)
    assert not any(name.startswith("invalid/") for name in BUNDLED)
    assert all(path == path.resolve() and path.is_file() for path in BUNDLED.values())
    assert "search/hope_cms" in WITH_RELATIVE_EXTENDS and "cms" in WITH_RELATIVE_EXTENDS


def test_api_takes_bundled_names(elsewhere):
    assert load_spec("hope").name == "hope"
    searched = load_spec("search/hope_cms")  # its relative extends (../hope.yaml) still resolves
    assert searched.name == "hope_cms_search" and searched.levels.keys() >= {"memory", "cms_fast"}
    assert load_spec(Path("ablations/hope_no_cms")).name == "hope_no_cms"  # a Path that names no file
    spec, issues = validate("titans_mac")
    assert spec is not None and spec.name == "titans_mac"
    model = nlc.compile("hope", overrides=TINY_HOPE, seed=0)
    assert model.spec.name == "hope" and model.spec.model.width == 16


def test_a_bundled_spec_is_read_and_reported_at_its_real_path(elsewhere):
    assert spec_source("hope") == (BUNDLED["hope"], str(BUNDLED["hope"]))
    assert spec_source("hope", allow_text=False) == (BUNDLED["hope"], str(BUNDLED["hope"]))
    spec, issues = validate("base/small")  # a base: no blocks
    assert spec is None
    assert [(i.path, i.file) for i in issues] == [("model.blocks", str(BUNDLED["base/small"]))]
    assert issues[0].line == 16


def test_yaml_text_still_works_in_the_api():
    text = (ROOT / "specs" / "hope.yaml").read_text(encoding="utf-8")
    assert spec_source(text) == (text, "<text>")
    assert load_spec(text).name == "hope"
    one_line = ("{nlc: 1, levels: {outer: {type: optimizer}, attn: {type: attention}}, "
                "model: {blocks: [{layers: [attn]}]}}")
    assert load_spec(one_line).levels.keys() == {"outer", "attn"}
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec("")


def test_the_command_line_never_reads_text(elsewhere):
    with pytest.raises(SpecInputError, match="no such file or bundled spec 'a: b'"):
        spec_source("a: b", allow_text=False)
    result = run("show", "{nlc: 1}")
    assert result.exit_code == status.BAD_INPUT
    assert result.stderr == "{nlc: 1}: <root>: no such file or bundled spec '{nlc: 1}' (nlc ls lists them)\n"


def test_an_unknown_name_is_one_line_with_a_suggestion(elsewhere):
    with pytest.raises(SpecInputError) as info:
        load_spec("hopee")
    assert info.value.exit_status == status.BAD_INPUT
    line = "hopee: <root>: no such file or bundled spec 'hopee' (nlc ls lists them; did you mean 'hope'?)"
    assert str(info.value) == line
    for verb in ("validate", "show", "graph", "compile", "train"):
        args = [verb, "hopee"] + (["--out", "run"] if verb == "train" else [])
        result = run(*args)
        assert result.exit_code == status.BAD_INPUT, (verb, result.output)
        assert result.stderr.splitlines()[0] == line, verb
    typo = run("validate", "search/hope_cm")
    assert "did you mean 'search/hope_cms'?" in typo.stderr and typo.exit_code == status.BAD_INPUT


def test_a_missing_yaml_file_is_not_taken_for_a_bundled_spec(elsewhere):
    with pytest.raises(SpecInputError) as info:
        load_spec("hope.yaml")
    assert str(info.value) == ("hope.yaml: <root>: no such spec file: hope.yaml "
                               "(nlc ls lists the bundled specs; did you mean the bundled spec 'hope'?)")


def test_a_file_in_the_working_directory_wins_over_a_bundled_name(elsewhere):
    transformer = BUNDLED["transformer"].read_text(encoding="utf-8")
    (elsewhere / "hope").write_text(transformer.replace("name: transformer", "name: mine"), encoding="utf-8")
    assert load_spec("hope").name == "mine"
    assert run("validate", "hope").stdout.startswith("OK hope: mine")
    (elsewhere / "hope").unlink()
    (elsewhere / "hope").mkdir()  # a run folder of that name does not hide the bundled spec
    assert load_spec("hope").name == "hope"
    assert run("validate", "hope").exit_code == status.OK
    (elsewhere / "other").mkdir()  # a directory that is no bundled name is still refused
    refused = run("validate", "other")
    assert refused.exit_code == status.BAD_INPUT and "other is a directory, not a spec file" in refused.stderr


def test_every_spec_verb_takes_a_bundled_name(elsewhere):
    assert run("validate", "hope").stdout.startswith("OK hope: hope, 9 levels")
    assert run("show", "search/hope_cms").stdout.startswith("nlc: 1\nname: hope_cms_search\n")
    graph = run("graph", "titans_mac")
    assert graph.exit_code == 0 and "levels of titans_mac" in graph.stdout
    emitted = run("compile", "hope", "--emit", "hope.py")
    assert emitted.exit_code == 0, emitted.output
    assert f"SOURCE = {str(BUNDLED['hope'])!r}" in (elsewhere / "hope.py").read_text(encoding="utf-8")


def test_search_dry_run_takes_a_bundled_name(elsewhere):
    pytest.importorskip("optuna")
    result = run("search", "search/hope_cms", "--dry-run", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("--- # sample 0:") and "name: hope_cms_search" in result.stdout


def test_train_takes_a_bundled_name(elsewhere):
    result = run("train", "hope", *TINY_HOPE, "train.batch=1", "train.seq_len=32", "train.eval_batches=1",
                 "--steps", "1", "--out", "run", "--no-progress", "--sample-tokens", "0", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "validation bpb:" in result.stdout and (elsewhere / "run" / "checkpoint").is_dir()


@pytest.mark.parametrize("name", WITH_RELATIVE_EXTENDS)
def test_a_copy_validates_from_anywhere(name, elsewhere):
    deep = elsewhere / "a" / "b"
    deep.mkdir(parents=True)
    result = run("cp", name, str(deep / "copy.yaml"))
    assert result.exit_code == 0, result.output
    copy = deep / "copy.yaml"
    assert run("validate", str(copy)).exit_code == status.OK
    assert spec_to_yaml(load_spec(copy)) == spec_to_yaml(load_spec(name))
    original = BUNDLED[name].read_text(encoding="utf-8").splitlines()
    copied = copy.read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(original, copied) if a != b]
    assert len(original) == len(copied) and changed  # same lines; only these two kinds change
    for before, after in changed:
        if before.startswith("extends:"):
            parent = after.split(":", 1)[1].strip()
            assert parent in BUNDLED
        else:
            assert "$schema=" in before and "$schema=" in after
            schema = Path(after.split("$schema=", 1)[1])
            assert (deep / schema).resolve() == (ROOT / "docs" / "nlc.schema.json").resolve()


def test_cp_rewrites_every_extends_form(tmp_path):
    """Lists and quoted entries too, found by the parser's marks; comments stay."""
    to_hope = os.path.relpath(BUNDLED["hope"], tmp_path)  # relative paths to bundled files
    to_base = os.path.relpath(BUNDLED["base/small"], tmp_path)
    source = tmp_path / "listed.yaml"
    source.write_text(f"# a comment\nextends:  # two bases\n  - '{to_base}'\n  - {to_hope}\nname: x  # kept\n",
                      encoding="utf-8")
    assert portable_text(source, tmp_path / "elsewhere.yaml") == (
        "# a comment\nextends:  # two bases\n  - base/small\n  - hope\nname: x  # kept\n")
    source.write_text(f'extends: ["{to_hope}", ablations/hope_no_cms]\n', encoding="utf-8")
    assert portable_text(source, tmp_path / "x.yaml") == "extends: [hope, ablations/hope_no_cms]\n"
