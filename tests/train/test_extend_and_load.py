"""Continuing a run to more steps, the spec file beside each checkpoint, and ``nlc.load``.

A resume may change ``train.steps`` and ``train.eval_every`` (the budget): the run goes on
from its checkpoint with the lr schedules recomputed for the new total. Anything else is
refused with exit 2 and the diff of what differs. Every checkpoint folder holds
``spec.yaml``, the run's resolved spec, which validates and trains. ``nlc.load`` turns a
run folder, a checkpoint folder or a bundled name into an eval-mode model.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import nlc
from nlc.cli.app import app
from nlc.spec.load import bundled_models
from nlc.status import BAD_INPUT
from nlc.spec.source import SpecInputError
from nlc.training import load_checkpoint, read_meta, spec_hash
from nlc.training.metrics import read_metrics

TINY = Path(__file__).parent / "tiny.yaml"
CONSTANT = ["levels.fast.schedule=constant", "levels.outer.schedule=constant"]


def _cli_train(*args: str):
    return CliRunner().invoke(app, ["train", *map(str, args), "--no-progress", "--sample-tokens", "0"])


def _steps(records: list[dict], kind: str) -> list[int]:
    return [r["step"] for r in records if r["kind"] == kind]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoint" / "model.safetensors")


# -- extending a run ---------------------------------------------------------------------
def test_the_readme_resume_command_extends_a_run_and_its_metrics_continue(tmp_path):
    run = tmp_path / "run"
    assert _cli_train(TINY, "train.steps=2", "--out", run).exit_code == 0
    first = read_metrics(run / "metrics.jsonl")
    result = _cli_train(TINY, "train.steps=4", "--out", run, "--resume")  # as README: nlc train ... --resume
    assert result.exit_code == 0, result.output
    records = read_metrics(run / "metrics.jsonl")
    assert records[:len(first)] == first  # steps 1-2 kept as they were
    assert _steps(records, "train") == [1, 2, 3, 4] and _steps(records, "val") == [2, 4]
    assert records[-1]["elapsed"] > first[-1]["elapsed"]  # the clock continues too
    meta = read_meta(run)
    assert (meta["step"], meta["steps"]) == (4, 4)
    assert "steps: 4" in meta["spec_yaml"] and spec_hash(nlc.load_spec(run / "checkpoint" / "spec.yaml")) == \
        meta["spec_sha256"]


def test_extending_recomputes_the_lr_schedule_for_the_new_total(tmp_path, text_data):
    cosine = ["levels.fast.warmup=0"]  # fast's cosine lr then depends on the run's total from step 1
    short = nlc.train(TINY, data=text_data, out=tmp_path / "ext", steps=2, overrides=cosine, progress=False)
    extended = nlc.train(TINY, data=text_data, out=tmp_path / "ext", steps=4, overrides=cosine, progress=False,
                         resume=True)
    fresh = nlc.train(TINY, data=text_data, out=tmp_path / "fresh", steps=4, overrides=cosine, progress=False)
    lr = {name: {r["step"]: r["lr"]["fast"] for r in run.metrics if r["kind"] == "train"}
          for name, run in (("short", short), ("extended", extended), ("fresh", fresh))}
    assert lr["extended"][2] == lr["short"][2] == pytest.approx(3e-3 * 0.5)  # cosine of a 2-step run, halfway
    assert lr["fresh"][2] == pytest.approx(3e-3 * (1 + 2 ** -0.5) / 2)  # the 4-step run is a quarter through
    assert [lr["extended"][s] for s in (3, 4)] == [lr["fresh"][s] for s in (3, 4)]  # continued on the new curve
    assert not torch.equal(_weights(tmp_path / "ext")["embed.weight"], _weights(tmp_path / "fresh")["embed.weight"])


def test_extending_a_constant_schedule_equals_the_longer_run_bit_for_bit(tmp_path, text_data):
    for out, steps, resume in (("ext", 2, False), ("ext", 4, True), ("fresh", 4, False)):
        nlc.train(TINY, data=text_data, out=tmp_path / out, steps=steps, overrides=CONSTANT, progress=False,
                  resume=resume)
    ext, fresh = _weights(tmp_path / "ext"), _weights(tmp_path / "fresh")
    assert ext.keys() == fresh.keys() and all(torch.equal(ext[k], fresh[k]) for k in ext)


def test_the_validation_cadence_may_change_on_resume(tmp_path, text_data):
    nlc.train(TINY, data=text_data, out=tmp_path, steps=2, progress=False)
    nlc.train(TINY, data=text_data, out=tmp_path, steps=4, overrides=["train.eval_every=1"], progress=False,
              resume=True)
    assert _steps(read_metrics(tmp_path / "metrics.jsonl"), "val") == [2, 3, 4]
    assert "eval_every: 1" in read_meta(tmp_path)["spec_yaml"]


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("two") / "run"
    result = _cli_train(TINY, "train.steps=2", "--out", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize(("change", "removed", "added"), [
    ("model.width=64", "-  width: 32", "+  width: 64"),
    ("train.batch=2", "-train: {data: shakespeare, steps: 4, batch: 4,",
     "+train: {data: shakespeare, steps: 4, batch: 2,"),
    ("train.eval_batches=1", "eval_every: 4, eval_batches: 2,", "eval_every: 4, eval_batches: 1,"),
    ("levels.fast.lr=1e-3", "lr: 0.003", "lr: 0.001"),
], ids=["model", "batch", "eval_batches", "optimizer_lr"])
def test_a_change_beyond_the_budget_is_refused_with_the_diff_and_exit_2(two_steps, change, removed, added):
    before = {f.name: f.read_bytes() for f in (two_steps / "checkpoint").iterdir()}
    result = _cli_train(TINY, change, "train.steps=4", "--out", two_steps, "--resume")
    assert result.exit_code == BAD_INPUT, result.output
    stored = read_meta(two_steps)["spec_sha256"]
    error = result.stderr[result.stderr.index("error: "):]  # after any warning about the spec given
    assert error.startswith(f"error: cannot resume {two_steps / 'checkpoint'}: it was trained with spec "
                            f"sha256 {stored}")
    assert "differs in more than a resume may change (train.steps, train.eval_every)" in error
    diff = [line for line in error.splitlines() if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert len(diff) == 2 and diff[0][0] == "-" and diff[1][0] == "+", diff  # one line, changed
    assert removed in diff[0] and added in diff[1]  # the budget's own change (steps 2 -> 4) is not shown
    assert {f.name: f.read_bytes() for f in (two_steps / "checkpoint").iterdir()} == before


def test_a_run_is_not_cut_back_to_fewer_steps(two_steps):
    result = _cli_train(TINY, "train.steps=1", "--out", two_steps, "--resume")
    assert result.exit_code == BAD_INPUT
    assert result.stderr.endswith(f"error: cannot resume {two_steps / 'checkpoint'}: it is at step 2, past "
                             "train.steps=1 (a run can be continued to more steps, not cut back: give "
                             "train.steps >= 2, or train into another --out)\n")


# -- spec.yaml in every checkpoint -------------------------------------------------------
def test_every_checkpoint_holds_its_spec_which_validates_and_trains(tmp_path):
    run = tmp_path / "run"
    nlc.train(TINY, out=run, steps=2, overrides=["train.eval_every=1"], progress=False, keep_checkpoints=True)
    folders = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert folders == ["checkpoint", "checkpoint-1", "checkpoint-2"]
    for folder in folders:
        spec_file = run / folder / "spec.yaml"
        text = spec_file.read_text()
        assert "extends" not in text and text.startswith("# The resolved spec of the run")
        spec, issues = nlc.validate(spec_file)
        assert spec is not None and not [i for i in issues if i.severity == "error"]
        assert spec_hash(spec) == read_meta(run / folder)["spec_sha256"]  # the very spec of the run
    again = _cli_train(run / "checkpoint" / "spec.yaml", "--steps", "1", "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert _steps(read_metrics(tmp_path / "again" / "metrics.jsonl"), "train") == [1]


# -- nlc.load ----------------------------------------------------------------------------
def _logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, targets=tokens)[0]


def test_load_gives_the_trained_model_in_eval_mode(tmp_path, text_data):
    result = nlc.train(TINY, data=text_data, out=tmp_path, steps=2, progress=False)
    tokens = text_data.val[:33].long()[None]
    expected = _logits(result.model.eval(), tokens)
    for source in (tmp_path, tmp_path / "checkpoint", str(tmp_path)):
        model = nlc.load(source)
        assert not model.training and model.spec == result.model.spec
        assert torch.equal(_logits(model, tokens), expected)
    assert not load_checkpoint(tmp_path)[0].training


def test_load_of_a_bundled_name_gives_fresh_weights_from_the_spec_seed():
    model = nlc.load("transformer")
    assert not model.training and model.spec.name == "transformer"
    fresh = nlc.compile(bundled_models()["transformer"]).state_dict()  # seeded by train.seed, like load
    assert all(torch.equal(fresh[k], v) for k, v in model.state_dict().items())


def test_load_of_nothing_known_is_one_line_with_a_hint():
    with pytest.raises(SpecInputError) as err:  # the rule of every verb (nlc.spec.load.spec_source)
        nlc.load("transfomer")
    assert "no such file or bundled spec 'transfomer'" in str(err.value)
    assert "did you mean 'transformer'?" in str(err.value)
    assert err.value.exit_status == BAD_INPUT


def test_a_loaded_model_trains_again_in_train_mode(tmp_path, text_data):
    nlc.train(TINY, data=text_data, out=tmp_path / "a", steps=1, progress=False)
    result = nlc.train(nlc.load(tmp_path / "a"), data=text_data, out=tmp_path / "b", steps=1, progress=False)
    assert result.model.training
