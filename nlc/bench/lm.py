"""Language-model runs of the comparison: one ``nlc.train`` run per (model, lr, seed, kind).

Every run trains the bundled spec with its parameter-matching overrides (:func:`match_for`)
and the plan's shared settings (:meth:`.plan.BenchPlan.train_overrides`) on the fit tokens
of Shakespeare (:mod:`.tune_split`), scored on the split its data names: the corpus
validation split for the reported runs, the tune split for the learning-rate grid. Its
record (:class:`LMRun`) keeps the validation bits-per-byte curve (``nlc.train``'s ``val``
records: the same fixed windows at every evaluation), the final bpb (NaN or inf when the
run diverged: a diverged run is a result, never dropped here), the median training
throughput and the compute seconds.

Resume: a run's folder (:func:`run_dir`) holds ``run_key.txt``, a digest of everything the
run depends on (the resolved spec, every override, steps, seed, data, device). A folder
with the same key is resumed from its last checkpoint (``nlc.train(resume=True)``:
checkpoints at every validation; a finished run is loaded, not retrained); a folder with
another key, or none, is emptied and the run starts afresh, so a changed setting never
continues a stale run.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..data import load_corpus
from ..evaluate.lm import evaluate_lm
from ..files import atomic_write_bytes
from ..subnormals import flush_subnormals
from ..training import train
from ..training.checkpoint import CheckpointError, read_meta
from .params import ParamMatch, match_params, spec_params
from .plan import MODELS, BenchModel, BenchPlan, TaskSettings, plan_for
from .stamps import spec_digest
from .tune_split import LMData, reported_data

KEY_FILE = "run_key.txt"


@dataclass
class LMRun:
    """One training run: ``curve`` holds ``[step, tokens seen, bpb]`` rows, scored on
    ``scored_on`` (``"val"``: the reported validation split; ``"tune"``: the grid's split).
    ``seconds``: training and validation compute, summed over resumed parts;
    ``resumed_at``: the step the run continued from (0: trained from the start)."""

    lr: float
    seed: int
    val_bpb: float
    curve: list[list[float]] = field(default_factory=list)
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    steps: int = 0
    tokens: int = 0
    scored_on: str = "val"
    resumed_at: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def target_params(plan: BenchPlan | TaskSettings) -> int:
    """The parameter count every model is matched to: Transformer++ at ``reference_width``."""
    return spec_params(MODELS[0].path, [f"model.heads={plan.heads}", f"model.width={plan.reference_width}"])


def match_for(model: BenchModel, plan: BenchPlan | TaskSettings, target: int) -> ParamMatch:
    """``model`` matched to ``target`` parameters at the plan's heads and tolerance."""
    return match_params(model.path, target, tolerance=plan.tolerance, overrides=[f"model.heads={plan.heads}"])


def run_dir(runs: Path, model: BenchModel, kind: str, lr: float, seed: int) -> Path:
    """The folder of one run: ``runs/<spec stem>/<kind>-lr<lr>-s<seed>``."""
    return runs / Path(model.spec).stem / f"{kind}-lr{lr:g}-s{seed}"


def fresh(folder: Path) -> Path:
    """``folder``, emptied (whatever it holds was left by another key or a killed run)."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def run_key(model: BenchModel, overrides: list[str], steps: int, seed: int, data: LMData, device: str) -> str:
    """The digest a run folder must carry to be resumed (module doc)."""
    text = json.dumps([model.spec, spec_digest(model), overrides, steps, seed, data.sha256, data.scored_on, device])
    return hashlib.sha256(text.encode()).hexdigest()


def _prepared(folder: Path, key: str) -> int:
    """Make ``folder`` ready for the run of ``key``: the step of its checkpoint when the folder
    is that run's and has one, else emptied and keyed (0: start afresh)."""
    try:
        same = (folder / KEY_FILE).read_text(encoding="utf-8") == key
    except OSError:
        same = False
    if same:
        try:
            return int(read_meta(folder)["step"])
        except CheckpointError:  # none written yet, or unreadable: start afresh
            pass
    fresh(folder).mkdir(parents=True)
    atomic_write_bytes(folder / KEY_FILE, key.encode("utf-8"))
    return 0


def train_lm(model: BenchModel, match: ParamMatch, plan: BenchPlan, lr: float, seed: int, data, runs: Path,
             kind: str = "lm", extra: tuple[str, ...] = ()) -> tuple[LMRun, nn.Module]:
    """Train ``model`` at ``lr`` and ``seed`` for ``plan.steps`` on ``data`` (an
    :class:`.tune_split.LMData`; a corpus is taken as its :func:`.tune_split.reported_data`),
    with ``extra`` overrides on top of the match and the plan's, in the folder named by
    ``kind``, resuming that folder when its key matches; the record and the model."""
    data = data if isinstance(data, LMData) else reported_data(data)
    overrides = [*match.overrides, *plan.train_overrides(lr), *extra]
    folder = run_dir(runs, model, kind, lr, seed)
    resumed_at = _prepared(folder, run_key(model, overrides, plan.steps, seed, data, plan.device))
    result = train(model.path, data=data, out=folder, steps=plan.steps, overrides=overrides, seed=seed,
                   progress=False, resume=True, device=plan.device,
                   check_finite=False)  # a diverged run is a result: its bpb is reported as nan
    per_step = plan.batch * plan.seq_len
    curve = [[r["step"], r["step"] * per_step, r["bpb"]] for r in result.metrics if r["kind"] == "val"]
    speeds = [r["tokens_per_s"] for r in result.metrics if r["kind"] == "train"]
    record = LMRun(lr=lr, seed=seed, val_bpb=float(result.val_bpb), curve=curve,
                   tokens_per_s=statistics.median(speeds) if speeds else 0.0,
                   seconds=result.metrics[-1]["elapsed"] if result.metrics else 0.0, steps=plan.steps,
                   tokens=plan.tokens_per_run, scored_on=data.scored_on, resumed_at=resumed_at)
    return record, result.model


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of a compiled model (the count the report prints)."""
    return sum(p.numel() for p in module.parameters())


def measure_rates(plan: BenchPlan, steps: int = 32, eval_batches: int = 8) -> dict[str, tuple[float, float]]:
    """Training and evaluation tokens per CPU second of this process, for every model of
    ``plan`` at its size. Training: the CPU time of an ``nlc.train`` call of ``steps + 4``
    steps minus that of one of 4 steps (model building, the first steps and the one-batch
    validation cancel out; one untimed call first pays the process's one-time costs);
    evaluation: ``eval_batches`` validation batches. CPU time, not wall time: on a machine
    shared with other work it is what one free core would do (set this process's threads to
    1 first)."""
    data = reported_data(load_corpus("shakespeare"))
    target = target_params(plan)
    rates = {}

    def cpu_seconds(model: BenchModel, match: ParamMatch, count: int, folder: Path) -> tuple[float, nn.Module]:
        short = replace(plan, steps=count, eval_every=count, eval_batches=1)
        clock = time.process_time()
        _, net = train_lm(model, match, short, plan.lrs[0], 0, data, folder, kind=f"rate{count}")
        return time.process_time() - clock, net

    with tempfile.TemporaryDirectory() as folder:
        first = plan.bench_models()[0]
        cpu_seconds(first, match_for(first, plan, target), 2, Path(folder))  # imports, first allocations
        for model in plan.bench_models():
            match = match_for(model, plan, target)
            base, _ = cpu_seconds(model, match, 4, Path(folder))
            longer, net = cpu_seconds(model, match, 4 + steps, Path(folder))
            trained = steps * plan.batch * plan.seq_len / (longer - base)
            clock = time.process_time()
            evaluate_lm(net, data.val, plan.batch, plan.seq_len, eval_batches, 0, check_finite=False)
            rates[model.label] = (trained, eval_batches * plan.batch * plan.seq_len / (time.process_time() - clock))
    return rates


def print_rates(mode: str = "full", width: int | None = None) -> None:
    """Measure :func:`measure_rates` for ``mode``'s plan on one thread and print the lines of
    :data:`.plan.RATES` (``width``: with every model matched to the Transformer at that width
    instead, the lines of :data:`.plan.TASK_RATES` (training only) at the plan's ``task_width``)."""
    flush_subnormals()  # before torch starts its threads (nlc.subnormals)
    torch.set_num_threads(1)
    plan = plan_for(mode)
    for label, (train_rate, eval_rate) in measure_rates(replace(plan, reference_width=width or plan.reference_width)).items():
        print(f"    {label!r}: " + (f"{train_rate:.0f}," if width else f"({train_rate:.0f}, {eval_rate:.0f}),"), flush=True)
