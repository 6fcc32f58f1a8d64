"""What the paper comparison trains and evaluates: the models and the run sizes.

The models (NL-NeurIPS Table 1 rows that nlc bundles, plus the two HOPE ablations) are
bundled specs; every one is brought to the parameter count of the Transformer at the
plan's ``reference_width`` (:mod:`.params`), trained on the same data with the same
seeds, batch, sequence length, step budget and outer optimizer (AdamW, the spec base's
settings); only the outer learning rate is chosen per model, from the same starting grid,
on the held-apart tune split (:mod:`.lr_grid`, :mod:`.tune_split`).

Sizes (``MODES``): ``smoke`` is the default-run test (seconds, two models), ``quick``
the CI run (minutes, every model, one seed), ``full`` the documented run (every model,
three seeds, 1,048,576 training tokens per reported run, 81,920 validation tokens), and
``gpu`` the full protocol sized up for ``--device cuda``. The full grid starts at
4e-3, 8e-3, 1.6e-2 (the first full run, at 65k tokens, chose 8e-3 or 1.6e-2 for every
model) and is extended past whichever edge wins. :data:`RATES` holds measured tokens/s
at the full size, from which :mod:`.budget` estimates the wall time. The HOPE variants
with the self-modifying memory dominate the cost, so they start first (:data:`COST_ORDER`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import NLCError
from .lr_grid import check_grid
from .task_protocol import PAPER_PROTOCOLS, CalibrationSettings, Shape, TaskProtocol

SPECS_DIR = Path(__file__).resolve().parent.parent / "bundled"


@dataclass(frozen=True)
class BenchModel:
    """One row of the comparison: a display label and its bundled spec (relative path)."""

    label: str
    spec: str
    family: str        # "baseline" | "titans" | "hope" | "ablation"

    @property
    def path(self) -> Path:
        return SPECS_DIR / self.spec


MODELS: tuple[BenchModel, ...] = (
    BenchModel("Transformer++", "transformer.yaml", "baseline"),
    BenchModel("Transformer++ (SWA)", "swa_transformer.yaml", "baseline"),   # the deployment protocol's
                                                                              # attention row (window 64)
    BenchModel("Samba*", "samba.yaml", "baseline"),
    BenchModel("Titans (LMM)", "titans_lmm.yaml", "titans"),
    BenchModel("Titans (MAC)*", "titans_mac.yaml", "titans"),
    BenchModel("HOPE", "hope.yaml", "hope"),
    BenchModel("HOPE-Attention", "hope_attention.yaml", "hope"),
    BenchModel("HOPE w/o CMS", "ablations/hope_no_cms.yaml", "ablation"),
    BenchModel("HOPE, 1-level CMS", "ablations/hope_cms_single.yaml", "ablation"),
)
# The order the runs start in, slowest first (train tokens/s of the quick run, docs/results.md),
# so that parallel jobs finish together.
COST_ORDER = ("HOPE", "HOPE, 1-level CMS", "HOPE w/o CMS", "HOPE-Attention", "Titans (MAC)*", "Titans (LMM)",
              "Samba*", "Transformer++ (SWA)", "Transformer++")
NAIVE_BASELINE = "Transformer++"   # continual LM: the transformer row is the naive fine-tuning baseline


@dataclass(frozen=True)
class Probe:
    """An ablation that tests one explanation of the results (:mod:`.probes`): one model of
    :data:`MODELS`, retrained on the plan's seeds at its chosen lr with one thing changed.

    ``steps_factor`` multiplies the token budget; ``seq_len`` changes the training length
    at the same tokens per step (the batch shrinks to ``batch * seq_len / new seq_len``);
    ``overrides`` change the spec (on top of the parameter match)."""

    label: str
    model: str                          # a label of MODELS
    tests: str                          # the explanation it tests: "budget" | "CMS step" | "context"
    change: str                         # what differs from the model's main runs, in words
    steps_factor: int = 1
    seq_len: int | None = None
    overrides: tuple[str, ...] = ()


CMS_LEVELS = ("cms_fast", "cms_mid", "cms_slow")   # hope.yaml's CMS chain (the probes' target)


@dataclass(frozen=True)
class BenchPlan:
    """Every size of one comparison run (module doc). Token budget per reported LM run:
    ``steps * batch * seq_len``; validation tokens scored per evaluation: ``eval_batches *
    batch * seq_len`` (fixed windows, :func:`nlc.evaluate.lm.evaluate_lm`).

    Learning rate (:mod:`.lr_grid`): the grid ``lrs`` (geometric, ratio ``lr_ratio``) is
    trained at seed ``seeds[0]`` for ``grid_steps`` (``grid_fraction`` of ``steps``) on the
    fit tokens and scored on the held-apart tune split (:mod:`.tune_split`), extended past an
    edge at most ``lr_extensions`` times; every seed then trains ``steps`` at the chosen lr."""

    mode: str
    models: tuple[str, ...]             # labels (or spec stems) from MODELS
    reference_width: int                # the Transformer width that fixes the parameter target
    heads: int
    seq_len: int
    batch: int
    steps: int
    eval_every: int
    eval_batches: int
    lrs: tuple[float, ...]              # the starting outer-lr grid, same for every model
    seeds: tuple[int, ...]
    retrieval_multiples: tuple[int, ...]   # passkey / NIAH lengths, in multiples of seq_len
    retrieval_examples: int
    synthetic: tuple[TaskProtocol, ...]     # MQAR, selective copying, passkey: trained per model (.synthetic)
    calibration: CalibrationSettings        # their common step budget, fixed on the Transformer (.calibration)
    continual_stream: tuple[str, ...]
    continual_tokens: int               # tokens per stage
    continual_seeds: tuple[int, ...]
    probes: tuple[Probe, ...] = ()
    tolerance: float = 0.05
    lr_ratio: float = 2.0               # each grid lr is lr_ratio times the last; extensions step by it
    lr_extensions: int = 3              # at most this many lrs added past the grid's edges
    grid_fraction: float = 0.25         # the grid runs' share of ``steps``
    device: str = "cpu"
    task_width: int | None = None       # the Transformer width that fixes the synthetic tasks' parameter
                                        # target (None: reference_width); every model is matched to it there
    deploy_domain: str = "pydocs"       # deployment (nlc.continual.deployment): the unseen domain streamed
    deploy_tokens: int = 0              # tokens per stream row (0: no deployment), in segments of seq_len
    deploy_streams: int = 1

    def __post_init__(self) -> None:
        check_grid(self.lrs, self.lr_ratio, self.lr_extensions)
        if not 0 < self.grid_fraction <= 1:
            raise NLCError(f"grid_fraction must lie in (0, 1], got {self.grid_fraction}")

    @property
    def tokens_per_run(self) -> int:
        return self.steps * self.batch * self.seq_len

    @property
    def eval_tokens(self) -> int:
        """Tokens scored by one validation (the same fixed windows at every evaluation)."""
        return self.eval_batches * self.batch * self.seq_len

    @property
    def evals_per_run(self) -> int:
        """Validations of one reported run (every ``eval_every`` steps and at the end)."""
        return -(-self.steps // self.eval_every)

    @property
    def grid_steps(self) -> int:
        """Steps of one learning-rate grid run (``grid_fraction`` of ``steps``, at least 1)."""
        return max(1, round(self.steps * self.grid_fraction))

    def grid_plan(self) -> "BenchPlan":
        """The plan of one grid run: ``grid_steps`` steps, validated once, at the end."""
        return replace(self, steps=self.grid_steps, eval_every=self.grid_steps, models=(), probes=())

    def task_settings(self) -> "TaskSettings":
        """What the synthetic tasks read of this plan (:class:`TaskSettings`)."""
        return TaskSettings(reference_width=self.task_width or self.reference_width, heads=self.heads,
                            tolerance=self.tolerance, seeds=self.seeds, device=self.device,
                            calibration=self.calibration)

    def bench_models(self) -> list[BenchModel]:
        """The plan's models; each named by its label or its spec's stem (``hope_no_cms``)."""
        return [bench_model(name) for name in self.models]

    def settings(self) -> "BenchPlan":
        """This plan without its model and probe lists: what one model's runs depend on."""
        return replace(self, models=(), probes=())

    def probe_plan(self, probe: Probe) -> "BenchPlan":
        """This plan with ``probe``'s budget and training length."""
        seq_len = probe.seq_len or self.seq_len
        if (self.batch * self.seq_len) % seq_len:
            raise NLCError(f"probe {probe.label!r}: seq_len {seq_len} does not divide the {self.batch * self.seq_len} "
                           "tokens of one step")
        return replace(self, steps=self.steps * probe.steps_factor, seq_len=seq_len,
                       batch=self.batch * self.seq_len // seq_len, models=(), probes=())

    def train_overrides(self, lr: float) -> list[str]:
        """The shared training settings of every LM run, as overrides."""
        return [f"model.heads={self.heads}", f"train.seq_len={self.seq_len}", f"train.batch={self.batch}",
                f"train.eval_every={self.eval_every}", f"train.eval_batches={self.eval_batches}",
                f"levels.outer.lr={lr}"]

    def to_json(self) -> dict:
        return {**asdict(self), "tokens_per_run": self.tokens_per_run, "eval_tokens": self.eval_tokens,
                "grid_steps": self.grid_steps, "grid_tokens_per_run": self.grid_steps * self.batch * self.seq_len}


ALL = tuple(m.label for m in MODELS)


def bench_model(name: str) -> BenchModel:
    """The model of :data:`MODELS` named by its label or its spec's stem (``hope_no_cms``)."""
    for model in MODELS:
        if name in (model.label, Path(model.spec).stem):
            return model
    raise NLCError(f"unknown model(s) {[name]}: choose from {', '.join(Path(m.spec).stem for m in MODELS)} "
                   "(or their labels)")


def _explanation_probes(long_seq: int, factor: int) -> tuple[Probe, ...]:
    """The probes of :mod:`.probes`: the token budget, the CMS step, the training length."""
    cms_lr = tuple(f"levels.{level}.update.lr=0.1" for level in CMS_LEVELS)
    return (
        Probe(f"Transformer++, {factor}x tokens", "Transformer++", "budget", f"{factor}x the training steps",
              steps_factor=factor),
        Probe(f"HOPE, {factor}x tokens", "HOPE", "budget", f"{factor}x the training steps", steps_factor=factor),
        Probe("HOPE, CMS lr 0.1", "HOPE", "CMS step", "CMS in-context GD lr 0.1 instead of 1e-3",
              overrides=cms_lr),
        Probe(f"Transformer++, seq {long_seq}", "Transformer++", "context", f"sequences of {long_seq} tokens",
              seq_len=long_seq),
        Probe(f"HOPE, seq {long_seq}", "HOPE", "context", f"sequences of {long_seq} tokens", seq_len=long_seq),
        Probe(f"HOPE w/o CMS, seq {long_seq}", "HOPE w/o CMS", "context", f"sequences of {long_seq} tokens",
              seq_len=long_seq),
    )


def _tiny_protocols(length: int, tokens_per_step: int, examples: int) -> tuple[TaskProtocol, ...]:
    """The paper's protocols at a plumbing size (smoke, quick): every task trained and scored
    at two shapes, the budget calibrated against a 0% target (so every task counts and every
    model trains on it: these modes check that the protocol runs, not what it finds)."""
    return (TaskProtocol("mqar", train=(Shape(length, 4),), test=(Shape(2 * length, 8),),
                         tokens_per_step=tokens_per_step, lr=3e-3, warmup=1, examples=examples),
            TaskProtocol("copy", train=(Shape(length + 8),), test=(Shape(2 * length),),
                         tokens_per_step=tokens_per_step, lr=3e-3, warmup=1, examples=examples),
            TaskProtocol("passkey", train=(Shape(256),), test=(Shape(512),), tokens_per_step=max(256, tokens_per_step),
                         lr=3e-3, warmup=1, examples=examples))


@dataclass(frozen=True)
class TaskSettings:
    """Everything the synthetic tasks (their calibration and every model's runs) read of a
    plan, besides the protocols themselves: their results depend on nothing else, so a change
    to the LM budget, the lr grid, the continual stream or the deployment keeps them (the
    run folder's unit keys, :mod:`.jobs`). Models are matched to the Transformer at
    ``reference_width`` (the plan's ``task_width``) with these heads, to ``tolerance``, as
    :func:`.lm.match_for` matches the LM models."""

    reference_width: int
    heads: int
    tolerance: float
    seeds: tuple[int, ...]
    device: str
    calibration: CalibrationSettings


_FULL_SHARED = dict(
    models=ALL, reference_width=64, heads=4, lrs=(4e-3, 8e-3, 1.6e-2), lr_ratio=2.0, lr_extensions=3,
    grid_fraction=0.25, seeds=(0, 1, 2), retrieval_multiples=(1, 2, 4, 8), retrieval_examples=10,
    synthetic=PAPER_PROTOCOLS, calibration=CalibrationSettings(max_steps=8000, eval_every=250), task_width=128,
    deploy_tokens=16_384, deploy_streams=2,
    continual_stream=("shakespeare", "pydocs", "sympy", "licences"), continual_tokens=8 * 128 * 16, continual_seeds=(0, 1, 2))

MODES: dict[str, BenchPlan] = {
    "smoke": BenchPlan(
        mode="smoke", models=("Transformer++", "HOPE"), reference_width=16, heads=2, seq_len=32, batch=2,
        steps=4, eval_every=4, eval_batches=1, lrs=(1e-3, 2e-3), lr_ratio=2.0, lr_extensions=1, grid_fraction=0.5,
        seeds=(0,), retrieval_multiples=(8,), retrieval_examples=1,
        synthetic=_tiny_protocols(32, tokens_per_step=64, examples=2),
        calibration=CalibrationSettings(max_steps=2, eval_every=2, target=0.0), deploy_tokens=64, continual_stream=("shakespeare",), continual_tokens=64, continual_seeds=(0,),
        probes=(Probe("HOPE, seq 64", "HOPE", "context", "sequences of 64 tokens", seq_len=64),)),
    "quick": BenchPlan(
        mode="quick", models=ALL, reference_width=32, heads=2, seq_len=64, batch=4, steps=40,
        eval_every=20, eval_batches=2, lrs=(1e-3, 3e-3), lr_ratio=3.0, lr_extensions=1, grid_fraction=0.5,
        seeds=(0,), retrieval_multiples=(4, 8),
        retrieval_examples=4, synthetic=_tiny_protocols(64, tokens_per_step=512, examples=16),
        calibration=CalibrationSettings(max_steps=20, eval_every=10, target=0.0), deploy_tokens=512,
        continual_stream=("shakespeare", "pydocs"), continual_tokens=4 * 64 * 20,
        continual_seeds=(0,), probes=_explanation_probes(long_seq=256, factor=2)),
    # 4 x 256 tokens a step, 1,024 steps: 1,048,576 training tokens per reported run. 80 validation
    # batches: 81,920 tokens scored 4 times a run, on random windows (fixed per seed) of the
    # 252,841-token validation split, which overlap: at least 68,717 distinct tokens for seeds
    # 0-2 (64 batches cover about 57.2k; tests/bench/test_plan.py counts them). Sequences of 256
    # let every CMS level of HOPE (periods 16 / 64 / 128) update inside a sequence. No probes:
    # at this budget one HOPE probe alone costs 3 seeds x 1M tokens (about an hour, RATES).
    "full": BenchPlan(mode="full", seq_len=256, batch=4, steps=1024, eval_every=256, eval_batches=80,
                      **_FULL_SHARED),
    # --device cuda: the full protocol sized up for one GPU (width 128, 8 x 512 tokens a step,
    # 512 steps: 2,097,152 tokens per run; 20 validation batches, 81,920 tokens). No rates are
    # measured for it (no GPU where it was written): the estimate says so, and its size is a
    # starting point, not a tuned budget.
    "gpu": BenchPlan(mode="gpu", **{**_FULL_SHARED, "reference_width": 128}, seq_len=512, batch=8, steps=512,
                     eval_every=128, eval_batches=20, device="cuda"),
}
SIZED_UP = {"full": "gpu"}   # the mode --device cuda runs instead


def plan_for(mode: str, models: tuple[str, ...] | None = None, seeds: int | None = None,
             device: str = "cpu") -> BenchPlan:
    """The plan of ``mode`` (``smoke`` | ``quick`` | ``full``), optionally on a subset of
    models (keeping the probes of those models) and with ``seeds`` seeds (0 .. seeds-1) for
    every seeded part instead of the mode's. ``device="cuda"`` runs the full mode at its GPU
    size (:data:`SIZED_UP`) and the others at their own size on the GPU."""
    if mode not in MODES or mode in SIZED_UP.values():
        raise NLCError(f"unknown benchmark mode {mode!r}: choose one of smoke, quick, full")
    if device not in ("cpu", "cuda"):
        raise NLCError(f"unknown device {device!r}: choose cpu or cuda")
    if seeds is not None and seeds < 1:
        raise NLCError(f"--seeds must be at least 1, got {seeds}")
    plan = MODES[SIZED_UP.get(mode, mode)] if device == "cuda" else MODES[mode]
    plan = replace(plan, device=device)
    if models:
        plan = replace(plan, models=tuple(models))
        chosen = {m.label for m in plan.bench_models()}
        plan = replace(plan, probes=tuple(p for p in plan.probes if p.model in chosen))
    if seeds is not None:
        plan = replace(plan, seeds=tuple(range(seeds)), continual_seeds=tuple(range(seeds)))
    return plan


# Measured training and evaluation tokens per CPU second of one process on one torch thread, per
# model, at the full plan's size (RATES_AT), on the 2-core machine (AMD EPYC), 2026-12-08, the
# two tables measured side by side (one process per core, load average below 2): CPU time, so
# what one free core does (:func:`.lm.measure_rates`). The input of the wall-time estimate
# (:mod:`.budget`). Measured by
#   OMP_NUM_THREADS=1 .venv/bin/python -c "from nlc.bench.lm import print_rates; print_rates('full')"
RATES_AT = {"reference_width": 64, "heads": 4, "seq_len": 256, "batch": 4, "device": "cpu"}
RATES: dict[str, tuple[float, float]] = {   # label: (train tokens/s, eval tokens/s)
    "Transformer++": (32022, 99300),
    "Transformer++ (SWA)": (32508, 94165),
    "Samba*": (16299, 54683),
    "Titans (LMM)": (9378, 30946),
    "Titans (MAC)*": (5361, 13247),
    "HOPE": (1367, 2520),
    "HOPE-Attention": (4207, 8332),
    "HOPE w/o CMS": (3776, 12753),
    "HOPE, 1-level CMS": (1226, 2276),
}
# The same measurement with every model matched to the Transformer at the synthetic tasks'
# width (TASK_RATES_AT: the full plan's task_width 128, on the LM's batch shape), training
# tokens per CPU second: the rate the estimate prices the tasks at. Measured by
#   OMP_NUM_THREADS=1 .venv/bin/python -c "from nlc.bench.lm import print_rates; print_rates('full', 128)"
TASK_RATES_AT = {"task_width": 128, "heads": 4, "seq_len": 256, "batch": 4, "device": "cpu"}
TASK_RATES: dict[str, float] = {
    "Transformer++": 14482,
    "Transformer++ (SWA)": 13698,
    "Samba*": 9498,
    "Titans (LMM)": 4768,
    "Titans (MAC)*": 3143,
    "HOPE": 791,
    "HOPE-Attention": 2113,
    "HOPE w/o CMS": 2345,
    "HOPE, 1-level CMS": 719,
}
