"""Optimizer presets written out as gradient memories (:mod:`nlc.spec.optimizers`).

``expand(level)`` gives the ``rule: memories`` level that a preset stands for, with the
same lr, schedule, clipping and weight decay: the runtime builds every rule from this form
(``sgd``, ``adam`` and ``adamw`` run as torch's optimizers, which tests/train/test_optimizer_levels.py
checks against it), and ``nlc show SPEC --expand`` prints it. The equations are those of
:class:`~nlc.spec.optimizers.GradientMemory` (NL-NeurIPS Eqs. 17-24; M3: NL-arXiv Alg. 1).
"""
from __future__ import annotations

from .optimizers import GradientMemory, GradientRule, OptimizerLevel, SecondMoment


def expand(level: OptimizerLevel) -> OptimizerLevel:
    """``level`` as ``rule: memories`` (itself when it already is)."""
    if level.rule == "memories":
        return level.model_copy(update={"others": level.others or level.matrices})
    matrices, others = _RULES[level.rule](level)
    fields = {k: getattr(level, k) for k in ("type", "description", "lr", "weight_decay", "eps", "grad_clip",
                                             "warmup", "schedule", "period")}
    return OptimizerLevel(**fields, rule="memories", matrices=matrices, others=others)


def _adam(level: OptimizerLevel, decay: str = "decoupled") -> GradientRule:
    beta1, beta2 = level.betas
    first = [GradientMemory(retention=beta1, lr=_rest(beta1), bias_correction=True)] if beta1 > 0 else []
    return GradientRule(momenta=first, second_moment=SecondMoment(retention=beta2), decay=decay)


def _sgd(level: OptimizerLevel) -> tuple[GradientRule, GradientRule]:
    mu = level.momentum or 0.0
    momenta = [GradientMemory(retention=mu, lr=1.0, nesterov=bool(level.nesterov))] if mu > 0 else []
    rule = GradientRule(momenta=momenta, decay="l2")
    return rule, rule


def _muon(level: OptimizerLevel) -> tuple[GradientRule, GradientRule]:
    mu = 0.95 if level.momentum is None else level.momentum
    nesterov = True if level.nesterov is None else level.nesterov
    memory = GradientMemory(retention=mu, lr=_rest(mu), nesterov=nesterov, output="newton_schulz",
                            ns_steps=level.ns_steps)
    return GradientRule(momenta=[memory], scale="match_adamw"), _adam(level)


def _m3(level: OptimizerLevel) -> tuple[GradientRule, GradientRule]:
    beta1, beta2 = level.betas
    momenta = [GradientMemory(retention=beta1, lr=_rest(beta1), output="newton_schulz", ns_steps=level.ns_steps)]
    if level.slow_weight > 0:
        momenta.append(GradientMemory(retention=level.slow_beta, lr=_rest(level.slow_beta), period=level.slow_period,
                                      output="newton_schulz", ns_steps=level.ns_steps, weight=level.slow_weight))
    return GradientRule(momenta=momenta, second_moment=SecondMoment(retention=beta2)), _adam(level)


def _dmgd(level: OptimizerLevel) -> tuple[GradientRule, GradientRule]:
    mu = 0.9 if level.momentum is None else level.momentum
    memory = GradientMemory(memory="mlp", hidden=level.hidden, retention=mu, lr=_rest(mu))
    return GradientRule(momenta=[memory]), _adam(level)


def _rest(beta: float) -> float:
    """1 - beta, as written (0.1 for 0.9, not 0.09999999999999998)."""
    return round(1 - beta, 12)


_RULES = {
    "adamw": lambda lv: (_adam(lv),) * 2,
    "adam": lambda lv: (_adam(lv, "l2"),) * 2,
    "sgd": _sgd,
    "muon": _muon,
    "m3": _m3,
    "dmgd": _dmgd,
}
