"""Checkpoints: atomic writes, crash recovery, rebuilding the model, refusing a foreign spec."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nlc
from nlc.training import CheckpointError, load_checkpoint, read_meta, save_checkpoint, spec_hash
from nlc.training import checkpoint as ckpt

TINY = Path(__file__).parent / "tiny.yaml"


def _save(out, model, step):
    return save_checkpoint(out, model, {"opt/x": torch.full((2,), float(step))}, {"step": step})


def test_a_failing_write_never_replaces_the_last_checkpoint(tmp_path, monkeypatch):
    model = nlc.compile(TINY)
    _save(tmp_path, model, 1)
    before = {f.name: f.read_bytes() for f in (tmp_path / "checkpoint").iterdir()}

    def crash(folder, meta):  # the model and optimizer files are written, then the sidecar fails
        (folder / "meta.json").write_text('{"format": 1, "st')
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "write_meta", crash)
    with torch.no_grad():
        model.embed.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, model, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temporary folder left
    assert {f.name: f.read_bytes() for f in (tmp_path / "checkpoint").iterdir()} == before
    assert read_meta(tmp_path)["step"] == 1


def test_a_crash_between_the_renames_is_recovered(tmp_path):
    model = nlc.compile(TINY)
    _save(tmp_path, model, 1)
    _save(tmp_path, model, 2)
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")  # killed after moving the old one aside
    (tmp_path / ".checkpoint.tmp-x").mkdir()  # and a half-written next one
    assert read_meta(tmp_path)["step"] == 2  # readers find it and change nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.old", ".checkpoint.tmp-x"]
    ckpt.recover(tmp_path)  # what the next run does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert read_meta(tmp_path)["step"] == 2


def test_keep_writes_step_snapshots(tmp_path):
    model = nlc.compile(TINY)
    for step in (1, 2):
        save_checkpoint(tmp_path, model, {}, {"step": step}, keep=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint-1", "checkpoint-2"]
    assert read_meta(tmp_path / "checkpoint-1")["step"] == 1 and read_meta(tmp_path)["step"] == 2


def test_load_checkpoint_rebuilds_the_trained_model(tmp_path, text_data):
    result = nlc.train(TINY, data=text_data, out=tmp_path, steps=2, progress=False)
    model, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 2 and meta["spec_sha256"] == spec_hash(result.model.spec)
    assert meta["data"] == {"name": "design-doc", "sha256": None}
    assert set(meta["versions"]) == {"nlc", "torch", "python", "safetensors"}
    trained = result.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())
    tokens = text_data.val[:33].long()[None]
    with torch.no_grad():
        a, _ = result.model.eval()(tokens, targets=tokens)
        b, _ = model.eval()(tokens, targets=tokens)
    assert torch.equal(a, b)


def test_resume_with_another_spec_is_refused_naming_both_hashes(tmp_path, text_data):
    nlc.train(TINY, data=text_data, out=tmp_path, steps=2, progress=False)
    stored = read_meta(tmp_path)["spec_sha256"]
    with pytest.raises(CheckpointError) as err:
        nlc.train(TINY, data=text_data, out=tmp_path, steps=2, overrides=["model.width=64"], resume=True,
                  progress=False)
    other = spec_hash(nlc.load_spec(TINY, ["model.width=64", "train.steps=2", "train.data=design-doc"]))
    message = str(err.value)
    assert stored in message and other in message and "--out" in message
    assert "-  width: 32" in message and "+  width: 64" in message  # the diff of the two specs


def test_an_existing_checkpoint_is_not_overwritten_without_resume(tmp_path, text_data):
    nlc.train(TINY, data=text_data, out=tmp_path, steps=1, progress=False)
    with pytest.raises(CheckpointError, match="already holds a checkpoint .step 1.*--resume"):
        nlc.train(TINY, data=text_data, out=tmp_path, steps=1, progress=False)


def test_sidecar_is_json_and_nothing_is_pickled(tmp_path, text_data):
    nlc.train(TINY, data=text_data, out=tmp_path, steps=1, progress=False)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["meta.json", "model.safetensors", "optimizer.safetensors", "spec.yaml"]
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert meta["schedule"] == {"updates": {"fast": 1, "outer": 0}, "accumulated_steps": {"fast": 0, "outer": 1},
                                "next_lr": {"fast": pytest.approx(3e-3), "outer": pytest.approx(1.5e-3)}}
    optimizer = ckpt.load_optimizer_state(tmp_path)
    assert "grad/embed.weight" in optimizer  # outer's gradient is still accumulating after step 1
    assert "opt/b0_r0_cms.mixer.init.w_up/exp_avg" in optimizer and "grad/b0_r0_cms.mixer.init.w_up" not in optimizer
