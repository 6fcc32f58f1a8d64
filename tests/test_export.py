"""``nlc export``: the folder loads with torch and nlc's runtime alone (its README's code, in a
fresh interpreter that never imports the compiler) and gives the same logits as nlc."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import nlc
from nlc.cli.app import app
from nlc.export import ExportError, export
from nlc.graph.validate import load_spec
from nlc.training import load_checkpoint, read_meta, spec_hash

from .test_runs import TINY, design_doc

TOKENS = (torch.arange(2 * 40) * 7 % 256).reshape(2, 40)

# Appended to the README's code in the subprocess: the logits, and which nlc modules it imported.
CHECK = """
import json, sys
from safetensors.torch import save_file
with torch.no_grad():
    logits, _ = model(torch.tensor(json.loads(sys.argv[1])))
save_file({"logits": logits.contiguous()}, sys.argv[2])
print(json.dumps(sorted(m for m in sys.modules if m.startswith("nlc"))))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    nlc.train(TINY, data=design_doc(), out=out, steps=2, progress=False)
    return out


@pytest.fixture(scope="module")
def exported(run) -> Path:
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(run.parent / "exported")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {run.parent / 'exported'}: model.py, model.safetensors, spec.yaml, README.md\n"
    return run.parent / "exported"


def test_the_folder_holds_the_generated_source_the_weights_and_a_valid_spec(run, exported):
    model, meta = load_checkpoint(run)
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "model.py", "model.safetensors", "spec.yaml"]
    assert (exported / "model.py").read_text() == model.source
    assert (exported / "model.safetensors").read_bytes() == (run / "checkpoint" / "model.safetensors").read_bytes()
    assert (exported / "spec.yaml").read_text() == meta["spec_yaml"]
    assert spec_hash(load_spec(exported / "spec.yaml")) == meta["spec_sha256"]  # self-contained, same spec
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_readme_code_loads_it_without_the_compiler_and_gives_nlc_s_logits(run, exported, tmp_path):
    readme = (exported / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert 'folder = Path("path/to/this/folder")' in code
    script = tmp_path / "load.py"
    script.write_text(code.replace("path/to/this/folder", str(exported)) + CHECK)
    done = subprocess.run([sys.executable, str(script), str(TOKENS.tolist()), str(tmp_path / "logits.safetensors")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout.splitlines()[-1]))
    assert "nlc.runtime" in imported
    assert not {m for m in imported if m.startswith(("nlc.compiler", "nlc.lower", "nlc.training"))}

    model, _ = load_checkpoint(run)
    with torch.no_grad():
        expected, _ = model.eval()(TOKENS)
    assert torch.equal(load_file(tmp_path / "logits.safetensors")["logits"], expected)  # tolerance 0 on CPU


def test_an_existing_folder_is_kept_unless_forced(run, exported):
    before = (exported / "model.py").read_bytes()
    (exported / "model.py").write_text("# edited")
    refused = CliRunner().invoke(app, ["export", str(run), "--out", str(exported)])
    assert refused.exit_code == 2
    assert refused.stderr == f"error: {exported}: already exists (use --force to replace it)\n"
    assert (exported / "model.py").read_text() == "# edited"
    forced = CliRunner().invoke(app, ["export", str(run), "--out", str(exported), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (exported / "model.py").read_bytes() == before
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]


def test_force_never_replaces_the_run_or_a_folder_that_is_no_export(run, tmp_path):
    """--out RUN --force used to replace the run folder itself (metrics, checkpoint, all)."""
    for out in (run, run.parent):
        refused = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--force"])
        assert refused.exit_code == 2
        assert "holds or lies inside the checkpoint being exported" in refused.stderr
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    refused = CliRunner().invoke(app, ["export", str(run), "--out", str(other), "--force"])
    assert refused.exit_code == 2 and "holds files that no export writes" in refused.stderr
    assert (other / "thesis.tex").read_text() == "keep me"
    assert (run / "checkpoint" / "meta.json").exists() or (run / "meta.json").exists()


def test_a_checkpoint_saved_during_the_export_leaves_nothing_behind(run, tmp_path, monkeypatch):
    import nlc.export as export_module

    monkeypatch.setattr(export_module, "_saved_step", lambda file: "99")
    with pytest.raises(ExportError, match=r"saved a new checkpoint while it was exported \(step 2, then 99\)"):
        export(run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_or_damaged_run_exits_2(run, tmp_path):
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert missing.exit_code == 2 and missing.stderr.startswith(f"error: no checkpoint at {tmp_path / 'nope'}")
    damaged = tmp_path / "damaged" / "checkpoint"
    damaged.mkdir(parents=True)
    for file in (run / "checkpoint").iterdir():
        damaged.joinpath(file.name).write_bytes(file.read_bytes())
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    result = CliRunner().invoke(app, ["export", str(damaged.parent), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {weights}: truncated (its tensors end at byte")
    assert read_meta(damaged)["step"] == 2 and not (tmp_path / "out").exists()
