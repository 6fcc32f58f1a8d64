"""``nlc.load(PATH_OR_NAME)``: a model to use, in one line, from wherever it is.

``source`` is tried in this order:

1. an existing folder: a checkpoint folder or a run folder holding ``checkpoint/``
   (:func:`nlc.training.checkpoint.load_checkpoint`: the stored spec, validated again, and the
   trained weights, every file checked first);
2. anything else :func:`nlc.spec.load.spec_source` names (a spec file or a bundled spec
   name, the rule every verb uses; never YAML text): compiled with fresh weights.

Fresh weights come from the spec's ``train.seed`` (as :func:`nlc.compile` draws them), so
two loads of the same name give the same model. A name that is neither is refused with
``SpecInputError`` (exit 2) and the closest bundled name. The model is always returned in
eval mode, with ``.spec``; ``model.train()`` to train it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..compiler import compile_spec
from ..spec.load import spec_source
from .checkpoint import load_checkpoint


def load(source: str | Path, *, device: str | torch.device | None = None) -> nn.Module:
    """The model at ``source`` (a run folder, a checkpoint folder, a spec file or a bundled
    spec name; see the module docstring), on ``device``, in eval mode, with ``.spec``."""
    path, kind = Path(source), _kind(source)
    if kind == "dir" or (kind == "file" and path.suffix not in (".yaml", ".yml")):
        return load_checkpoint(path, device=device)[0]  # a file such as model.safetensors: it names the folder
    found, _ = spec_source(source, allow_text=False)
    return compile_spec(found, device=device).eval()


def _kind(source: str | Path) -> str:
    """``"dir"``, ``"file"`` (anything else that exists) or ``""`` (missing, or no possible
    path: too long, a NUL byte, ...)."""
    try:
        path = Path(source)
        return "dir" if path.is_dir() else "file" if path.exists() else ""
    except (OSError, ValueError):
        return ""
