"""``nlc.compile`` (:func:`compile_spec`): spec -> IR -> generated source -> a live ``nn.Module``.

The model is built by executing the emitted source (registered with ``linecache`` so a
traceback shows the generated line and its comment naming the spec level), so the code
``nlc compile --emit`` writes is exactly the code that runs.
"""
from __future__ import annotations

import hashlib
import linecache
import sys
import types
from pathlib import Path
from typing import Literal

import torch

from .lower.emit import emit
from .errors import NLCError
from .graph.build import build_graph
from .ir.resolve import resolve
from .runtime.model import locate_error
from .spec import Spec
from .graph.validate import load_spec


class CompileError(NLCError):
    """Lowering failed; the message names the spec level and YAML line."""


def load_source(source: str) -> types.ModuleType:
    """Execute generated source as a module named after the sha256 of the source.

    Neither the module name nor the traceback file name comes from the spec (the spec's
    name is user text); the same source always gets the same module, so recompiling one
    spec replaces its ``sys.modules`` and ``linecache`` entries instead of adding more.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    module_name = f"nlc_generated_{digest}"
    filename = f"<nlc generated {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own generated code
    return module


def compile_spec(
    spec: Spec | str | Path,
    *,
    overrides: tuple[str, ...] | list[str] = (),
    compile: Literal[None, "default", "fullgraph"] = None,  # noqa: A002
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
):
    """Compile a spec (a :class:`Spec`, a file, a bundled name such as ``"hope"``, or YAML
    text: :func:`nlc.spec.load.spec_source` tells them apart) into a model.

    The model is an :class:`~nlc.runtime.model.NLCModel` with its declared ``.spec``, ``.ir``,
    ``.source`` (the generated Python), ``.graph`` (the level graph) and ``.schedule``
    (:class:`~nlc.schedule.UpdateSchedule`, the generated ``Model.SCHEDULE``).
    ``compile="default"`` runs the model's ``run`` (one pass over a segment; the
    teach-signal loop stays in Python) through ``torch.compile``; with task-driven CMS
    levels each teach segment's chunk phase (and its pending sums' autograd state) is a
    graph of its own, so a model such as HOPE compiles several graphs until dynamo's
    recompile limit and runs the remaining phases eagerly;
    ``"fullgraph"`` also forbids graph breaks. Parameters are
    initialised from ``seed`` (default: the spec's ``train.seed``).
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    ir = resolve(spec)
    source = emit(ir)
    module = load_source(source)
    try:
        torch.manual_seed(spec.train.seed if seed is None else seed)
        model = module.Model()
    except NLCError:
        raise
    except Exception as err:  # noqa: BLE001 - lowering errors are re-raised with the spec location
        raise CompileError(f"cannot lower spec '{ir.name}': {locate_error(module.Model, err)}") from err
    model.record_provenance(spec=spec, ir=ir, source=source, graph=build_graph(spec))
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    if compile is not None:
        model.use_torch_compile(fullgraph=compile == "fullgraph")
    return model
