"""Training: the outer loop, per-level optimizers, exact-resume checkpoints, DDP.

:func:`.loop.train` is ``nlc.train(spec, data, out=...)``: it trains a spec on a corpus;
:mod:`.optim` holds one torch optimizer per optimizer level, stepped by the update
schedule; :mod:`.checkpoint` writes and reads atomic safetensors + JSON checkpoints
(:func:`.loading.load` is ``nlc.load``);
:mod:`.distributed` runs data parallel under ``torchrun``; :mod:`.metrics`,
:mod:`.progress` and :mod:`.plots` report. Contract: docs/training-contract.md.
"""
from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint, spec_hash
from .config import TrainConfig, TrainResult, spec_identity
from .loading import load
from .loop import train

__all__ = ["CheckpointError", "TrainConfig", "TrainResult", "load", "load_checkpoint", "read_meta",
           "save_checkpoint", "spec_hash", "spec_identity", "train"]
