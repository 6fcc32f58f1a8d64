"""What a synthetic task's training and scoring are, as plain settings (no torch here):
the shapes, the optimizer settings written over the spec's, the calibration rule's knobs,
and the protocols ``nlc bench paper`` runs. :mod:`.synthetic` runs them and
:mod:`.calibration` fixes the step budget; this module stays light so that the plan
(:mod:`.plan`) and ``nlc bench paper --dry-run`` do not load torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import NLCError

SYNTHETIC_TASKS = ("mqar", "copy", "passkey")
OUTER_LEVEL = "outer"   # the outermost optimizer level of every bundled spec (base/small.yaml)


class SyntheticError(NLCError):
    """A synthetic-task protocol that cannot run as written."""


@dataclass(frozen=True)
class Shape:
    """One task shape: a sequence length and, for MQAR, its number of key-value pairs."""

    length: int
    pairs: int | None = None

    @property
    def key(self) -> str:
        """The shape's name in results: ``"64x4"`` (MQAR) or ``"384"``."""
        return f"{self.length}x{self.pairs}" if self.pairs is not None else str(self.length)


@dataclass(frozen=True)
class TaskProtocol:
    """How one task is trained and scored, the same for every model."""

    task: str                        # mqar | copy | passkey
    train: tuple[Shape, ...]         # cycled one shape per optimizer step
    test: tuple[Shape, ...]          # scored besides the training shapes (longer, more pairs)
    tokens_per_step: int             # a shape of length T gets tokens_per_step // T examples
    lr: float
    warmup: int                      # optimizer steps of linear warm-up
    schedule: str = "cosine"         # after the warm-up (nlc.training.lr)
    grad_clip: float = 1.0
    examples: int = 64               # held-out examples per shape and split

    def __post_init__(self) -> None:
        if self.task not in SYNTHETIC_TASKS:
            raise SyntheticError(f"unknown synthetic task {self.task!r}: choose one of {', '.join(SYNTHETIC_TASKS)}")
        if not self.train:
            raise SyntheticError(f"{self.task}: the protocol needs at least one training shape")
        for shape in (*self.train, *self.test):
            if (shape.pairs is not None) != (self.task == "mqar"):
                raise SyntheticError(f"{self.task}: shape {shape.key}: MQAR shapes give key-value pairs, "
                                     "the other tasks' shapes do not")
        for shape in self.train:
            if self.tokens_per_step < shape.length:
                raise SyntheticError(f"{self.task}: tokens_per_step {self.tokens_per_step} is less than one "
                                     f"example of length {shape.length}")
        if self.examples < 1:
            raise SyntheticError(f"{self.task}: examples must be >= 1, got {self.examples}")

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """Every scored shape: the training shapes, then the test-only ones."""
        return (*self.train, *(s for s in self.test if s not in self.train))

    def shape_at(self, step: int) -> Shape:
        """The training shape of optimizer step ``step`` (1-based)."""
        return self.train[(step - 1) % len(self.train)]

    def batch_size(self, shape: Shape) -> int:
        return self.tokens_per_step // shape.length

    def overrides(self) -> list[str]:
        """The task's optimizer settings as spec overrides (after the model's own)."""
        return [f"levels.{OUTER_LEVEL}.lr={self.lr}", f"levels.{OUTER_LEVEL}.warmup={self.warmup}",
                f"levels.{OUTER_LEVEL}.schedule={self.schedule}", f"levels.{OUTER_LEVEL}.grad_clip={self.grad_clip}"]

    def to_json(self) -> dict:
        return {**asdict(self), "train": [s.key for s in self.train], "test": [s.key for s in self.test],
                "shapes": [s.key for s in self.shapes]}


@dataclass(frozen=True)
class CalibrationSettings:
    """The budget rule's knobs (module doc)."""

    max_steps: int
    eval_every: int
    target: float = 0.9
    margin: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.eval_every <= self.max_steps:
            raise SyntheticError(f"calibration needs 1 <= eval_every <= max_steps, got eval_every "
                                 f"{self.eval_every}, max_steps {self.max_steps}")
        if not 0.0 <= self.target <= 1.0:
            raise SyntheticError(f"the calibration target is an accuracy in [0, 1], got {self.target}")
        if self.margin < 1:
            raise SyntheticError(f"the calibration margin multiplies the budget: it must be >= 1, got {self.margin}")


PAPER_PROTOCOLS: tuple[TaskProtocol, ...] = (
    TaskProtocol("mqar", train=(Shape(64, 4), Shape(64, 8), Shape(128, 8), Shape(128, 16)),
                 test=(Shape(256, 16), Shape(256, 32), Shape(512, 32), Shape(512, 64)),
                 tokens_per_step=4096, lr=3e-3, warmup=100),
    TaskProtocol("copy", train=(Shape(128),), test=(Shape(256), Shape(512)), tokens_per_step=4096, lr=3e-3,
                 warmup=100),
    TaskProtocol("passkey", train=(Shape(384),), test=(Shape(768), Shape(1536), Shape(3072)),
                 tokens_per_step=8192, lr=3e-3, warmup=100),
)
"""The protocols of ``nlc bench paper`` (module doc): Zoology's (64, 4) and (128, 8) shapes
with a second pair count at each length, Mamba's 16-token copy at 128 tokens, passkey at
L = 384 bytes (131 bytes of filler around a 5-digit key) tested at 2L, 4L, 8L. Whether the
reference learns them within a budget is what :mod:`.calibration` finds out. Measured on
the shared 2-core machine (Transformer width 128, 2 blocks, one thread): at 1024 tokens a
step instead of 4096 the MQAR mixture stayed at 5.6-7.7% (lowest training shape) through
4000 steps, and passkey at L = 320 with 2560 tokens a step at 0-1.6% through 1500 steps;
one step costs about 0.07 s (MQAR, 1024 tokens), 0.3 s (MQAR, 4096) and 0.19 s
(passkey, 2560) of CPU."""
