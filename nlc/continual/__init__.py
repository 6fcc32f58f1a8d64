"""Continual learning: stages in sequence, the stage x task matrix R, its metrics.

``run_continual`` (:mod:`.stream`) trains one model on language domains in sequence and
scores every domain after each stage, with the naive fine-tuning and joint-training
baselines; ``run_genres`` (:mod:`.genres`) is class-incremental genre classification on
the Brown corpus; ``cl_metrics`` (:mod:`.metrics`) gives ACC, BWT and forgetting of R;
:mod:`.report` writes ``continual.json`` and the ``R.png`` heatmap; ``deploy``
(:mod:`.deployment`) streams an unseen domain through a frozen model whose levels learn at
test time, with dynamic evaluation (:mod:`.dynamic_eval`) as its baseline.
"""
from __future__ import annotations

from .deployment import Deployment, Text, deploy
from .domains import DEFAULT_STREAM, TokenSplits
from .dynamic_eval import DynamicEval
from .genres import run_genres
from .metrics import ContinualError, cl_metrics
from .report import matrix_table, save_runs, summary_table
from .stream import ContinualRun, run_continual

__all__ = ["DEFAULT_STREAM", "ContinualError", "ContinualRun", "Deployment", "DynamicEval", "Text", "TokenSplits",
           "cl_metrics", "deploy", "matrix_table", "run_continual", "run_genres", "save_runs", "summary_table"]
