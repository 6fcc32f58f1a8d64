"""Experiment trackers: every ``metrics.jsonl`` record, the spec and per-level norms.

A recording tracker checks the plumbing exactly (what the loop sends, in order); TensorBoard
and MLflow are then read back from the files they wrote, offline; W&B only constructs in
``disabled`` mode. A missing package or an unknown name fails before training with the pip
command of the extra.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import nlc
from nlc.spec.load import spec_to_yaml
from nlc.status import BAD_INPUT
from nlc.training import trackers
from nlc.training.metrics import read_metrics
from nlc.training.trackers import TrackerError, flatten, level_norms, open_trackers

TINY = Path(__file__).parent / "tiny.yaml"
RUN = dict(steps=4, overrides=["train.eval_every=2"], progress=False)


class Recorder:
    """A tracker that keeps what it is given."""

    opened: list["Recorder"] = []

    def __init__(self) -> None:
        self.started, self.records, self.closed = None, [], False
        Recorder.opened.append(self)

    def start(self, run_dir, spec_yaml, config):
        self.started = (Path(run_dir), spec_yaml, config)

    def log(self, record):
        self.records.append(record)

    def close(self):
        self.closed = True


@pytest.fixture
def recorder(monkeypatch):
    Recorder.opened = []
    monkeypatch.setitem(trackers.TRACKERS, "recorder", Recorder)
    return Recorder


def test_flatten_names_scalars_by_kind_and_field():
    step, scalars, texts = flatten({"kind": "train", "step": 3, "loss": 2.5, "bpb": 3.6,
                                    "lr": {"fast": 1e-3, "outer": 0}, "skipped": None, "flag": True})
    assert step == 3
    assert scalars == {"train/loss": 2.5, "train/bpb": 3.6, "train/lr/fast": 1e-3, "train/lr/outer": 0.0}
    assert texts == {}
    step, scalars, texts = flatten({"kind": "non_finite", "step": 7, "level": "cms", "position": 12, "message": "nan"})
    assert (step, scalars, texts) == (7, {"non_finite/position": 12.0},
                                      {"non_finite/level": "cms", "non_finite/message": "nan"})


def test_every_metrics_record_goes_to_the_tracker_with_the_spec_and_level_norms(tmp_path, text_data, recorder):
    out = tmp_path / "run"
    result = nlc.train(TINY, data=text_data, out=out, loggers=("recorder",), **RUN)
    (tracker,) = recorder.opened
    run_dir, spec_yaml, config = tracker.started
    assert run_dir == out and spec_yaml == spec_to_yaml(result.model.spec)
    assert (config["steps"], config["batch"], config["seq_len"], config["seed"], config["data"]) == \
        (4, 4, 32, 0, "design-doc")
    assert tracker.closed
    logged = [r for r in tracker.records if r["kind"] != "norm"]
    assert logged == read_metrics(out / "metrics.jsonl")  # the same records, in the same order
    norms = [r for r in tracker.records if r["kind"] == "norm"]
    assert [r["step"] for r in norms] == [2, 4]
    assert set(norms[-1]) == {"kind", "step", "attn", "cms", "embed_head"}  # every spec level with parameters
    # the last validation's norms are those of the trained weights
    expected = {level or "embed_head": torch.cat([p.detach().flatten() for p in params]).norm().item()
                for level, params in result.model.parameters_by_level().items()}
    for level, value in expected.items():
        assert norms[-1][level] == pytest.approx(value, rel=1e-5)
    # each norm record follows the val record of its step
    kinds = [(r["kind"], r["step"]) for r in tracker.records]
    assert kinds.index(("norm", 2)) == kinds.index(("val", 2)) + 1


def test_level_norms_of_a_model_match_torch():
    model = nlc.compile(TINY)
    norms = level_norms(model)
    assert set(norms) == {"attn", "cms", "embed_head"}
    head = torch.cat([p.detach().flatten() for p in model.parameters_by_level()[""]])
    assert norms["embed_head"] == pytest.approx(head.norm().item(), rel=1e-5)


def test_unknown_logger_and_missing_package_fail_before_training(tmp_path, text_data, monkeypatch):
    with pytest.raises(TrackerError, match="unknown logger 'tensorbord'; choose from: tensorboard, mlflow, wandb"
                       ) as err:
        nlc.train(TINY, data=text_data, out=tmp_path / "a", loggers=("tensorbord",), **RUN)
    assert err.value.exit_status == BAD_INPUT
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(TrackerError) as err:
        nlc.train(TINY, data=text_data, out=tmp_path / "b", loggers=("wandb",), **RUN)
    assert str(err.value) == "the wandb logger needs the wandb package: pip install 'nlc[wandb]'"
    assert not (tmp_path / "b").exists()  # nothing was started


def test_tensorboard_holds_the_metrics_spec_and_norms(tmp_path, text_data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    nlc.train(TINY, data=text_data, out=out, loggers=("tensorboard",), **RUN)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr/fast")] == pytest.approx([r["lr"]["fast"] for r in train])
    vals = [r for r in records if r["kind"] == "val"]
    assert [e.step for e in events.Scalars("val/bpb")] == [r["step"] for r in vals] == [2, 4]
    assert [e.value for e in events.Scalars("val/bpb")] == pytest.approx([r["bpb"] for r in vals], rel=1e-6)
    assert [e.step for e in events.Scalars("norm/cms")] == [2, 4]
    assert all(math.isfinite(e.value) and e.value > 0 for e in events.Scalars("norm/embed_head"))
    spec_text = events.Tensors("spec/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: tiny" in spec_text and "eval_every: 2" in spec_text


def test_mlflow_store_under_the_run_holds_metrics_params_and_spec(tmp_path, text_data, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    result = nlc.train(TINY, data=text_data, out=out, loggers=("mlflow",), **RUN)
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("nlc").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["steps"] == "4" and run.data.params["seq_len"] == "32"
    records = read_metrics(out / "metrics.jsonl")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    history = sorted(history, key=lambda m: m.step)
    train = [r for r in records if r["kind"] == "train"]
    assert [m.step for m in history] == [r["step"] for r in train] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in train])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "norm/attn")] == [2, 4]
    assert run.info.artifact_uri.startswith((out / "mlartifacts").resolve().as_uri())  # nothing outside the run
    spec = Path(client.download_artifacts(run.info.run_id, "spec.yaml", str(tmp_path))).read_text()
    assert spec == spec_to_yaml(result.model.spec)


def test_wandb_constructs_and_logs_when_disabled(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (tracker,) = open_trackers(["wandb", "wandb"])  # a name given twice opens once
    tracker.start(tmp_path, "nlc: 1\n", {"steps": 4})
    tracker.log({"kind": "train", "step": 1, "loss": 2.0, "lr": {"fast": 1e-3}})
    tracker.close()
