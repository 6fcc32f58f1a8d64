"""Language-model runs of the comparison: one ``nlc.train`` run per (model, lr, seed).

Every run trains the bundled spec with its parameter-matching overrides and the plan's
shared settings (:meth:`.plan.BenchPlan.train_overrides`) on the same corpus; its record
keeps the validation bits-per-byte curve (``nlc.train``'s ``val`` records: fixed windows
of the validation split), the final validation bpb, the median training throughput and
the wall time. The learning rate of a model is the sweep value with the lowest final
validation bpb at the first seed (ties: the smaller lr); the other seeds reuse it.
"""
from __future__ import annotations

import math
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..training import train
from .params import ParamMatch
from .plan import BenchModel, BenchPlan


@dataclass
class LMRun:
    """One training run: ``curve`` holds ``[step, tokens seen, val bpb]`` rows."""

    lr: float
    seed: int
    val_bpb: float
    curve: list[list[float]] = field(default_factory=list)
    tokens_per_s: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def run_dir(runs: Path, model: BenchModel, kind: str, lr: float, seed: int) -> Path:
    """The folder of one run: ``runs/<spec stem>/<kind>-lr<lr>-s<seed>``."""
    return runs / Path(model.spec).stem / f"{kind}-lr{lr:g}-s{seed}"


def fresh(folder: Path) -> Path:
    """``folder``, emptied: a unit only trains when it has no saved result under its key
    (:mod:`.jobs`), so whatever a run folder holds is left by another key or a killed run."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def train_lm(model: BenchModel, match: ParamMatch, plan: BenchPlan, lr: float, seed: int, corpus,
             runs: Path, kind: str = "lm", extra: tuple[str, ...] = ()) -> tuple[LMRun, nn.Module]:
    """Train ``model`` at ``lr`` and ``seed`` on ``corpus`` (``extra`` overrides on top of
    the match and the plan's; the run folder named by ``kind``); its record and the model."""
    start = time.perf_counter()
    result = train(model.path, data=corpus, out=fresh(run_dir(runs, model, kind, lr, seed)), steps=plan.steps,
                   overrides=[*match.overrides, *plan.train_overrides(lr), *extra], seed=seed, progress=False,
                   check_finite=False)  # a diverged run is a result: its bpb is reported as nan
    per_step = plan.batch * plan.seq_len
    curve = [[r["step"], r["step"] * per_step, r["bpb"]] for r in result.metrics if r["kind"] == "val"]
    speeds = [r["tokens_per_s"] for r in result.metrics if r["kind"] == "train"]
    record = LMRun(lr=lr, seed=seed, val_bpb=float(result.val_bpb), curve=curve,
                   tokens_per_s=statistics.median(speeds) if speeds else 0.0,
                   seconds=time.perf_counter() - start)
    return record, result.model


def best_lr(sweep: list[LMRun]) -> float:
    """The sweep's lr with the lowest final validation bpb (ties: the smaller lr; a diverged
    run, bpb not finite, loses to every finite one)."""
    return min(sweep, key=lambda run: (run.val_bpb if math.isfinite(run.val_bpb) else math.inf, run.lr)).lr


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of a compiled model (the count the report prints)."""
    return sum(p.numel() for p in module.parameters())
