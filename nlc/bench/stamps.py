"""What a bench unit ran and when: the digest of its resolved spec (a unit is redone when its
spec changes) and UTC time stamps (the run's span counts resumed units too)."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from ..graph.validate import load_spec
from ..spec.load import spec_to_yaml
from .plan import BenchModel


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def span_seconds(entries) -> float:
    """Seconds from the first unit's start to the last unit's finish (resumed runs included)."""
    starts = [datetime.fromisoformat(e["started"]) for e in entries]
    ends = [datetime.fromisoformat(e["finished"]) for e in entries]
    return (max(ends) - min(starts)).total_seconds()


def spec_digest(model: BenchModel) -> str:
    """A digest of the model's resolved spec (its file and every file it extends)."""
    return hashlib.sha256(spec_to_yaml(load_spec(model.path)).encode()).hexdigest()
