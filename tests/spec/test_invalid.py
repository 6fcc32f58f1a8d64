"""Golden error messages: ``specs/invalid/NAME.yaml`` must yield exactly the lines of
``specs/invalid/NAME.txt`` (each ``Issue.format()``, errors and warnings, in file order).

To add a case, write the fixture and its golden text; it is picked up by the glob. To
regenerate a golden file after a deliberate message change, run from the repository root::

    python -c "import sys; from nlc import validate; p = sys.argv[1]; \
print(''.join(i.format() + '\\n' for i in validate(p)[1]), end='')" specs/invalid/NAME.yaml
"""
from __future__ import annotations

from pathlib import Path

import pytest

from nlc.spec import SpecError

from nlc.graph.validate import load_spec, validate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "specs" / "invalid").glob("*.yaml"))
IDS = [p.stem for p in FIXTURES]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # golden texts name files relative to the repository root


def test_fixtures_exist():
    assert len(FIXTURES) >= 20
    for path in FIXTURES:
        assert path.with_suffix(".txt").is_file(), f"{_rel(path)} has no golden .txt"
    for golden in (ROOT / "specs" / "invalid").glob("*.txt"):
        assert golden.with_suffix(".yaml").is_file(), f"{_rel(golden)} has no fixture"


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_golden_text(path: Path):
    spec, issues = validate(_rel(path))  # never raises
    got = "".join(issue.format() + "\n" for issue in issues)
    assert got == path.with_suffix(".txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_is_invalid(path: Path):
    spec, issues = validate(_rel(path))
    errors = [i for i in issues if i.severity == "error"]
    assert spec is None and errors
    for issue in errors:  # every error says where it is
        assert issue.file == _rel(path) and issue.line is not None and issue.column is not None
    with pytest.raises(SpecError) as info:
        load_spec(_rel(path))
    assert info.value.issues == errors


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_starts_with_a_comment(path: Path):
    assert path.read_text(encoding="utf-8").startswith("# Invalid: ")


def test_python_tag_runs_nothing(monkeypatch):
    import os

    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    spec, issues = validate("specs/invalid/python_tag.yaml")
    assert spec is None and calls == []
