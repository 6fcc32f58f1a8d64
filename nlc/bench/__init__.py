"""Benchmarks that train models: the paper comparison (``nlc bench paper``).

:mod:`.plan` names the models and the run sizes (:mod:`.budget` estimates their wall
time), :mod:`.params` matches parameter counts, :mod:`.lm` trains the language models,
:mod:`.lr_grid` and :mod:`.tune_split` choose each model's lr on a held-apart split,
:mod:`.tasks` scores zero-shot retrieval, :mod:`.task_protocol`, :mod:`.synthetic` and
:mod:`.calibration` train MQAR, selective copying and passkey at a budget calibrated on
the Transformer, :mod:`.run` drives one comparison (:mod:`.jobs`: resumable units),
:mod:`.aggregate` and :mod:`.summary` reduce seeds to medians, divergence rates and ranks,
:mod:`.ordering` checks the paper's orderings (agree / reversed / unresolved), and
:mod:`.plots` and :mod:`.report` write the figures and ``results.md`` into the run folder
(or where ``--report`` says).
"""
from __future__ import annotations

from .params import ParamMatch, ParamMatchError, match_params, spec_params
from .plan import MODELS, MODES, BenchModel, BenchPlan, plan_for

__all__ = ["MODELS", "MODES", "BenchModel", "BenchPlan", "ParamMatch", "ParamMatchError", "match_params",
           "plan_for", "spec_params"]
