"""Optimizer levels as memories of the gradient stream (NL-NeurIPS §2.3, NL-arXiv §7.2):
:class:`GradientMemories` runs a rule written out by :func:`nlc.spec.presets.expand`;
:func:`newton_schulz` is Muon's orthogonalising output."""
from __future__ import annotations

from .gradient_memories import GradientMemories
from ..primitives.newton_schulz import newton_schulz

__all__ = ["GradientMemories", "newton_schulz"]
