"""Resource limits applied to untrusted input before anything is allocated (no torch import).

Every spec, override and run folder is data from a user (docs/design.md, "Security and
trust"): a file may be huge, a YAML document may nest or alias without end, and a valid spec
may ask for more parameters or in-context state than the machine holds. Each stage reads
the one :class:`Limits` in force (:func:`current`); the CLI raises them with
``nlc --max-spec-bytes N --max-model-bytes N VERB ...`` and the Python API with
:func:`raised` (a context manager) or :func:`set_limits`.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator

__all__ = ["Limits", "current", "set_limits", "raised"]


@dataclass(frozen=True)
class Limits:
    """``spec_bytes``: largest YAML file (or text) read; ``yaml_depth``: deepest nesting of
    mappings and sequences; ``yaml_nodes``: most YAML nodes in one document, counted after
    alias expansion (so a "billion laughs" document is refused, not expanded);
    ``model_bytes``: largest estimated fp32 size of a model's parameters plus its in-context
    state for one training batch."""

    spec_bytes: int = 4 * 2**20
    yaml_depth: int = 64
    yaml_nodes: int = 100_000
    model_bytes: int = 8 * 2**30


_current = Limits()


def current() -> Limits:
    """The limits in force."""
    return _current


def set_limits(**changes: int) -> Limits:
    """Replace some limits for the rest of the process; returns the previous ones."""
    global _current
    previous = _current
    _current = dataclasses.replace(_current, **changes)
    return previous


@contextlib.contextmanager
def raised(**changes: int) -> Iterator[Limits]:
    """``with nlc.limits.raised(model_bytes=2**36): ...``: other limits inside the block."""
    previous = set_limits(**changes)
    try:
        yield _current
    finally:
        set_limits(**dataclasses.asdict(previous))
