"""Data parallel: ``torchrun --nproc_per_node=2 -m nlc train`` (gloo on CPU) ends where a
single process training on the same global batches ends."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nlc
from nlc.training.distributed import DistributedError, World
from nlc.training.metrics import read_metrics

from .conftest import subprocess_env

TINY = Path(__file__).parent / "tiny.yaml"


@pytest.mark.slow  # three Python processes start torch: ~40 s on 2 shared cores
def test_two_processes_match_one(tmp_path):
    steps = 4
    single = nlc.train(TINY, out=tmp_path / "single", steps=steps, progress=False)
    out = tmp_path / "ddp"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "nlc", "train", str(TINY), "--out", str(out), "--steps", str(steps), "--no-progress",
                          "--sample-tokens", "0"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("validation bpb:") == 1  # only rank 0 reports
    ddp = load_file(out / "checkpoint" / "model.safetensors")
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # the logged loss is the global batch's (mean over ranks), step by step
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    expected = [r["loss"] for r in single.metrics if r["kind"] == "train"]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_each_rank_takes_its_own_rows_of_the_global_batch():
    rows = torch.arange(8)[:, None].expand(8, 3)
    assert World(rank=0, size=2).shard(rows)[:, 0].tolist() == [0, 1, 2, 3]
    assert World(rank=1, size=2).shard(rows)[:, 0].tolist() == [4, 5, 6, 7]
    assert torch.equal(World().shard(rows), rows)
    with pytest.raises(DistributedError, match="train.batch=6 does not split over 4 processes"):
        World(rank=0, size=4).local_batch(6)
