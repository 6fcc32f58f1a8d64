"""Level types of the spec language: one pydantic model per ``type``.

A *level* (NL-arXiv §3.2) is an associative memory with its own state,
inner objective, update rule and update frequency. The ``type`` key picks the
model:

=============  ===========================================================  ===========
type           state                                                        frequency
=============  ===========================================================  ===========
attention      none (non-parametric; Nadaraya-Watson, NL-arXiv Eq. 62)       every token
memory         matrix or MLP memory updated in context (Titans, HOPE, ...)    ``period``
mlp            MLP block: frozen (``period: never``) or CMS (``period: C``)  ``period``
persistent     N learned tokens prepended to a context (Titans Eq. 19)        never
optimizer      the outer optimizer of a group of slow parameters              ``steps``
=============  ===========================================================  ===========
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, PositiveInt, Tag, model_validator

from ..errors import FieldError, Issue

from .optimizers import MAX_NS_STEPS, OptimizerLevel
from .values import (INPUT, MAX_TOKENS, ForgetKnob, HuberDeltaKnob, Init, LrKnob, MomentumKnob, Period,
                     RetentionKnob, Source, Strict)

MAX_WIDTH = 2**16  # hidden sizes of MLPs and memories (the model width has the same bound)
MAX_HEADS = 4096
MAX_CHUNK = 4096  # a chunk materialises chunk x chunk matrices per head
MAX_POWER = 8  # exponents p (lp objective) and q (lq retention): |e|^8 is finite in fp32 up to |e| ~ 6e4
# the degree of a polynomial feature map, evaluated at entries |x| <= sqrt(head dim) <= 256: 256^8 / 8!
# = 4.6e14 squares (in its l2 norm) to 2e29, inside float32 and bfloat16 (3.4e38)
MAX_DEGREE = 8


Lifetime = Annotated[Literal["sequence", "document", "stream"], Field(description=(
    "how long the level's in-context state lives: 'sequence' starts it afresh at every training "
    "sequence, evaluation segment and generation; 'stream' carries it across consecutive sequences of "
    "one stream (each batch row), gradients truncated at the sequence boundary; 'document' carries it "
    "too and starts it afresh where a document of the data begins"))]


class MatrixMemory(Strict):
    """A matrix memory per head, ``M: R^Dk -> R^Dv`` (linear attention, DeltaNet, ...)."""

    kind: Literal["matrix"] = "matrix"


class MLPMemory(Strict):
    """An MLP memory per head (Titans LMM; NL-arXiv Eq. 89 uses ``x + W1 act(W2 x)``).

    ``norm: layernorm`` normalises the last layer's output before the residual, with a learned
    gain and bias per head (TTT-MLP: ``M(x) = x + LN(MLP(x))``, in the inner objective and the
    reads alike)."""

    kind: Literal["mlp"] = "mlp"
    depth: PositiveInt = Field(default=2, le=16)
    hidden: PositiveInt | None = Field(default=None, le=MAX_WIDTH)
    expansion: PositiveInt = Field(default=4, le=64)
    residual: bool = False
    activation: Literal["gelu", "silu", "relu", "identity"] = "gelu"
    norm: Literal["none", "layernorm"] = "none"


def _memory_kind(data: object) -> str:
    """``kind`` defaults to matrix, so ``memory: {}`` is a matrix memory."""
    return data.get("kind", "matrix") if isinstance(data, dict) else getattr(data, "kind", "matrix")


MemoryShape = Annotated[
    Union[Annotated[MatrixMemory, Tag("matrix")], Annotated[MLPMemory, Tag("mlp")]],
    Discriminator(_memory_kind, custom_error_type="memory_kind",
                  custom_error_message="memory kind must be 'matrix' or 'mlp'"),
]


class Objective(Strict):
    """The inner objective (MIRAS' attentional bias) a level minimises in context.

    ``dot``: ``-<M(k), v>`` (Hebbian); ``l2``: ``||M(k) - v||^2``; ``lp``: ``||M(k)-v||_p^p``;
    ``huber``: quadratic within ``delta``, linear outside; ``task``: the outer task loss
    (CMS driven by the LM-loss gradient at the block output). ``window > 1`` is ATLAS'
    Omega rule: the objective sums the last ``window`` tokens. ``self_target`` is HOPE's
    self-generated value ``v_hat = M(v)`` (NL-arXiv Eqs. 83-85). ``delta`` is a knob: a
    constant, ``learned`` per head, or data-dependent (``from: input``: MIRAS' Yaad ``delta_t``).
    """

    kind: Literal["dot", "l2", "lp", "huber", "task"] = "l2"
    p: float | None = Field(default=None, ge=1, le=MAX_POWER)
    delta: HuberDeltaKnob | None = None
    window: PositiveInt = Field(default=1, le=MAX_CHUNK)
    self_target: bool = False

    @model_validator(mode="after")
    def _params_match_kind(self) -> "Objective":
        _paired(self.kind == "lp", self.p is not None, "p", "kind 'lp'", "p: 3")
        _paired(self.kind == "huber", self.delta is not None, "delta", "kind 'huber'", "delta: 1.0")
        if self.delta is not None and self.delta.source not in (None, "input"):
            raise FieldError("delta", f"a data-dependent delta comes from the level input, not from "
                             f"level '{self.delta.source}'", hint="write delta: {from: input, init: 1.0, max: 4.0}")
        if self.delta is not None and self.delta.kind != "constant" and self.window != 1:
            raise FieldError("delta", "a learned or data-dependent delta is one value per token, but the "
                             f"Omega window sums the errors of {self.window} tokens at each step",
                             hint="use a constant delta with a window, or window: 1")
        if self.kind == "task" and (self.window != 1 or self.self_target):
            field = "window" if self.window != 1 else "self_target"
            raise FieldError(field, f"the 'task' objective takes no '{field}'", hint=f"remove '{field}'")
        return self


class Update(Strict):
    """The inner optimiser of a level (one step per token, or per ``period`` tokens).

    Rules: ``gd`` (one gradient step; gradients frozen at the chunk-start state inside a
    chunk), ``momentum`` (GD + momentum, Titans Eqs. 9-10 'surprise'), ``delta`` (the exact
    delta rule of a matrix memory with L2 objective, NL-arXiv Eq. 65), ``dgd`` (delta
    gradient descent, ``M (alpha I - eta k k^T) - eta grad``, NL-arXiv Eq. 88; with ``momentum``
    in HOPE's self-modifying memories, ``S <- momentum S - eta grad``,
    ``M <- M (alpha I - eta k k^T) + S``, :mod:`nlc.primitives.selfmod`).

    Gate convention: ``retention`` multiplies the old state (NL/HOPE/MIRAS ``alpha``).
    Titans writes the forget gate ``alpha`` with ``(1 - alpha)`` multiplying: give it as
    ``forget`` and it is normalised to ``retention = 1 - forget``. ``weight_decay`` is an
    extra constant decay ``(1 - weight_decay)``. MIRAS global retention beyond L2:
    ``retention_kind: lq`` (Moneta ``W = A / ||A||_q^(q-2)``) or ``elastic`` (soft-threshold
    by ``shrink``), applied at chunk boundaries; ``kl`` (Memora, MIRAS' KL retention): the
    weights live on a simplex, each row ``mass * softmax`` of logits that the rule updates,
    ``W_t = mass * softmax(retention_t log W_{t-1} - lr_t grad)``, exact at every token.

    ``reduce`` is how a chunk-frozen rule combines the gradients of a chunk: ``sum`` (Titans,
    HOPE: each token's step at full lr) or ``mean`` (TTT's mini-batch gradient descent: lr / chunk).

    ``output: newton_schulz`` is ATLAS' Muon inner optimizer (rules ``gd`` and ``momentum``):
    the momentum is orthogonalised per weight matrix by ``ns_steps`` Newton-Schulz steps and
    the step size moves outside it, ``S <- momentum S - g``, ``M <- retention M + lr NS(S)``
    (the optimizer levels' ``output`` field, :class:`~nlc.spec.optimizers.GradientMemory`).
    """

    rule: Literal["gd", "momentum", "delta", "dgd"] = "gd"
    lr: LrKnob = LrKnob(value=1.0)
    momentum: MomentumKnob | None = None
    retention: RetentionKnob | None = None
    forget: ForgetKnob | None = None
    weight_decay: float = Field(default=0.0, ge=0, lt=1)
    retention_kind: Literal["l2", "lq", "elastic", "kl"] = "l2"
    # q < 2 makes W = A ||A||_q^(2-q) grow faster than A: the memory runs away (MIRAS uses q >= 2)
    q: float | None = Field(default=None, ge=2, le=MAX_POWER)
    shrink: float | None = Field(default=None, ge=0)
    # the total weight of a row of a kl-retained memory (MIRAS' c): each weight starts near mass / fan_in
    mass: float | None = Field(default=None, gt=0, le=MAX_WIDTH)
    reduce: Literal["sum", "mean"] = "sum"
    grad_clip: float | None = Field(default=None, gt=0)
    grad_normalize: bool = False
    output: Literal["identity", "newton_schulz"] = "identity"
    ns_steps: PositiveInt | None = Field(default=None, le=MAX_NS_STEPS)

    @model_validator(mode="after")
    def _consistent(self) -> "Update":
        if self.retention is not None and self.forget is not None:
            raise FieldError("forget", "give 'retention' (the keep factor) or 'forget' (Titans' 1 - alpha), "
                             "not both", hint="forget: a is the same as retention: 1 - a")
        if self.rule == "momentum" and self.momentum is None:
            raise FieldError("momentum", "rule 'momentum' needs 'momentum'", hint="add 'momentum: 0.9'")
        if self.momentum is not None and self.rule not in ("momentum", "dgd"):
            raise FieldError("momentum", "'momentum' only applies to rule 'momentum' (and to rule 'dgd' in "
                             "HOPE's self-modifying memories)", hint="remove 'momentum', or use rule: momentum")
        _paired(self.retention_kind == "lq", self.q is not None, "q", "retention_kind 'lq'", "q: 4")
        _paired(self.retention_kind == "elastic", self.shrink is not None, "shrink",
                "retention_kind 'elastic'", "shrink: 1.0e-3")
        _paired(self.retention_kind == "kl", self.mass is not None, "mass", "retention_kind 'kl'", "mass: 8.0")
        if self.ns_steps is not None and self.output != "newton_schulz":
            raise FieldError("ns_steps", "'ns_steps' only applies to output 'newton_schulz'",
                             hint="remove 'ns_steps', or add 'output: newton_schulz'")
        return self


class Features(Strict):
    """The feature map ``phi`` a memory reads and writes its keys and queries through (ATLAS §3,
    polynomial feature map; :mod:`nlc.primitives.feature_maps`).

    ``identity`` (default): the keys and queries as their sources make them. ``polynomial``:
    ATLAS' elementwise map ``phi(x) = sum_{i=0}^{degree} a_i x^i`` (``x^i`` elementwise), its
    coefficients learned per head by the level's outer optimizer from ``a_i = 1/i!`` (the Taylor
    series of the exponential kernel of softmax attention), evaluated at unit RMS per entry and
    l2-normalised. It maps unit-norm keys and queries to unit-norm ones, so it needs ``norm: l2``
    on both (the memory's stable learning rates assume unit-norm keys).
    """

    kind: Literal["identity", "polynomial"] = "identity"
    degree: PositiveInt | None = Field(default=None, le=MAX_DEGREE)

    @model_validator(mode="after")
    def _degree_of_polynomial(self) -> "Features":
        _paired(self.kind == "polynomial", self.degree is not None, "degree", "kind 'polynomial'", "degree: 3")
        return self


def _paired(selected: bool, given: bool, field: str, owner: str, example: str) -> None:
    """A field that must be given exactly when ``owner`` is selected."""
    if selected and not given:
        raise FieldError(field, f"{owner} needs '{field}'", hint=f"add '{example}'")
    if given and not selected:
        raise FieldError(field, f"'{field}' only applies to {owner}", hint=f"remove '{field}'")


class LevelBase(Strict):
    """Fields shared by every level type."""

    description: str | None = None
    outer: str | None = Field(
        default=None, description="optimizer level that trains this level's slow parameters"
    )


class AttentionLevel(LevelBase):
    """Softmax attention: the non-parametric level, recomputed every token."""

    type: Literal["attention"]
    heads: PositiveInt | None = Field(default=None, le=MAX_HEADS)
    window: PositiveInt | None = Field(default=None, le=MAX_TOKENS, description="sliding window; null = full causal")
    rope: bool = True
    persistent: str | None = Field(default=None, description="a persistent level to prepend")
    qk_norm: bool = False


class MemoryLevel(LevelBase):
    """A memory updated in context by an inner optimiser (Titans, DeltaNet, HOPE, ...)."""

    type: Literal["memory"]
    memory: MemoryShape = MatrixMemory()
    objective: Objective = Objective()
    update: Update = Update()
    period: Period = Period(tokens=1)
    chunk: PositiveInt = Field(default=64, le=MAX_CHUNK)
    heads: PositiveInt | None = Field(default=None, le=MAX_HEADS)
    read: Literal["before_write", "after_write"] = "before_write"
    keys: Source = Source()
    values: Source = Source()
    queries: Source = Source()
    init: Init = Init()
    output_gate: bool = False
    lifetime: Lifetime = "sequence"
    features: Features = Features()

    @model_validator(mode="after")
    def _token_clock(self) -> "MemoryLevel":
        if self.period.steps is not None:
            raise FieldError("period", "'steps' periods belong to optimizer levels",
                             hint="use a number of tokens, or 'never' for a memory only the outer level changes")
        return self

    @model_validator(mode="after")
    def _features_on_unit_vectors(self) -> "MemoryLevel":
        """A polynomial of an unnormalised projection grows as ``|x|^degree``; on l2-normalised
        keys and queries every entry is at most 1 (sqrt(head dim) at the unit RMS the map is
        evaluated at), so every power is bounded. (Sources from other levels are HOPE's pattern,
        which takes no feature map: refused by the capability table.)"""
        raw = [name for name in ("keys", "queries")
               if getattr(self, name).source == INPUT and getattr(self, name).norm != "l2"]
        if self.features.kind == "polynomial" and raw:
            raise FieldError("features", f"the polynomial feature map takes l2-normalised keys and queries: "
                             f"x^{self.features.degree} of the unnormalised {' and '.join(raw)} grows as "
                             f"|x|^{self.features.degree}", hint=f"add norm: l2 to {' and '.join(raw)}")
        return self


class MLPLevel(LevelBase):
    """An MLP block. ``period: never`` is a Transformer MLP (changed only by the outer
    optimizer); ``period: C`` makes it a CMS level (NL-NeurIPS Eqs. 30-31) updated every C
    tokens by the sum of per-token gradients at the frozen chunk-start parameters."""

    type: Literal["mlp"]
    hidden: PositiveInt | None = Field(default=None, le=4 * MAX_WIDTH)
    expansion: float = Field(default=4, gt=0, le=64)
    activation: Literal["swiglu", "gelu", "silu", "relu"] = "swiglu"
    period: Period = Period(never=True)
    objective: Objective | None = None
    update: Update | None = None
    init: Init = Init()
    flush: Literal["carry", "drop", "flush"] = "carry"
    lifetime: Lifetime = "sequence"

    @model_validator(mode="after")
    def _update_iff_in_context(self) -> "MLPLevel":
        in_context = self.period.tokens is not None
        if not in_context and (self.objective is not None or self.update is not None):
            field = "update" if self.update is not None else "objective"
            raise FieldError(field, f"an MLP with period 'never' is frozen in context and takes no '{field}'",
                             hint="remove it, or give a period in tokens to make a CMS level")
        if in_context and self.update is None:
            raise FieldError("update", "a CMS level (period in tokens) needs an update rule",
                             hint="add 'update: {rule: gd, lr: 1.0e-3}'")
        if self.period.steps is not None:
            raise FieldError("period", "'steps' periods belong to optimizer levels",
                             hint="use a number of tokens or 'never'")
        return self


class PersistentLevel(LevelBase):
    """Learned, input-independent tokens (Titans Eq. 19); only the outer optimizer changes them."""

    type: Literal["persistent"]
    tokens: PositiveInt = Field(le=MAX_WIDTH)


Level = Annotated[
    Union[AttentionLevel, MemoryLevel, MLPLevel, PersistentLevel, OptimizerLevel],
    Field(discriminator="type"),
]

LEVEL_TYPES = ("attention", "memory", "mlp", "persistent", "optimizer")


# --------------------------------------------------------------------------- stable ranges
ADAM_LR_LIMIT = 0.1
# The largest constant lr at which a matrix memory's write still shrinks its error on a
# unit-norm key k. The delta rule steps on 1/2 ||S k - v||^2, multiplying that error by
# (1 - lr); DGD multiplies the old state along k by (retention - lr), the same bound; gd and
# momentum on the l2 objective step on ||S k - v||^2, twice the gradient: (1 - 2 lr).
MATRIX_LR_LIMIT = {"delta": 2.0, "dgd": 2.0, "gd": 1.0, "momentum": 1.0}


def lr_warnings(name: str, level: object) -> list[Issue]:
    """Warnings (never errors: a researcher may mean them) for learning rates far outside the
    range in which a level's rule is stable, each saying why."""
    if isinstance(level, OptimizerLevel) and level.lr > ADAM_LR_LIMIT and (
            level.rule in ("adam", "adamw", "muon", "m3")  # steps of about lr (muon: RMS-matched to AdamW)
            or level.rule == "memories" and level.matrices.second_moment is not None):
        return [Issue(f"levels.{name}.lr", f"Adam moves every weight by about lr per step whatever the "
                      f"gradient's scale; lr {level.lr} overwrites weights initialised near 1/sqrt(width) "
                      "at every step (these models train at 1e-4 to 1e-2)", hint="use lr: 1.0e-3",
                      severity="warning")]
    if not isinstance(level, MemoryLevel) or level.memory.kind != "matrix":
        return []
    rule, lr = level.update.rule, level.update.lr
    if rule not in ("delta", "dgd") and level.objective.kind != "l2":
        return []  # no error feedback (dot: Hebbian), or a bounded gradient (lp, huber)
    limit, top = MATRIX_LR_LIMIT[rule], lr.value if lr.kind == "constant" else lr.max
    if level.update.reduce == "mean":  # TTT's mean of a chunk: each token steps by lr / chunk
        top /= level.chunk
    if lr.kind == "learned" or top <= limit:
        return []
    factor = "1 - 2 lr" if rule in ("gd", "momentum") else "retention - lr" if rule == "dgd" else "1 - lr"
    reaches = f"lr {top}" if lr.kind == "constant" else f"a data-dependent lr up to max {top}"
    return [Issue(f"levels.{name}.update.lr", f"rule '{rule}' multiplies the memory's error on a unit-norm "
                  f"key by ({factor}) at every write: {reaches} makes it grow instead of shrink; "
                  f"it shrinks for lr <= {limit}, less for longer keys",
                  hint=f"use lr <= {limit} with keys: {{from: input, norm: l2}}", severity="warning")]
