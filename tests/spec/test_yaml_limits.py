"""The spec loader bounds untrusted YAML before it costs anything (nlc.limits): file size
(checked before reading), nesting depth, and node count with aliases counted as expanded.
Each refusal is one located issue with a hint; raising the limit lets a large file load."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from nlc import limits
from nlc.errors import SpecError
from nlc.spec import spec_to_yaml
from nlc.graph.validate import load_spec
from nlc.spec.source import SpecInputError, read_spec

ROOT = Path(__file__).resolve().parents[2]
HOPE = ROOT / "specs" / "hope.yaml"


def _refusal(source, **changes) -> tuple[str, float]:
    """The one issue a source is refused with, and the seconds it took."""
    start = time.perf_counter()
    with limits.raised(**changes), pytest.raises(SpecInputError) as err:
        read_spec(source)
    seconds = time.perf_counter() - start
    assert len(err.value.issues) == 1
    return err.value.issues[0].format(), seconds


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("nlc: 1\n" + "#" * 94)  # 101 bytes
    monkeypatch.setattr(Path, "open", lambda *a, **k: pytest.fail("the file was opened"))
    message, _ = _refusal(path, spec_bytes=100)
    assert message == (f"{path}: <root>: the spec file is 101 bytes, over the limit of 100 "
                       "(raise it with nlc --max-spec-bytes N)")


def test_yaml_text_over_the_limit_is_refused():
    message, _ = _refusal("nlc: 1\nname: " + "x" * 200 + "\n", spec_bytes=100)
    assert message.startswith("<text>: <root>: the spec is 214 bytes, over the limit of 100 (raise it with")


def test_raising_the_limit_lets_a_large_legitimate_file_load(tmp_path):
    path = tmp_path / "padded.yaml"
    text = HOPE.read_text(encoding="utf-8").replace("extends: base/small.yaml",
                                                    f"extends: {ROOT / 'nlc' / 'bundled' / 'base' / 'small.yaml'}")
    path.write_text(text + "".join(f"# padding line {i}\n" for i in range(200)))
    size = path.stat().st_size
    message, _ = _refusal(path, spec_bytes=size - 1)
    assert f"the spec file is {size:,} bytes, over the limit of {size - 1:,}" in message
    with limits.raised(spec_bytes=size):
        assert spec_to_yaml(load_spec(path)) == spec_to_yaml(load_spec(HOPE))


def test_deep_nesting_is_refused_at_its_line():
    text = "nlc: 1\nlevels:\n  a: " + "[" * 200 + "]" * 200 + "\n"
    message, seconds = _refusal(text)
    assert message == ("<text>:3:68: <root>: the YAML is nested deeper than 64 levels "
                       "(a spec needs a few levels; flatten it)")
    assert seconds < 1.0


def test_millions_of_keys_are_refused_in_well_under_a_second(tmp_path):
    path = tmp_path / "keys.yaml"
    with path.open("w") as out:  # 50 MB, about 3.3 million keys
        for block in range(50):
            out.write("".join(f"key_{block}_{i}: {i}\n" for i in range(66_000)))
    assert path.stat().st_size > 50 * 10**6
    message, seconds = _refusal(path)
    assert message == (f"{path}: <root>: the spec file is {path.stat().st_size:,} bytes, over the limit of "
                       f"{limits.current().spec_bytes:,} (raise it with nlc --max-spec-bytes N)")
    assert seconds < 0.2
    # under a raised byte limit, the node limit stops it after yaml_nodes nodes, not 3.3 million
    message, seconds = _refusal(path, spec_bytes=10**9)
    assert message.startswith(f"{path}:50000:14:")  # node 100,001: the value of the 50,000th key
    assert message.endswith("<root>: the YAML has more than 100,000 nodes (aliases counted as expanded) "
                            "(a spec has a few hundred; raise it with nlc --max-spec-bytes N)")
    assert seconds < 3.0  # libyaml's events over the first 100,000 nodes; nothing composed


def test_billion_laughs_is_refused_without_expanding():
    rows = ["lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, 10)]
    message, seconds = _refusal("\n".join(["nlc: 1", *rows]) + "\n")
    # lol0..lol3 expand to 11 + 111 + 1,111 + 11,111 nodes; the 9th alias of lol4 passes 100,000
    assert message.startswith("<text>:6:")
    assert "the YAML has more than 100,000 nodes (aliases counted as expanded)" in message
    assert seconds < 0.1


def test_aliases_that_only_nest_when_expanded_are_refused():
    rows = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    message, _ = _refusal("\n".join(rows) + "\n")
    assert "nested deeper than 64 levels" in message and message.startswith("<text>:1:")


def test_an_override_value_over_the_limits_is_a_bad_value():
    with pytest.raises(SpecError) as err:
        load_spec(HOPE, ["model.width=" + "[" * 100 + "]" * 100])
    assert ("<override 1: model.width=" in str(err.value)
            and "cannot parse the value: the YAML is nested deeper than 64 levels" in str(err.value))


def test_extends_that_fans_out_is_refused_before_reading_thousands_of_files(tmp_path):
    """A list of 60 repeated parents, twice nested, used to read 3,600 files (one more level:
    216,000); one load now reads at most EXTENDS_FILES files."""
    from nlc.spec.source import EXTENDS_FILES, SpecInputError

    (tmp_path / "c.yaml").write_text("nlc: 1\n")
    (tmp_path / "b.yaml").write_text("nlc: 1\nextends: [" + ", ".join(["c.yaml"] * 60) + "]\n")
    (tmp_path / "a.yaml").write_text("nlc: 1\nextends: [" + ", ".join(["b.yaml"] * 60) + "]\n")
    with pytest.raises(SpecInputError) as err:
        load_spec(tmp_path / "a.yaml")
    assert f"'extends' reaches more than {EXTENDS_FILES} files" in str(err.value)
