"""Sampling a ``search:`` block: conditionals, dropped levels, invalid samples, bad paths."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hypothesis import given, strategies as st

from nlc.errors import SpecError
from nlc.search.space import SearchSpace, condition_holds
from nlc.search.worker import dry_run

ROOT = Path(__file__).resolve().parents[2]

CMS_SEARCH = """\
nlc: 1
extends: {base}
name: tiny_cms
levels:
  attn: {{type: attention}}
  cms_fast: &cms {{type: mlp, period: 8, objective: {{kind: task}}, update: {{rule: gd, lr: 1.0e-3}}}}
  cms_slow: {{<<: *cms, period: 16}}
model:
  width: 32
  heads: 2
  blocks: [{{layers: [attn, cms_fast, cms_slow]}}]
train: {{steps: 2, batch: 2, seq_len: 32, eval_every: 1, eval_batches: 1}}
search:
  trials: 4
  space:
    model.blocks.0.layers: {{choice: [[attn, cms_fast], [attn, cms_fast, cms_slow]]}}
    levels.cms_slow.period: {{choice: [16, 32]}}
    levels.attn.window: {{choice: [8, 16], when: {{levels.attn.rope: false}}}}
    levels.attn.rope: {{choice: [true, false]}}
    levels.outer.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
    model.heads: {{choice: [2, 3], when: {{levels.outer.lr: [1.0]}}}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(text.format(base=ROOT / "specs" / "base" / "small.yaml"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    return SearchSpace(_write(tmp_path_factory.mktemp("space"), CMS_SEARCH))


@given(seed=st.integers(0, 2**16))
def test_samples_respect_conditionals_and_validate(space: SearchSpace, seed: int):
    for sampled in dry_run(space, 3, seed=seed):
        values = sampled.values
        layers = values["model.blocks.0.layers"]
        assert 1e-4 <= values["levels.outer.lr"] <= 1e-2
        # the window exists only without rope; cms_slow's period only while cms_slow is used
        assert ("levels.attn.window" in values) == (values["levels.attn.rope"] is False)
        assert ("levels.cms_slow.period" in values) == ("cms_slow" in layers)
        assert sampled.dropped == (() if "cms_slow" in layers else ("cms_slow",))
        assert "model.heads" not in values  # lr is never 1.0
        assert sampled.valid, sampled.error
        assert set(sampled.spec.levels) == {"outer", *layers}
        assert sampled.spec.search is None
        if "levels.attn.window" in values:
            assert sampled.spec.levels["attn"].window == values["levels.attn.window"]


def test_sampling_asks_only_for_active_dimensions(space: SearchSpace):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"model.blocks.0.layers": '["attn", "cms_fast"]', "levels.attn.rope": True})
    trial = study.ask()
    sampled = space.sample(trial)
    assert sampled.values["model.blocks.0.layers"] == ["attn", "cms_fast"]
    assert set(trial.params) == {"model.blocks.0.layers", "levels.attn.rope", "levels.outer.lr"}
    assert "cms_slow" not in sampled.data["levels"] and sampled.spec.levels["attn"].rope is True


def test_invalid_sample_is_reported_not_raised(tmp_path: Path):
    text = CMS_SEARCH.replace("when: {{levels.outer.lr: [1.0]}}", "when: {{levels.attn.rope: true}}")
    space = SearchSpace(_write(tmp_path, text))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"levels.attn.rope": True, "model.heads": 3})
    sampled = space.sample(study.ask())
    assert not sampled.valid and sampled.spec is None
    assert "model.heads: 3 heads do not divide the width 32" in sampled.error
    assert "<override" in sampled.error  # the sampled value is named as its origin


@pytest.mark.parametrize("key, dim, message", [
    ("levels.atn.window", "{choice: [8]}", "no such path 'levels.atn' (did you mean 'attn'?)"),
    ("levels.attn.windw", "{choice: [8]}", "'windw' is not a field at 'levels.attn' (did you mean 'window'?)"),
    ("model.blocks.3.repeat", "{int: [1, 2]}", "no such path: 'model.blocks' is a list of 1 items"),
])
def test_bad_path_names_file_and_line(tmp_path: Path, key: str, dim: str, message: str):
    text = CMS_SEARCH.replace("    levels.outer.lr:", f"    {key}: {dim.replace('{', '{{').replace('}', '}}')}\n    levels.outer.lr:")
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        SearchSpace(path)
    line = text.splitlines().index(f"    {key}: {dim.replace('{', '{{').replace('}', '}}')}") + 1
    assert err.value.issues[0].format().startswith(f"{path}:{line}:5: search.space.{key}: {message}")


def test_unknown_when_path_and_cycle(tmp_path: Path):
    text = CMS_SEARCH.replace("levels.attn.rope: false", "levels.attn.ropes: false")
    with pytest.raises(SpecError, match="'when' names 'levels.attn.ropes'"):
        SearchSpace(_write(tmp_path, text))
    text = CMS_SEARCH.replace("levels.attn.rope: {{choice: [true, false]}}",
                              "levels.attn.rope: {{choice: [true, false], when: {{levels.attn.window: 8}}}}")
    with pytest.raises(SpecError, match="'when' conditions form a cycle"):
        SearchSpace(_write(tmp_path, text))


def test_spec_without_search_block():
    with pytest.raises(SpecError, match="the spec has no 'search:' block"):
        SearchSpace(ROOT / "specs" / "cms.yaml")


def test_condition_semantics():
    assert condition_holds(2, 2) and condition_holds(2, [1, 2]) and not condition_holds(3, [1, 2])
    assert condition_holds([1, 2], [1, 2]) and not condition_holds([1], [1, 2])


def test_bundled_example_samples_valid_specs():
    space = SearchSpace(ROOT / "specs" / "search" / "hope_cms.yaml")
    samples = dry_run(space, 6, seed=0)
    assert all(s.valid for s in samples), [s.error for s in samples]
    assert {len(s.values["model.blocks.0.layers"]) for s in samples} >= {3, 4}
