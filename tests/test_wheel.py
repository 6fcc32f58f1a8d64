"""The wheel ships every bundled spec: it is built from a copy of the source tree, unpacked
into a fresh virtual environment (which borrows this one's dependencies through a ``.pth``
file, so nothing is downloaded) and asked, from a folder outside the repository, to list
and validate its bundled specs. ``nlc/bundled`` is a link to ``specs/``: this is the test
that the package data globs in pyproject.toml follow it into every folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from nlc.graph.validate import validate
from nlc.spec.load import bundled_specs

ROOT = Path(__file__).resolve().parents[1]

REPORT = """
import json, sys
import nlc
from nlc.graph.validate import validate
from nlc.spec.load import bundled_specs
found = {name: sorted(i.path for i in validate(name)[1] if i.severity == "error") for name in bundled_specs()}
print(json.dumps({"nlc": nlc.__file__, "specs": found,
                  "files": {name: str(path) for name, path in bundled_specs().items()}}))
"""


def errors_by_name() -> dict[str, list[str]]:
    """The source tree's bundled specs and their error paths (``base/small`` has one: no blocks)."""
    return {name: sorted(i.path for i in validate(name)[1] if i.severity == "error") for name in bundled_specs()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the wheel (plus this venv's dependencies)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("nlc", "specs"):  # nlc/bundled stays a link to ../specs, as in the repository
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
    assert (source / "nlc" / "bundled").is_symlink()
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", str(source), "-w", str(work / "dist")],
                           capture_output=True, text=True, cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("nlc-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    # this venv's packages come after the wheel's; their .pth files (the editable install of
    # nlc among them) are not run, as the folder is added by a .pth line, not as a site dir
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "zz_deps.pth").write_text("\n".join(sorted(deps)) + "\n", encoding="utf-8")
    return python


def run_installed(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_the_wheel_ships_and_validates_every_bundled_spec(installed, tmp_path):
    result = run_installed(installed, "-c", REPORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    venv = installed.parent.parent
    assert Path(report["nlc"]).is_relative_to(venv)  # not the source tree
    assert all(Path(path).is_relative_to(venv) for path in report["files"].values())
    assert report["specs"] == errors_by_name()
    assert report["specs"]["base/small"] == ["model.blocks"]  # a base, not a model
    assert sum(not errors for errors in report["specs"].values()) == len(report["specs"]) - 1


def test_the_installed_cli_lists_and_reads_bundled_names(installed, tmp_path):
    listed = run_installed(installed, "-m", "nlc", "ls", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(bundled_specs())
    checked = run_installed(installed, "-m", "nlc", "validate", "search/hope_cms", "ablations/hope_no_cms",
                            cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[0].startswith("OK search/hope_cms: hope_cms_search")
    copied = run_installed(installed, "-m", "nlc", "cp", "search/hope_cms", "x.yaml", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    text = (tmp_path / "x.yaml").read_text(encoding="utf-8")
    assert "\nextends: hope\n" in text and "$schema=" not in text  # the wheel has no schema file to point at
    assert run_installed(installed, "-m", "nlc", "validate", "x.yaml", cwd=tmp_path).returncode == 0
