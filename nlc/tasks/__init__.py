"""Synthetic evaluation tasks, faithful to their reference definitions (docs/tasks.md).

Each generator is deterministic given a ``torch.Generator`` (or an int seed), takes the
sequence length so evaluation can run at any multiple of the training length, and returns
a :class:`TaskBatch` of exactly that length; :func:`score` turns a model's logits on it
into an accuracy.

=====================  =====================================================  ============
generator              reference                                              scoring
=====================  =====================================================  ============
``mqar``               zoology ``multiquery_ar`` (MQAR)                        per token
``selective_copy``     state-spaces/s4 ``torch_copying_data`` (Mamba)          per token
``induction_heads``    H3/Safari induction heads (Mamba App. E.1)              per token
``passkey``            landmark-attention ``run_test.py`` (byte level)         per example
``niah``               RULER ``niah.py`` single needle (byte level)            per example
=====================  =====================================================  ============
"""
from __future__ import annotations

from .associative_recall import mqar
from .batch import IGNORE, TaskBatch, TaskError, score
from .copying import selective_copy
from .induction import induction_heads
from .niah import niah
from .passkey import passkey

__all__ = ["IGNORE", "TaskBatch", "TaskError", "induction_heads", "mqar", "niah", "passkey",
           "score", "selective_copy"]
