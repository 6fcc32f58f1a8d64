"""What the paper comparison trains and evaluates: the models and the three run sizes.

The models (NL-NeurIPS Table 1 rows that nlc bundles, plus the two HOPE ablations) are
bundled specs; every one is brought to the parameter count of the Transformer at the
plan's ``reference_width`` (:mod:`.params`), trained on the same data with the same
seeds, batch, sequence length, step budget and outer optimizer (AdamW, the spec base's
settings); only the outer learning rate is swept, over the same values for every model.

Sizes (``MODES``): ``smoke`` is the default-run test (seconds, two models), ``quick``
the CI run (minutes, every model, one seed), ``full`` the documented run (every model,
three seeds, four learning rates, six probes). The full lr grid is 2e-3..1.6e-2 because
a first full run on 1e-3..4e-3 saw every model choose 4e-3. Measured (docs/results.md):
the full run took 52.8 minutes on the 2-core machine with ``--jobs 2``, 102 minutes of
single-thread compute summed; the HOPE variants with the self-modifying memory dominate
(about 1.1k training tokens/s against the Transformer's 16k), so they start first
(:data:`COST_ORDER`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import NLCError

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
              "Samba*", "Transformer++")
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
    """Every size of one comparison run (module doc). Token budget per LM run:
    ``steps * batch * seq_len``."""

    mode: str
    models: tuple[str, ...]             # labels (or spec stems) from MODELS
    reference_width: int                # the Transformer width that fixes the parameter target
    heads: int
    seq_len: int
    batch: int
    steps: int
    eval_every: int
    eval_batches: int
    lrs: tuple[float, ...]              # the outer-lr sweep (seed ``seeds[0]``), same for every model
    seeds: tuple[int, ...]
    retrieval_multiples: tuple[int, ...]   # passkey / NIAH lengths, in multiples of seq_len
    retrieval_examples: int
    task_steps: int                     # MQAR / selective copying training steps
    task_batch: int
    mqar_lengths: tuple[int, ...]       # MQAR at length L has L // 16 key-value pairs
    copy_length: int
    task_examples: int
    continual_stream: tuple[str, ...]
    continual_tokens: int               # tokens per stage
    continual_seeds: tuple[int, ...]
    probes: tuple[Probe, ...] = ()
    tolerance: float = 0.05

    @property
    def tokens_per_run(self) -> int:
        return self.steps * self.batch * self.seq_len

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
        return {**asdict(self), "tokens_per_run": self.tokens_per_run}


ALL = tuple(m.label for m in MODELS)


def bench_model(name: str) -> BenchModel:
    """The model of :data:`MODELS` named by its label or its spec's stem (``hope_no_cms``)."""
    for model in MODELS:
        if name in (model.label, Path(model.spec).stem):
            return model
    raise NLCError(f"unknown model(s) {[name]}: choose from {', '.join(Path(m.spec).stem for m in MODELS)} "
                   "(or their labels)")


def _explanation_probes(long_seq: int, factor: int) -> tuple[Probe, ...]:
    """The ablations of docs/results.md's "Reading these numbers" (issue 6, point 4)."""
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


MODES: dict[str, BenchPlan] = {
    "smoke": BenchPlan(
        mode="smoke", models=("Transformer++", "HOPE"), reference_width=16, heads=2, seq_len=32, batch=2,
        steps=3, eval_every=3, eval_batches=1, lrs=(1e-3,), seeds=(0,), retrieval_multiples=(8,),
        retrieval_examples=1, task_steps=2, task_batch=2, mqar_lengths=(32,), copy_length=40,
        task_examples=2, continual_stream=("shakespeare",), continual_tokens=64, continual_seeds=(0,),
        probes=(Probe("HOPE, seq 64", "HOPE", "context", "sequences of 64 tokens", seq_len=64),)),
    "quick": BenchPlan(
        mode="quick", models=ALL, reference_width=32, heads=2, seq_len=64, batch=4, steps=40,
        eval_every=20, eval_batches=2, lrs=(1e-3, 3e-3), seeds=(0,), retrieval_multiples=(4, 8),
        retrieval_examples=4, task_steps=40, task_batch=8, mqar_lengths=(64, 128), copy_length=64,
        task_examples=16, continual_stream=("shakespeare", "pydocs"), continual_tokens=4 * 64 * 20,
        continual_seeds=(0,), probes=_explanation_probes(long_seq=256, factor=2)),
    "full": BenchPlan(
        mode="full", models=ALL, reference_width=64, heads=4, seq_len=128, batch=8, steps=64,
        eval_every=16, eval_batches=4, lrs=(2e-3, 4e-3, 8e-3, 1.6e-2), seeds=(0, 1, 2),
        retrieval_multiples=(1, 2, 4, 8), retrieval_examples=10, task_steps=40, task_batch=8,
        mqar_lengths=(64, 128, 256), copy_length=128, task_examples=64,
        continual_stream=("shakespeare", "pydocs", "sympy"), continual_tokens=8 * 128 * 16,
        continual_seeds=(0, 1, 2), probes=_explanation_probes(long_seq=512, factor=4)),
}


def plan_for(mode: str, models: tuple[str, ...] | None = None, seeds: int | None = None) -> BenchPlan:
    """The plan of ``mode`` (``smoke`` | ``quick`` | ``full``), optionally on a subset of
    models (keeping the probes of those models) and with ``seeds`` seeds (0 .. seeds-1) for
    every seeded part instead of the mode's."""
    if mode not in MODES:
        raise NLCError(f"unknown benchmark mode {mode!r}: choose one of {', '.join(MODES)}")
    if seeds is not None and seeds < 1:
        raise NLCError(f"--seeds must be at least 1, got {seeds}")
    plan = MODES[mode]
    if models:
        plan = replace(plan, models=tuple(models))
        chosen = {m.label for m in plan.bench_models()}
        plan = replace(plan, probes=tuple(p for p in plan.probes if p.model in chosen))
    if seeds is not None:
        plan = replace(plan, seeds=tuple(range(seeds)), continual_seeds=tuple(range(seeds)))
    return plan
