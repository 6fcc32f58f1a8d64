"""Every bundled spec (specs/*.yaml) validates, round-trips through YAML, and resolves
``extends: base/small.yaml``."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nlc.spec import Spec, load_raw, spec_to_yaml

from nlc.graph.validate import load_spec, validate
from nlc.spec.levels import OptimizerLevel

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
IDS = [p.stem for p in SPECS]
BASE = ROOT / "specs" / "base" / "small.yaml"


def _own_data(path: Path) -> dict:
    """The file's own YAML, without resolving ``extends`` (test helper, no anchors needed)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _same_spec(a: Spec, b: Spec) -> bool:
    """Field-by-field equality. ``Spec.__eq__`` also compares the private ``_raw``
    provenance (file/line marks), which differs between a file and its dump."""
    return type(a) is type(b) and a.__dict__ == b.__dict__


def test_there_are_bundled_specs():
    names = set(IDS)
    expected = {
        "transformer", "swa_transformer", "linear_attention", "deltanet", "gated_deltanet",
        "titans_lmm", "titans_mac", "titans_mag", "titans_mal", "samba", "cms",
        "cms_independent", "cms_nested", "hope", "hope_attention",
    }
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_validates_without_errors(path: Path):
    spec, issues = validate(path)
    errors = [i.format() for i in issues if i.severity == "error"]
    assert not errors, "\n".join(errors)
    assert spec is not None


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_validates_without_warnings(path: Path):
    # Bundled specs are clean; a deliberate warning must be added here with its reason.
    _, issues = validate(path)
    assert [i.format() for i in issues if i.severity == "warning"] == []


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_header_comments(path: Path):
    head = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in head[:15] if line.startswith("#")]
    assert head[0].startswith("# ") and len(head[0]) > 10, "first line names the architecture"
    assert any(line.startswith("# Run:") and f"specs/{path.name}" in line for line in comments)
    assert "# yaml-language-server: $schema=../docs/nlc.schema.json" in comments


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_round_trip(path: Path):
    first = load_spec(path)
    dumped = spec_to_yaml(first)
    second = load_spec(dumped)
    assert _same_spec(first, second)
    assert first.model_dump() == second.model_dump()
    assert spec_to_yaml(second) == dumped


@pytest.mark.parametrize("path", [p for p in SPECS if _own_data(p).get("extends") == "base/small.yaml"],
                         ids=lambda p: p.stem)
def test_extends_base_resolved(path: Path):
    own = _own_data(path)
    base = _own_data(BASE)
    # the file leaves these to the base ...
    assert "train" not in own and "outer" not in own.get("levels", {})
    assert "width" not in own.get("model", {})
    spec = load_spec(path)
    # ... and the resolved spec has them
    assert isinstance(spec.levels["outer"], OptimizerLevel)
    assert spec.levels["outer"].lr == base["levels"]["outer"]["lr"]
    assert (spec.model.width, spec.model.heads) == (128, 4)
    assert (spec.train.data, spec.train.steps, spec.train.batch, spec.train.seq_len, spec.train.seed) \
        == ("shakespeare", 300, 8, 256, 0)
    # maps deep-merge: the file's own levels sit beside the base's
    assert set(own["levels"]) | {"outer"} == set(spec.levels)
    # values from the base keep pointing at the base file
    mark = load_raw(path).mark(("levels", "outer", "lr"))
    assert mark is not None and Path(mark.file).resolve() == BASE.resolve()


def test_every_bundled_spec_but_hope_extends_the_base():
    # hope.yaml predates the base and spells out the same settings itself
    assert [p.stem for p in SPECS if "extends" not in _own_data(p)] == ["hope"]
    hope = load_spec(ROOT / "specs" / "hope.yaml")
    assert (hope.model.width, hope.model.heads, hope.train.steps) == (128, 4, 300)


def test_lists_replace_on_extends(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text("nlc: 1\nlevels: {attn: {type: attention}, outer: {type: optimizer}}\n"
                    "model: {blocks: [{layers: [attn, attn]}]}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nmodel: {width: 64, blocks: [{layers: [attn]}]}\n")
    spec = load_spec(child)
    assert len(spec.model.blocks[0].layers) == 1 and spec.model.width == 64


def test_hope_continual_is_hope_with_stream_cms_levels():
    """specs/hope_continual.yaml extends hope.yaml: the same model but for the CMS levels'
    lifetimes and the slowest period, which spans two training sequences."""
    hope, continual = load_spec(BASE.parent.parent / "hope.yaml"), load_spec(BASE.parent.parent / "hope_continual.yaml")
    changed = {name for name in hope.levels if hope.levels[name] != continual.levels[name]}
    assert changed == {"cms_fast", "cms_mid", "cms_slow"} and hope.model == continual.model
    assert {continual.levels[n].lifetime for n in changed} == {"stream"}
    assert continual.levels["cms_slow"].period.tokens == 2 * continual.train.seq_len


def test_hope_documents_is_hope_continual_with_document_cms_levels_on_many_documents():
    """specs/hope_documents.yaml: hope_continual's model with CMS levels living for a document,
    trained on a corpus of many documents (the Python documentation)."""
    continual, documents = (load_spec(BASE.parent.parent / f"{n}.yaml") for n in ("hope_continual", "hope_documents"))
    changed = {name for name in continual.levels if continual.levels[name] != documents.levels[name]}
    assert changed == {"cms_fast", "cms_mid", "cms_slow"} and continual.model == documents.model
    assert {documents.levels[n].lifetime for n in changed} == {"document"}
    assert documents.train.data == "pydocs"
