"""The IR: a validated spec with every default filled in and one convention everywhere.

Frozen dataclasses, no pydantic, no torch. Differences from the spec:

* gate convention: only ``retention`` exists (the factor multiplying the old state). A
  Titans ``forget`` knob becomes a retention knob with ``complement=True`` (value
  ``1 - forget``), and ``weight_decay`` is kept as a separate constant factor;
* sizes are resolved: heads, head dims, hidden widths;
* read order is a bool, periods are ints (``0`` = never in context), frequencies and
  ordered-level indices come from the level graph;
* every level remembers the YAML ``file:line`` it came from, for messages and the emitted source.

A field's default is its neutral value (no momentum, no gate, never reset); the emitted
source (:mod:`nlc.lower.emit`) writes only the fields that differ from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class KnobIR:
    """``kind``: constant | learned | data. ``source``: ``input`` or a level name (data)."""

    kind: str
    init: float
    max: float = 1.0
    source: str | None = None
    per_chunk: bool = False
    complement: bool = False  # the value used is 1 - knob (a Titans forget gate)


@dataclass(frozen=True)
class SourceIR:
    source: str  # "input" or a level name
    project: bool = True  # a static linear projection of the input (source "input" only)
    conv: int = 0
    l2_norm: bool = False
    silu: bool = False


@dataclass(frozen=True)
class ObjectiveIR:
    kind: str  # dot | l2 | lp | huber | task
    p: float = 2.0
    delta: KnobIR = KnobIR("constant", 1.0)  # the Huber threshold (a knob: Yaad's delta_t)
    window: int = 1
    self_target: bool = False


@dataclass(frozen=True)
class FeaturesIR:
    """The feature map of a memory's keys and queries (``kind``: polynomial, ATLAS §3)."""

    kind: str
    degree: int


@dataclass(frozen=True)
class RuleIR:
    kind: str  # gd | momentum | delta | dgd
    lr: KnobIR
    momentum: KnobIR | None = None
    retention: KnobIR | None = None
    weight_decay: float = 0.0
    retention_kind: str = "l2"  # l2 | lq | elastic | kl
    q: float = 2.0
    shrink: float = 0.0
    grad_clip: float | None = None
    grad_normalize: bool = False
    ns_steps: int = 0  # Newton-Schulz steps of a Muon output; 0: identity output
    mass: float = 0.0  # kl retention: the total weight of a row (MIRAS' c)
    reduce: str = "sum"  # sum | mean: how a chunk-frozen rule combines a chunk's gradients


@dataclass(frozen=True)
class LevelIR:
    """Fields every level has."""

    name: str
    type: str
    order: int  # ordered-level index, 0 = fastest
    frequency: Fraction  # updates per token
    outer: str | None
    origin: str  # "file:line" of the level in the YAML


@dataclass(frozen=True)
class AttentionIR(LevelIR):
    heads: int
    head_dim: int
    window: int | None = None
    rope: bool = True
    persistent: str | None = None
    qk_norm: bool = False


@dataclass(frozen=True)
class MemoryIR(LevelIR):
    heads: int
    head_dim: int
    memory: str  # matrix | mlp
    depth: int
    hidden: int
    residual: bool
    activation: str
    objective: ObjectiveIR
    rule: RuleIR
    period: int
    chunk: int
    read_after_write: bool
    keys: SourceIR
    values: SourceIR
    queries: SourceIR
    init: str = "learned"  # learned | zero | from | copy
    init_level: str | None = None
    reset: str = "never"
    output_gate: bool = False
    lifetime: str = "sequence"  # sequence | document | stream
    norm: str = "none"  # none | layernorm: the memory output's normalisation (TTT)
    features: FeaturesIR | None = None  # None: keys and queries as their sources make them


@dataclass(frozen=True)
class MLPIR(LevelIR):
    hidden: int
    activation: str
    period: int  # 0 = never in context (a Transformer MLP); C = a CMS level
    objective: ObjectiveIR | None = None
    rule: RuleIR | None = None
    init: str = "learned"
    init_level: str | None = None
    reset: str = "never"
    flush: str = "carry"
    lifetime: str = "sequence"  # sequence | document | stream


@dataclass(frozen=True)
class PersistentIR(LevelIR):
    tokens: int


@dataclass(frozen=True)
class GradientMemoryIR:
    """A memory of the gradient stream (nlc.spec.optimizers.GradientMemory, same fields)."""

    memory: str  # matrix | mlp
    hidden: int
    objective: str  # dot | l2
    retention: float
    lr: float
    period: int  # optimizer steps between writes
    nesterov: bool
    bias_correction: bool
    output: str  # identity | newton_schulz
    ns_steps: int
    weight: float


@dataclass(frozen=True)
class GradientRuleIR:
    momenta: tuple[GradientMemoryIR, ...]
    second_moment: float | None  # its retention (bias-corrected); None: no second moment
    decay: str  # decoupled | l2
    scale: str  # none | match_adamw


@dataclass(frozen=True)
class OptimizerIR(LevelIR):
    rule: str  # the spec's rule (a preset runs as torch's optimizer where one exists)
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float
    grad_clip: float | None
    warmup: int
    schedule: str
    steps: int  # steps this level every ``steps`` optimizer steps
    matrices: GradientRuleIR | None = None  # the rule written out (nlc.spec.presets.expand)
    others: GradientRuleIR | None = None


@dataclass(frozen=True)
class LayerIR:
    """One layer instance in the unrolled model: ``kind`` level | parallel | context."""

    name: str  # unique instance name, e.g. "b0_r1_memory"
    kind: str
    levels: tuple[str, ...]  # the levels it applies (context: attention, memory[, persistent])
    combine: str  # parallel: sum | mean | learned | gate; else ""
    norm: str
    residual: bool
    segment: int | None  # context layers: tokens per attention segment (None: the memory's chunk)
    block: int
    repeat: int
    origin: str  # "file:line" of the layer in the YAML
    # transfer edges into this layer: (kind, source layer) with kind conditioning | backprop |
    # generation; the source is the nearest earlier layer of the edge's source level
    transfers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelIR:
    name: str
    vocab: int
    tokenizer: str
    width: int
    norm: str
    tie_embeddings: bool
    levels: dict[str, LevelIR]
    layers: tuple[LayerIR, ...]
    ordered: tuple[tuple[str, ...], ...]  # ordered levels, fastest first
    source_file: str
    overrides: tuple[str, ...] = ()  # the a.b=v / ~a.b overrides applied to source_file, in order
