"""The ``nlc`` command line end to end (typer's CliRunner), without torch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.spec.load import bundled_specs
from nlc.graph.build import ordered_levels
from nlc.graph.validate import load_spec

ROOT = Path(__file__).resolve().parents[1]
HOPE = str(ROOT / "specs" / "hope.yaml")
SCHEMA_FILE = ROOT / "docs" / "nlc.schema.json"

INVALID = textwrap.dedent("""\
    nlc: 1
    levels:
      attn: {type: attention}
      mem:
        type: memory
        updat: {rule: gd}
        chunk: 0
      outer: {type: optimizer}
    model:
      blocks:
        - layers: [atn, mem]
    """)


def where(text: str, needle: str) -> str:
    """``line:col`` (1-based) of the first occurrence of ``needle`` in ``text``."""
    before = text[: text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID)
    return path


def test_validate_ok():
    result = run("validate", HOPE)
    assert result.exit_code == 0, result.output
    spec = load_spec(HOPE)
    orders = len(ordered_levels(spec))
    assert result.stdout.startswith(f"OK {HOPE}: hope, {len(spec.levels)} levels in {orders} ordered levels")
    assert result.stderr == ""


def test_validate_reports_every_issue_with_lines(invalid: Path):
    result = run("validate", str(invalid))
    assert result.exit_code == 1
    err = result.stderr
    assert where(INVALID, "updat") == "6:5"
    assert f"{invalid}:6:5: levels.mem.updat: unknown key 'updat' (did you mean 'update'?)" in err
    assert f"{invalid}:{where(INVALID, '0' + chr(10))}: levels.mem.chunk: " in err  # chunk: 0
    assert f"FAILED {invalid}: 2 errors" in err
    assert err.index("levels.mem.updat") < err.index("levels.mem.chunk")  # file order
    assert result.stdout == "" and "Traceback" not in result.output


def test_validate_semantic_error_line(tmp_path: Path):
    text = INVALID.replace("    updat: {rule: gd}\n    chunk: 0\n", "")
    path = tmp_path / "dangling.yaml"
    path.write_text(text)
    result = run("validate", str(path))
    assert result.exit_code == 1
    assert (f"{path}:{where(text, 'atn')}: model.blocks.0.layers.0.level: unknown level 'atn' "
            "(did you mean 'attn'?)") in result.stderr


def test_validate_many_specs_and_json(invalid: Path):
    result = run("validate", HOPE, str(invalid))
    assert result.exit_code == 1
    assert f"OK {HOPE}" in result.stdout and f"FAILED {invalid}" in result.stderr
    result = run("validate", HOPE, str(invalid), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [s["ok"] for s in report["specs"]] == [True, False]
    issue = report["specs"][1]["issues"][0]
    assert issue["line"] == 6 and issue["path"] == "levels.mem.updat" and issue["severity"] == "error"
    assert json.loads(run("validate", HOPE, "--json").stdout)["ok"] is True


def test_validate_all_bundled_specs():
    paths = [str(p) for name, p in bundled_specs().items() if not name.startswith("base/")]
    result = run("validate", *paths)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK ") == len(paths)


def test_validate_overrides_and_warnings():
    result = run("validate", HOPE, "levels.cms_slow.period=512")
    assert result.exit_code == 0, result.output  # warnings never fail
    assert "<override 1: levels.cms_slow.period=512>:1:1: levels.cms_slow.period: period 512" in result.stderr
    assert result.stderr.rstrip().endswith("[warning]") and "1 warning" in result.stdout
    bad = run("validate", HOPE, "train.steps=10", "model.heads=3")
    assert bad.exit_code == 1
    assert "<override 2: model.heads=3>:1:1: model.heads: " in bad.stderr
    missing = run("validate", HOPE, "levels.nope.chunk=3")
    assert missing.exit_code == 1 and "no such path 'levels.nope'" in missing.stderr
    deleted = run("validate", HOPE, "~levels.outer")
    assert deleted.exit_code == 1 and "levels" in deleted.stderr


def test_invalid_inputs_never_traceback(tmp_path: Path):
    (tmp_path / "syntax.yaml").write_text("nlc: 1\nlevels: {a: [\n")
    (tmp_path / "text.yaml").write_text("just text\n")
    (tmp_path / "tag.yaml").write_text("nlc: !!python/object/apply:os.system ['true']\n")
    for args, status in ((["validate", str(tmp_path / "missing.yaml")], 2), (["validate", str(tmp_path)], 2),
                         (["validate", str(tmp_path / "syntax.yaml")], 1), (["show", str(tmp_path / "text.yaml")], 1),
                         (["graph", str(tmp_path / "tag.yaml")], 1), (["show", HOPE, "~levels.outer"], 1),
                         (["graph", HOPE, "model.width=99"], 1)):  # 2: no file to use; 1: an invalid spec
        result = run(*args)
        assert result.exit_code == status, (args, result.output)
        assert not isinstance(result.exception, Exception), args  # only SystemExit
        assert "Traceback" not in result.output and result.stderr.strip(), args


def test_show_resolves_defaults_and_overrides():
    result = run("show", HOPE, "train.steps=-7")
    assert result.exit_code == 1 and "train.steps" in result.stderr and result.stdout == ""
    result = run("show", HOPE, "train.steps=7", "model.blocks.0.repeat=3")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["train"]["steps"] == 7 and data["model"]["blocks"][0]["repeat"] == 3
    assert data["train"]["eval_every"] == 50  # a default filled in
    assert data["levels"]["memory"]["update"]["lr"]["from"] == "mem_lr"
    assert load_spec(result.stdout) == load_spec(HOPE, ["train.steps=7", "model.blocks.0.repeat=3"])
    assert run("show", HOPE, HOPE).exit_code == 2  # one spec only


def test_graph_table():
    result = run("graph", HOPE, "levels.cms_slow.period=256", "model.width=128", "model.heads=4")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("mem_k", "mem_v", "mem_lr", "mem_alpha", "memory", "cms_fast", "cms_mid", "cms_slow", "outer"):
        assert name in out
    assert "every 256 tokens" in out and "every optimizer step" in out and "(outermost)" in out
    # memory (4 heads, MLP 32 -> 64 -> 32, 2 repeats): 2 x (q projection + conv 4 + the components'
    # shared input conv 4 + output map + learned initial state)
    assert f"{2 * (128 * 128 + 4 * 128 + 4 * 128 + 128 * 128 + 4 * (32 * 64 + 64 * 32)):,}" in out


def test_schedule_timeline_json_text_and_plot(tmp_path):
    spec = str(ROOT / "specs" / "cms_nested.yaml")
    result = run("schedule", spec, "levels.outer.period={steps: 2}", "--tokens", "256", "--steps", "6", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["level"]: r for r in json.loads(result.stdout)["levels"]}
    assert rows["attn"]["ticks"] == list(range(256))
    assert rows["cms_fast"]["ticks"] == list(range(15, 256, 16))
    assert rows["cms_mid"]["ticks"] == [63, 127, 191, 255] and rows["cms_mid"]["reset_by"] == "cms_slow"
    assert rows["cms_slow"]["ticks"] == [127, 255] and rows["cms_slow"]["teach"]
    assert rows["outer"]["clock"] == "steps" and rows["outer"]["ticks"] == [2, 4, 6]
    png = tmp_path / "timeline.png"
    result = run("schedule", spec, "--tokens", "64", "--plot", str(png))
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("cms_fast"))
    assert "15, 31, 47, 63" in line and ("." * 15 + "|") * 4 in line  # one character a token
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run("schedule", str(tmp_path / "missing.yaml")).exit_code == 2


def test_graph_mermaid():
    result = run("graph", HOPE, "--format", "mermaid")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("flowchart TB")
    groups = ordered_levels(load_spec(HOPE))
    assert out.count("subgraph L") == len(groups) == out.count("\n  end\n")
    for order, group in enumerate(groups):  # one subgraph per ordered level, fastest first
        body = out.split(f"subgraph L{order}[")[1].split("\n  end\n")[0]
        assert [line.split("[")[0].strip() for line in body.splitlines()[1:]] == [f"n_{n}" for n in group]
    for name in ("mem_k", "mem_v", "mem_lr", "mem_alpha", "memory", "cms_fast", "cms_mid", "cms_slow", "outer"):
        assert f'n_{name}["{name}<br/>' in out
    assert "n_mem_k -.->|generation| n_memory" in out  # memories are read before their write
    assert "n_outer -.->|initialization| n_cms_slow" in out


def test_graph_dot_and_overrides():
    result = run("graph", HOPE, "-f", "dot", "levels.cms_fast.period=8")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith('digraph "hope" {')
    assert out.count("subgraph cluster_L") == len(ordered_levels(load_spec(HOPE)))
    assert '"cms_fast" [label="cms_fast\\nmlp"];' in out
    assert 'label="level 1 · every 8 tokens";' in out  # the override took effect
    assert '"outer" -> "memory" [label="initialization", style=dotted];' in out
    assert run("graph", HOPE, "-f", "svg").exit_code != 0


def test_schema_stdout_and_file(tmp_path: Path):
    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["title"] == "nlc spec"
    target = tmp_path / "s.json"
    assert run("schema", "-o", str(target)).exit_code == 0
    assert json.loads(target.read_text()) == schema


def test_ls_and_cp(tmp_path: Path):
    result = run("ls")
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["hope"].startswith("Self-modifying Titans")
    assert not any(name.startswith("invalid/") for name in lines)
    assert run("cp", "hope", str(tmp_path)).exit_code == 0
    copied = tmp_path / "hope.yaml"
    from nlc.cli.cp import portable_text

    assert copied.read_text() == portable_text(Path(HOPE).resolve(), copied)
    again = run("cp", "hope.yaml", str(copied))
    assert again.exit_code == 2 and "--force" in again.stderr
    assert run("cp", "hope", str(copied), "--force").exit_code == 0
    typo = run("cp", "hop", str(tmp_path / "x.yaml"))
    assert typo.exit_code == 2 and "did you mean 'hope'" in typo.stderr
    assert run("validate", str(copied)).exit_code == 0


def test_version_and_help():
    import nlc

    assert run("--version").stdout.strip() == f"nlc {nlc.__version__}"
    for verb in ("validate", "show", "graph", "schema", "ls", "cp"):
        assert verb in run("--help").stdout


def test_verbs_do_not_import_torch(tmp_path: Path):
    code = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from nlc.cli.app import app
        runner = CliRunner()
        spec = {HOPE!r}
        for args in (["validate", spec], ["show", spec], ["graph", spec], ["graph", spec, "-f", "mermaid"],
                     ["graph", spec, "-f", "dot"], ["schema"], ["ls"], ["cp", "hope", {str(tmp_path)!r}],
                     ["validate", {str(tmp_path / 'missing.yaml')!r}]):
            runner.invoke(app, args)
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
        print("no torch")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "no torch" in result.stdout


def test_python_dash_m_and_console_script():
    result = subprocess.run([sys.executable, "-m", "nlc", "validate", HOPE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK ")
    script = Path(sys.executable).with_name("nlc")
    if script.exists():
        result = subprocess.run([str(script), "graph", HOPE, "-f", "mermaid"], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.startswith("flowchart TB")


# --------------------------------------------------------------------------- JSON Schema
def _schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_schema_file_in_sync():
    from nlc.cli.schema import build_schema
    from nlc.spec import Spec

    assert _schema() == build_schema(), "docs/nlc.schema.json is stale: run nlc schema -o docs/nlc.schema.json"
    generated = Spec.model_json_schema()
    shipped = _schema()
    assert set(shipped["$defs"]) == set(generated["$defs"])
    changed = {"Block", "ModelSpec"}  # bare layer names; model.blocks may come from a base
    for name, definition in generated["$defs"].items():
        if name not in changed:
            assert shipped["$defs"][name] == definition, name
    # extends: the file form only; levels: an extending file may give a level null (removes the base's)
    assert {k: v for k, v in shipped["properties"].items() if k not in ("extends", "levels")} == \
        {k: v for k, v in generated["properties"].items() if k != "levels"}
    levels = shipped["properties"]["levels"]["additionalProperties"]["anyOf"]
    assert levels[0] == generated["properties"]["levels"]["additionalProperties"] and levels[1]["type"] == "null"


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    cls = jsonschema.validators.validator_for(_schema())
    cls.check_schema(_schema())
    return cls(_schema())


def _raw(path: Path | str) -> dict:
    from nlc.spec.source import parse_yaml

    return parse_yaml(Path(path).read_text(encoding="utf-8"), str(path)).data


def test_schema_accepts_bundled_spec_files():
    validator = _validator()
    assert list(validator.iter_errors(_raw(HOPE))) == []
    for name, path in bundled_specs().items():  # files as written: extends, bare layer names
        assert [e.message for e in validator.iter_errors(_raw(path))] == [], name


def test_schema_rejects_unknown_key_and_wrong_type():
    validator = _validator()
    data = _raw(HOPE)
    typo = json.loads(json.dumps(data))
    typo["levels"]["memory"]["updat"] = typo["levels"]["memory"].pop("update")
    assert not validator.is_valid(typo)
    top = dict(data, levelz={})
    assert any("levelz" in e.message for e in validator.iter_errors(top))
    wrong = json.loads(json.dumps(data))
    wrong["train"]["steps"] = "three hundred"
    errors = list(validator.iter_errors(wrong))
    assert [list(e.absolute_path) for e in errors] == [["train", "steps"]]
    wrong_width = dict(data, model=dict(data["model"], width="wide"))
    assert not validator.is_valid(wrong_width)
    assert not validator.is_valid({k: v for k, v in data.items() if k != "nlc"})  # required without extends
