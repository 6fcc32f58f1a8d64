"""Exact resume and reproducibility: same spec + seed -> same numbers; a run resumed from any
checkpoint, or killed with SIGKILL and resumed, ends with bit-identical weights."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import nlc
from nlc.training import read_meta
from nlc.training.metrics import read_metrics

from .conftest import subprocess_env

TINY = Path(__file__).parent / "tiny.yaml"


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoint" / "model.safetensors")


def _assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def _train_steps(records: list[dict]) -> list[int]:
    return [r["step"] for r in records if r["kind"] == "train"]


def test_same_spec_and_seed_give_the_same_numbers(tmp_path, text_data):
    runs = [nlc.train(TINY, data=text_data, out=tmp_path / name, steps=4, progress=False, seed=seed)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    numbers = [[(r["kind"], r["step"], r["loss"], r["bpb"]) for r in run.metrics] for run in runs]
    assert numbers[0] == numbers[1]
    assert numbers[0] != numbers[2]  # the seed matters (initialisation and batches)
    _assert_bit_identical(_weights(tmp_path / "a"), _weights(tmp_path / "b"))


def test_resume_mid_accumulation_is_bit_identical(tmp_path, text_data):
    # step 3 is odd: `outer` (period {steps: 2}) holds a half-accumulated gradient in the checkpoint
    full = nlc.train(TINY, data=text_data, out=tmp_path / "full", steps=6, progress=False, checkpoint_every=1,
                     keep_checkpoints=True)
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full" / "checkpoint-3", part / "checkpoint")
    shutil.copy(tmp_path / "full" / "metrics.jsonl", part / "metrics.jsonl")  # holds steps 4-6: cut on resume
    resumed = nlc.train(TINY, data=text_data, out=part, steps=6, progress=False, resume=True)
    _assert_bit_identical(_weights(tmp_path / "full"), _weights(part))
    assert _train_steps(read_metrics(part / "metrics.jsonl")) == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed.metrics] == [r["loss"] for r in full.metrics]


def test_sigkill_at_any_step_then_resume_ends_bit_identical(tmp_path):
    steps, kill_after = 12, 3
    reference = nlc.train(TINY, out=tmp_path / "ref", steps=steps, progress=False)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "nlc", "train", str(TINY), "--out", str(out), "--steps", str(steps),
               "--checkpoint-every", "1", "--no-progress", "--sample-tokens", "0"]
    victim = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    killed_at = None
    while time.monotonic() < deadline and victim.poll() is None:
        try:
            killed_at = read_meta(out)["step"]
        except (nlc.NLCError, json.JSONDecodeError, KeyError, OSError):
            killed_at = None
        if killed_at is not None and killed_at >= kill_after:
            os.kill(victim.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert victim.wait(timeout=60) == -signal.SIGKILL, victim.stderr.read().decode()[-2000:]
    assert kill_after <= read_meta(out)["step"] < steps  # killed mid-run, at or after `kill_after`

    resumed = nlc.train(TINY, out=out, steps=steps, progress=False, resume=True)  # as `nlc train --resume`
    _assert_bit_identical(_weights(tmp_path / "ref"), _weights(out))
    assert _train_steps(read_metrics(out / "metrics.jsonl")) == list(range(1, steps + 1))  # no step twice
    assert resumed.val_bpb == reference.val_bpb
