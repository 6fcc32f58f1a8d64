"""Optimizer levels: an outer level whose state is made of memories of the gradient stream.

NL-NeurIPS §2.3 reads an optimizer as nested associative memories: momentum is a memory
that compresses the gradients (Eqs. 17-18), a memory with an L2 objective gives delta
momentum (Eq. 22), a Newton-Schulz output gives Muon (Eq. 24); NL-arXiv §7.2 (Alg. 1) puts
CMS on the gradient stream (M3). The language writes one in the terms of the in-context
memories: each *gradient memory* has an objective, a retention, a learning rate, its own
period (in optimizer steps) and an output map; a second moment (Adam's v) may divide the
update.

``rule`` names a preset; ``rule: memories`` spells the memories out (``matrices:`` for every
2-D parameter but the token embedding and an untied head: projections, MLP and knob
weights, convolution kernels, persistent tokens, 2-D initial states; ``others:`` for the
rest: embedding, head, norms, biases, vector knobs, 3-D initial states; ``others``
defaults to the matrices' rule, a 1-D parameter read as one row). Every preset expands into that
form (:func:`nlc.optim.presets.expand`; ``nlc show SPEC --expand`` prints it).

==========  ===========================================================================
rule        expands to (per parameter, g its gradient)
==========  ===========================================================================
sgd         ``momentum: 0`` plain SGD; else m <- μ m + g, update m (``nesterov``: g + μ m)
adam/adamw  m <- β1 m + (1-β1) g and v <- β2 v + (1-β2) g², bias-corrected, m / (√v + ε)
muon        matrices: m <- μ m + (1-μ) g, Newton-Schulz of m (``nesterov``: of the
            look-ahead), RMS-matched to AdamW; others: AdamW
m3          matrices: fast m1 every step and slow m2 every ``slow_period`` steps (on the
            mean gradient since), both orthogonalised, (O1 + α O2) / (√v + ε); others: AdamW
dmgd        matrices: an MLP momentum (``hidden``) on the dot objective, retention
            ``momentum``, lr 1 - momentum (deep momentum GD); others: AdamW
==========  ===========================================================================
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, model_serializer, model_validator

from ..errors import FieldError
from .values import MAX_STEPS, Period, Strict

Beta = Annotated[float, Field(ge=0, lt=1)]  # a moment's decay: 1 or more never forgets
MAX_NS_STEPS = 20
RULES = ("adamw", "adam", "sgd", "muon", "m3", "dmgd", "memories")
# the fields each rule reads beyond the common ones (lr, weight_decay, grad_clip, ...)
RULE_FIELDS = {
    "adamw": ("betas", "eps"), "adam": ("betas", "eps"), "sgd": ("momentum", "nesterov"),
    "muon": ("momentum", "nesterov", "ns_steps", "betas", "eps"),
    "m3": ("betas", "eps", "ns_steps", "slow_period", "slow_beta", "slow_weight"),
    "dmgd": ("momentum", "hidden", "betas", "eps"),
    "memories": ("matrices", "others", "eps"),
}
OPTIONAL = tuple(sorted({f for fields in RULE_FIELDS.values() for f in fields}))


class GradientMemory(Strict):
    """A memory of the gradient stream (a momentum level). Per write, with g the gradient
    (the mean gradient since the last write when ``period`` > 1)::

        dot (NL-NeurIPS Eqs. 17-18):  m <- retention m + lr g
        l2  (NL-NeurIPS Eq. 22, delta momentum): m <- m (retention I - lr ĝᵀĝ) + lr g,   ĝ = g / ||g||_F

    read as m (``nesterov``: lr g + retention m, the look-ahead), divided by 1 - retention^n
    after n writes with ``bias_correction``, then mapped by ``output`` (``newton_schulz``:
    Muon's orthogonalisation, NL-NeurIPS Eq. 24) and weighted by ``weight`` in the update.

    ``memory: mlp`` is deep momentum (DMGD, NL-NeurIPS Eq. 23): per parameter, read as rows u_r, an
    MLP memory u -> W2 h(u), keys h(u) = tanh(W1 u / ||u||) / √hidden, whose weights learn
    by GD on the objective over the gradient rows (dot: W2 <- retention W2 + lr Σ_r u_r h_rᵀ,
    and W1 along its gradient; l2: the delta rule on W2 with keys h_r), and read at the
    current gradient: the update is the past gradients weighted by their keys' likeness to
    the current one."""

    memory: Literal["matrix", "mlp"] = "matrix"
    hidden: PositiveInt = Field(default=32, le=4096)  # the MLP memory's hidden width
    objective: Literal["dot", "l2"] = "dot"
    retention: float = Field(default=0.9, ge=0, le=1)
    lr: float = Field(default=1.0, gt=0, le=10)
    period: PositiveInt = Field(default=1, le=MAX_STEPS)
    nesterov: bool = False
    bias_correction: bool = False
    output: Literal["identity", "newton_schulz"] = "identity"
    ns_steps: PositiveInt = Field(default=5, le=MAX_NS_STEPS)
    weight: float = Field(default=1.0, gt=0, le=100)

    @model_validator(mode="after")
    def _runs(self) -> "GradientMemory":
        if self.bias_correction and self.retention >= 1:
            raise FieldError("bias_correction", "a memory that never forgets (retention 1) has nothing to "
                             "correct: 1 - retention^n is 0", hint="use a retention below 1, or remove it")
        if self.objective == "l2" and self.lr > 1 + self.retention:
            raise FieldError("lr", f"the l2 write multiplies the memory along the gradient by retention - lr = "
                             f"{self.retention - self.lr:g}: beyond -1 it grows at every write and diverges",
                             hint=f"use lr <= {1 + self.retention:g}")
        if self.memory == "mlp":
            # a field at its default means "not used" (a dumped spec writes it out): only a value refuses
            used = [f for f in ("nesterov", "bias_correction", "output", "ns_steps")
                    if getattr(self, f) != type(self).model_fields[f].default]
            if used:
                raise FieldError(used[0], f"an MLP gradient memory reads its weights at the current gradient: "
                                 f"'{used[0]}' belongs to a matrix memory", hint=f"remove '{used[0]}'")
        return self


class SecondMoment(Strict):
    """Adam's second moment, v <- retention v + (1 - retention) g², divided by
    1 - retention^n after n writes: the update is divided by √v + eps elementwise."""

    retention: Beta = 0.999


class GradientRule(Strict):
    """What an optimizer level does to one group of parameters: the sum of its gradient
    memories' outputs (none: the gradient itself), divided by the second moment if any;
    ``decay``: weight decay decoupled from the gradient (AdamW) or added to it (L2)."""

    momenta: list[GradientMemory] = Field(default_factory=list, max_length=8)
    second_moment: SecondMoment | None = None
    decay: Literal["decoupled", "l2"] = "decoupled"
    scale: Literal["none", "match_adamw"] = "none"  # an orthogonalised update's RMS matched to AdamW's

    @model_validator(mode="after")
    def _scaled(self) -> "GradientRule":
        if self.scale == "match_adamw" and not any(m.output == "newton_schulz" for m in self.momenta):
            raise FieldError("scale", "match_adamw scales an orthogonalised (Newton-Schulz) update to AdamW's RMS, "
                             "and no memory here has that output", hint="remove 'scale', or give a memory "
                             "output: newton_schulz")
        return self


class OptimizerLevel(Strict):
    """An outer level: an optimiser on the optimizer-step clock (pre-training is the
    outermost level, NL-arXiv §6). ``period: {steps: k}`` steps its parameter
    group every k optimizer steps, accumulating gradients in between. ``rule`` is a preset
    or ``memories`` (module doc); a field the rule does not read is an error, and a level
    dumps only the fields its rule reads."""

    type: Literal["optimizer"]
    description: str | None = None
    rule: Literal["adamw", "adam", "sgd", "muon", "m3", "dmgd", "memories"] = "adamw"
    lr: float = Field(default=3e-4, gt=0, le=10)  # a typo guard; lr_warnings flags Adam above 0.1
    betas: tuple[Beta, Beta] = Field(default=(0.9, 0.95), strict=False)  # YAML gives a list
    weight_decay: float = Field(default=0.1, ge=0, lt=1)
    # Adam divides by sqrt(v) + eps, and v underflows to 0 in fp32 for gradients below ~1e-21:
    # an eps below 1e-12 then turns a tiny gradient into a huge step (1e-323 gave NaN weights)
    eps: float = Field(default=1e-8, ge=1e-12, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    warmup: int = Field(default=0, ge=0, le=MAX_STEPS)
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    period: Period = Period(steps=1)
    momentum: Beta | None = None  # sgd: 0 (plain SGD); muon: 0.95; dmgd: 0.9
    hidden: PositiveInt = Field(default=32, le=4096)  # dmgd: the MLP memory's hidden width
    nesterov: bool | None = None  # sgd: False; muon: True
    ns_steps: PositiveInt = Field(default=5, le=MAX_NS_STEPS)
    slow_period: PositiveInt = Field(default=8, le=MAX_STEPS)  # m3: f
    slow_beta: Beta = 0.99  # m3: β3
    slow_weight: float = Field(default=1.0, ge=0, le=100)  # m3: α
    matrices: GradientRule | None = None
    others: GradientRule | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "OptimizerLevel":
        if self.period.steps is None:
            raise FieldError("period", "an optimizer level runs on the optimizer-step clock",
                             hint="write period: {steps: k}")
        foreign = [f for f in OPTIONAL if f in self.model_fields_set and f not in RULE_FIELDS[self.rule]]
        if foreign:
            readers = [r for r, fields in RULE_FIELDS.items() if foreign[0] in fields]
            raise FieldError(foreign[0], f"rule '{self.rule}' does not read '{foreign[0]}' (rules that do: "
                             f"{', '.join(readers)})", hint=f"remove '{foreign[0]}', or use one of those rules")
        if self.rule == "sgd" and self.nesterov and not self.momentum:
            raise FieldError("nesterov", "Nesterov's look-ahead needs momentum", hint="give momentum > 0, or remove "
                             "'nesterov'")
        if self.rule == "memories" and self.matrices is None:
            raise FieldError("matrices", "rule 'memories' spells out the gradient memories of the matrices",
                             hint="give matrices: {momenta: [...], second_moment: ...}, or use a preset rule")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        out = handler(self)
        return {k: v for k, v in out.items() if k not in OPTIONAL or k in RULE_FIELDS[self.rule]
                and (v is not None or k in self.model_fields_set)}
