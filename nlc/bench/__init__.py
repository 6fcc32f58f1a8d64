"""Benchmarks that train models: the paper comparison (``nlc bench paper``).

:mod:`.plan` names the models and the run sizes, :mod:`.params` matches parameter counts,
:mod:`.lm` trains and sweeps the language models, :mod:`.tasks` runs the retrieval,
MQAR and copying columns, :mod:`.run` drives one comparison, :mod:`.aggregate` and
:mod:`.summary` reduce seeds to ranked means, :mod:`.plots` and :mod:`.report` write
``docs/results/*.png`` and ``docs/results.md``.
"""
from __future__ import annotations

from .params import ParamMatch, ParamMatchError, match_params, spec_params
from .plan import MODELS, MODES, BenchModel, BenchPlan, plan_for

__all__ = ["MODELS", "MODES", "BenchModel", "BenchPlan", "ParamMatch", "ParamMatchError", "match_params",
           "plan_for", "spec_params"]
