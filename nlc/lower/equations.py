"""The paper equations a resolved level implements, for the comments of the emitted source.

One citation form (docs/equations.md has the full table, with the function and the test of
each row): ``NL-arXiv Eq. N``, ``NL-NeurIPS Eq. N``, ``Titans Eq. N``, ``MIRAS Eq. N``,
``ATLAS §N``, ``TTT §N``.
"""
from __future__ import annotations

from ..ir.nodes import AttentionIR, LevelIR, MemoryIR, MLPIR, PersistentIR


def equations(level: LevelIR, *, self_modifying: bool = False, component: bool = False) -> str:
    """What ``level`` computes and where the papers write it, e.g. ``"delta rule, NL-arXiv Eq. 65"``.
    ``self_modifying``: the main memory of a HOPE pattern; ``component``: a memory that
    generates another memory's keys, values or knobs (NL-arXiv Eq. 79)."""
    if isinstance(level, AttentionIR):
        return "softmax attention, NL-arXiv Eq. 62" if level.window is None else \
            "sliding-window attention, NL-arXiv Eq. 63"
    if isinstance(level, PersistentIR):
        return "persistent memory, Titans Eq. 19"
    if isinstance(level, MLPIR):
        if not level.period:
            return "MLP, written by the outer optimizer only (NL-arXiv §5)"
        nested = "; nested: starts from its slower level, NL-arXiv Eq. 72" if level.init == "from" else ""
        return f"CMS level, NL-arXiv Eqs. 70-71{nested}"
    assert isinstance(level, MemoryIR)
    return "; ".join(_memory_parts(level, self_modifying, component))


def _memory_parts(m: MemoryIR, self_modifying: bool, component: bool) -> list[str]:
    rule, objective = m.rule, m.objective
    if component:
        parts = ["generates a role of the self-modifying memory, NL-arXiv Eq. 79"]
    elif self_modifying:
        parts = ["self-modifying memory, NL-arXiv Eqs. 83-91 (read before write: Eq. 94)"]
    elif m.memory == "matrix":
        parts = [{"gd": "Hebbian memory (linear attention), NL-arXiv Eq. 64",
                  "delta": "delta rule, NL-arXiv Eq. 65",
                  "dgd": "DGD, NL-arXiv Eqs. 92-93",
                  "momentum": "gradient step with momentum, Titans Eqs. 9-10"}.get(rule.kind, f"{rule.kind} rule")]
    else:
        parts = [f"deep memory (MLP of depth {m.depth}), Titans Eqs. 8 and 12"]
        if rule.kind == "momentum":
            parts.append("momentum, Titans Eqs. 9-10")
        elif rule.kind == "dgd":
            parts.append("DGD preconditioner, NL-arXiv Eq. 88")
    if self_modifying or component:
        parts.append("DGD, NL-arXiv Eq. 88" if rule.kind == "dgd" else "GD in place of DGD (Table 6)")
        if rule.momentum is not None:
            parts.append("momentum, Titans Eqs. 9-10")
    if rule.retention is not None and rule.retention.complement:
        parts.append("forget gate, Titans Eqs. 13-14")
    if objective.kind == "huber":
        parts.append("Huber objective, MIRAS Eq. 14" + (" (data-dependent delta: Yaad)"
                                                        if objective.delta.kind != "constant" else ""))
    elif objective.kind == "lp":
        parts.append(f"l{objective.p:g} objective (MIRAS)")
    if objective.window > 1:
        parts.append(f"Omega rule over {objective.window} tokens, NL-arXiv Eq. 68")
    if rule.retention_kind == "kl":
        parts.append("KL retention (Memora), MIRAS Eq. 21")
    elif rule.retention_kind in ("lq", "elastic"):
        parts.append(f"{rule.retention_kind} retention (MIRAS)")
    if rule.ns_steps:
        parts.append(f"Muon output ({rule.ns_steps} Newton-Schulz steps), NL-NeurIPS Eq. 24")
    if m.features is not None:
        parts.append(f"{m.features.kind} feature map of degree {m.features.degree}, ATLAS §3")
    if m.norm == "layernorm":
        parts.append("LayerNorm'd output, TTT §2")
    if rule.reduce == "mean":
        parts.append("mean over the chunk, TTT §2")
    return parts
