"""Experiment trackers: the records of ``metrics.jsonl`` sent to TensorBoard, MLflow or W&B.

``nlc.train(..., loggers=("tensorboard",))`` (``nlc train --logger tensorboard``) opens one
:class:`Tracker` per name; :class:`~nlc.training.metrics.MetricsLog` hands every record it writes
to ``metrics.jsonl`` to each of them, so a tracker shows exactly what the file holds. At
each validation the loop also sends a ``norm`` record: the L2 norm of each spec level's
parameters (``norm/<level>``; the embedding, final norm and head, which belong to no named
level, as ``norm/embed_head``). The resolved spec goes to the tracker as text and the run's
settings as parameters when the run starts.

A record becomes scalars named ``<kind>/<field>`` (``train/loss``, ``val/bpb``,
``train/lr/<optimizer level>``, ``norm/<level>``) at the record's ``step``; text fields
(the ``non_finite`` message) go as text or tags, and null fields are skipped.

Each tracker's package is an optional extra, imported when the tracker is opened (before
training starts), so a missing one fails at once with the pip command that installs it:

* ``tensorboard`` (``pip install 'nlc[tensorboard]'``): event files in ``RUN/tensorboard``
  (``tensorboard --logdir RUN``);
* ``mlflow`` (``pip install 'nlc[mlflow]'``): a local store in the run folder, offline
  (``RUN/mlflow.db``, artifacts in ``RUN/mlartifacts``; ``mlflow ui --backend-store-uri
  sqlite:///RUN/mlflow.db``; MLflow 3 refuses its old ``mlruns`` file store unless
  ``MLFLOW_ALLOW_FILE_STORE`` is set), or the server ``MLFLOW_TRACKING_URI`` names when it
  is set; one MLflow run per training process, in the experiment ``nlc``;
* ``wandb`` (``pip install 'nlc[wandb]'``): ``wandb.init`` with files under ``RUN``, mode
  from ``WANDB_MODE`` (default ``online``; ``offline`` or ``disabled`` need no account).

Trackers run on rank 0 only, like the metrics file.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch

from ..errors import NLCError
from ..status import BAD_INPUT

SHARED_LEVEL = "embed_head"  # the name of parameters_by_level()'s "" group in norm/<level>


class TrackerError(NLCError):
    """An unknown logger name, or a logger whose package is not installed."""

    exit_status = BAD_INPUT


class Tracker(Protocol):
    """What the training loop needs from an experiment tracker."""

    def start(self, run_dir: Path, spec_yaml: str, config: dict) -> None: ...
    def log(self, record: dict) -> None: ...
    def close(self) -> None: ...


def flatten(record: dict) -> tuple[int, dict[str, float], dict[str, str]]:
    """``(step, scalars, texts)`` of a metrics record: nested dicts joined with ``/`` under
    ``<kind>/``; numbers as scalars, strings as texts, nulls and booleans dropped."""
    kind, step = record.get("kind", "metric"), int(record.get("step", 0))
    scalars: dict[str, float] = {}
    texts: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key or SHARED_LEVEL}", inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[prefix] = float(value)
        elif isinstance(value, str):
            texts[prefix] = value

    for key, value in record.items():
        if key not in ("kind", "step"):
            walk(f"{kind}/{key}", value)
    return step, scalars, texts


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrackerError(f"the {extra} logger needs the {module.split('.')[0]} package: "
                           f"pip install 'nlc[{extra}]'") from None


class TensorBoardTracker:
    """Scalars and text in ``RUN/tensorboard`` via ``torch.utils.tensorboard``."""

    def __init__(self) -> None:
        _require("tensorboard", "tensorboard")
        self._writer_class = _require("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.writer = None

    def start(self, run_dir: Path, spec_yaml: str, config: dict) -> None:
        self.writer = self._writer_class(log_dir=str(Path(run_dir) / "tensorboard"))
        self.writer.add_text("spec", "```yaml\n" + spec_yaml + "\n```")  # markdown: keep the indentation
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, record: dict) -> None:
        step, scalars, texts = flatten(record)
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        for name, text in texts.items():
            self.writer.add_text(name, text, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MLflowTracker:
    """One MLflow run: params from the config, ``spec.yaml`` as an artifact, metrics by step.

    Uses an ``MlflowClient`` bound to the store rather than ``mlflow.set_tracking_uri``, so
    the user's process keeps its own global MLflow settings (and a run folder's store stays
    in that folder)."""

    def __init__(self) -> None:
        self._mlflow = _require("mlflow", "mlflow")
        self.client, self.run_id = None, None

    def start(self, run_dir: Path, spec_yaml: str, config: dict) -> None:
        run_dir = Path(run_dir).resolve()
        server = os.environ.get("MLFLOW_TRACKING_URI")
        self.client = self._mlflow.tracking.MlflowClient(tracking_uri=server or f"sqlite:///{run_dir / 'mlflow.db'}")
        experiment = self.client.get_experiment_by_name("nlc")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            "nlc", artifact_location=None if server else (run_dir / "mlartifacts").as_uri())
        run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"nlc.run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        params = [self._mlflow.entities.Param(k, str(v)[:500]) for k, v in config.items()]
        self.client.log_batch(self.run_id, params=params)
        self.client.log_text(self.run_id, spec_yaml, "spec.yaml")

    def log(self, record: dict) -> None:
        step, scalars, texts = flatten(record)
        timestamp = self._mlflow.utils.time.get_current_time_millis()
        metrics = [self._mlflow.entities.Metric(k, v, timestamp, step) for k, v in scalars.items()]
        tags = [self._mlflow.entities.RunTag(k, v[:5000]) for k, v in texts.items()]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id)


class WandbTracker:
    """A W&B run (``WANDB_MODE``: online by default) with the config and the spec text."""

    def __init__(self) -> None:
        self._wandb = _require("wandb", "wandb")
        self.run = None

    def start(self, run_dir: Path, spec_yaml: str, config: dict) -> None:
        self.run = self._wandb.init(mode=os.environ.get("WANDB_MODE", "online"), dir=str(run_dir),
                                    name=Path(run_dir).name, config={**config, "spec_yaml": spec_yaml})

    def log(self, record: dict) -> None:
        step, scalars, texts = flatten(record)
        self.run.log({**scalars, **texts}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


def open_trackers(names: Iterable[str]) -> list[Tracker]:
    """One tracker per name (duplicates once), each package imported now: a missing one or
    an unknown name raises :class:`TrackerError` before any training."""
    trackers = []
    for name in dict.fromkeys(names):
        if name not in TRACKERS:
            raise TrackerError(f"unknown logger {name!r}; choose from: {', '.join(TRACKERS)}")
        trackers.append(TRACKERS[name]())
    return trackers


def level_norms(model) -> dict[str, float]:
    """The L2 norm of each spec level's parameters (``""``, the embedding, final norm and
    head, as :data:`SHARED_LEVEL`), one device sync for all."""
    groups = {level or SHARED_LEVEL: params for level, params in model.parameters_by_level().items() if params}
    norms = [torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in ps])) for ps in groups.values()]
    return dict(zip(groups, torch.stack(norms).tolist())) if norms else {}
