"""Every verb ends with the status of nlc.status: 1 for an invalid spec or a failed check
(a search trial), 2 for input that cannot be used or a wrong command line, 130 when
interrupted; and the global ``--max-spec-bytes`` raises the loader's limit."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nlc import limits
from nlc import status
from nlc.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
HOPE = str(ROOT / "specs" / "hope.yaml")


@pytest.fixture(autouse=True)
def _restore_limits():
    """``--max-spec-bytes`` changes the process's limits; each test starts from the defaults."""
    with limits.raised():
        yield


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_table_is_the_documented_one():
    assert (status.OK, status.FAILED, status.BAD_INPUT, status.NON_FINITE, status.INTERRUPTED) == (0, 1, 2, 3, 130)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert code in section


def test_an_invalid_spec_is_1_and_a_missing_file_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nlc: 1\nlevels: {}\nmodel: {widht: 3}\n")
    invalid = run("validate", str(bad))
    assert invalid.exit_code == status.FAILED and "widht" in invalid.stderr
    missing = run("show", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == status.BAD_INPUT
    assert missing.stderr == f"{tmp_path / 'nope.yaml'}: <root>: no such spec file: {tmp_path / 'nope.yaml'} (nlc ls lists the bundled specs)\n"
    assert run("graph", str(tmp_path)).exit_code == status.BAD_INPUT  # a directory
    both = run("validate", str(bad), str(tmp_path / "nope.yaml"))  # the worse of the two
    assert both.exit_code == status.BAD_INPUT and "FAILED " + str(bad) in both.stderr


def test_a_wrong_command_line_is_2():
    assert run("validate", HOPE, "--no-such-option").exit_code == status.BAD_INPUT
    assert run("show", HOPE, HOPE).exit_code == status.BAD_INPUT
    assert run("--max-spec-bytes", "0", "validate", HOPE).exit_code == status.BAD_INPUT
    assert run("cp", "no_such_spec", "x.yaml").exit_code == status.BAD_INPUT


def test_max_spec_bytes_refuses_then_admits_a_file(tmp_path):
    size = Path(HOPE).stat().st_size
    refused = run("--max-spec-bytes", str(size - 1), "validate", HOPE)
    assert refused.exit_code == status.BAD_INPUT
    assert (f"{HOPE}: <root>: the spec file is {size:,} bytes, over the limit of {size - 1:,} "
            "(raise it with nlc --max-spec-bytes N)") in refused.stderr
    admitted = run("--max-spec-bytes", str(10 * 2**20), "validate", HOPE)
    assert admitted.exit_code == status.OK, admitted.output
    assert limits.current().spec_bytes == 10 * 2**20
    assert limits.current().yaml_nodes == 250_000  # grows with the byte limit: 100,000 per 4 MiB


def test_max_model_bytes_sets_the_limit():
    assert run("--max-model-bytes", str(2**40), "validate", HOPE).exit_code == status.OK
    assert limits.current().model_bytes == 2**40


def test_ctrl_c_is_130(monkeypatch):
    import nlc.cli.validate as verb

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(verb, "validate_path", interrupted)
    assert run("validate", HOPE).exit_code == status.INTERRUPTED


def test_search_exits_1_and_counts_the_failed_trials(tmp_path, monkeypatch):
    import nlc.search.worker as worker
    from tests.search.tiny import write_tiny_search

    def fake_train(run, trial, text, *, single):  # trial 1 raises, the others "train"
        if trial.number == 1:
            raise RuntimeError("out of memory (simulated)")
        return {"val_bpb": 1.0 + trial.number, "tokens_per_s": 100.0, "params": 1000.0}

    monkeypatch.setattr(worker, "_train", fake_train)
    spec = write_tiny_search(tmp_path)
    result = run("search", str(spec), "--trials", "3", "--out", str(tmp_path / "run"))
    assert result.exit_code == status.FAILED, result.output
    assert "error: 1 of 3 trials failed (1 training error); their notes are in the report" in result.stderr
    assert "RuntimeError: out of memory (simulated)" in result.output  # the worker's note
    again = run("search", "report", str(tmp_path / "run"))  # a report only reports
    assert again.exit_code == status.OK, again.output
