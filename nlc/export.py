"""``nlc export``: a trained model as a folder that loads with torch and nlc's runtime alone.

The folder holds:

* ``model.py``: the generated source, exactly ``model.source`` of the compiled spec (the
  code ``nlc.compile`` runs; it imports only ``torch`` and ``nlc.runtime``);
* ``model.safetensors``: the checkpoint's weights, copied byte for byte;
* ``spec.yaml``: the resolved spec stored in the checkpoint (valid input to every nlc verb);
* ``README.md``: what it is and the few lines of Python that load it.

The checkpoint is validated as on any load (:func:`nlc.training.load_checkpoint`: files,
stored spec, tensor shapes) before anything is written. The folder is written complete
under a temporary name beside the target and renamed into place, so it appears whole or
not at all; an existing target is replaced only with ``force`` (moved aside, then removed).
A run that saves a new checkpoint while it is being exported is caught by the step
recorded in the copied weights, so the folder never mixes two checkpoints.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from safetensors import safe_open

from .errors import NLCError
from .files import fsync_path
from .status import BAD_INPUT
from .version import __version__

FILES = ("model.py", "model.safetensors", "spec.yaml", "README.md")


class ExportError(NLCError):
    """The target folder cannot be written, or the run changed while it was exported."""

    exit_status = BAD_INPUT


EXPORTED = ("model.py", "model.safetensors", "spec.yaml", "README.md")  # all an export folder holds


def export(run: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the export folder of the checkpoint at ``run`` (a run or checkpoint folder)
    to ``out``; returns ``out``. Raises :class:`nlc.training.CheckpointError` for a checkpoint
    that cannot be used and :class:`ExportError` for a target that exists (without
    ``force``) or is not a folder."""
    from .training.checkpoint import find_checkpoint, load_checkpoint  # lazy: keeps CLI startup free of torch

    out = Path(out)
    if out.exists() and not (out.is_dir() and force):
        raise ExportError(f"{out}: already exists" + (" (use --force to replace it)" if out.is_dir()
                                                      else " and is not a folder"))
    source = find_checkpoint(run).resolve()
    target = out.resolve()
    if target == source or target in source.parents or source in target.parents:
        raise ExportError(f"{out}: holds or lies inside the checkpoint being exported; choose another --out")
    if out.exists() and not {p.name for p in out.iterdir()} <= set(EXPORTED):
        raise ExportError(f"{out}: holds files that no export writes; --force replaces only an earlier "
                          "export (choose another --out)")
    model, meta = load_checkpoint(run, device="cpu")
    weights = source / "model.safetensors"

    def fill(folder: Path) -> None:
        shutil.copyfile(weights, folder / "model.safetensors")
        copied = _saved_step(folder / "model.safetensors")
        if copied is not None and copied != str(meta["step"]):
            raise ExportError(f"{run}: saved a new checkpoint while it was exported (step {meta['step']}, then "
                              f"{copied}); run nlc export again")
        (folder / "model.py").write_text(model.source, encoding="utf-8")
        (folder / "spec.yaml").write_text(meta["spec_yaml"], encoding="utf-8")
        (folder / "README.md").write_text(readme(model.spec.name, meta), encoding="utf-8")

    _write_folder(out, fill)
    return out


def _saved_step(file: Path) -> str | None:
    """The step nlc train recorded in a safetensors file's metadata (None if it recorded none)."""
    with safe_open(str(file), framework="pt") as handle:
        return (handle.metadata() or {}).get("nlc_step")


def _write_folder(out: Path, fill) -> None:
    """``fill`` a fresh temporary folder beside ``out``, fsync it, rename it to ``out``
    (an existing ``out`` is moved aside first and removed after)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp, old = out.parent / f".{out.name}.tmp-{tag}", out.parent / f".{out.name}.old-{tag}"
    tmp.mkdir()  # not mkdtemp: the folder gets the umask's permissions, like any other
    try:
        fill(tmp)
        for path in (*tmp.iterdir(), tmp):
            fsync_path(path)
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
        fsync_path(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def readme(name: str, meta: dict) -> str:
    """The export folder's README.md: what the files are and how to load them."""
    steps = f" of {meta['steps']}" if "steps" in meta else ""
    return f"""# {name}

Exported by nlc {__version__} from a checkpoint at step {meta['step']}{steps}
(spec sha256 `{meta['spec_sha256']}`).

| file | what it is |
|------|------------|
| `model.py` | the generated PyTorch module (imports only `torch` and `nlc.runtime`) |
| `model.safetensors` | the trained weights (the model's state dict) |
| `spec.yaml` | the resolved spec, valid input to nlc (`nlc train spec.yaml --out DIR`) |

## Load it (torch, safetensors and `pip install nlc` for its runtime; no compiler involved)

```python
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_model

folder = Path("path/to/this/folder")
source = importlib.util.spec_from_file_location("exported_model", folder / "model.py")
module = importlib.util.module_from_spec(source)
source.loader.exec_module(module)

model = module.Model().eval()
load_model(model, str(folder / "model.safetensors"))
tokens = torch.tensor([[72, 101, 108, 108, 111]])  # (batch, time) token ids of the spec's tokenizer
with torch.no_grad():
    logits, state = model(tokens)  # logits (batch, time, vocab); pass `state` on to continue the sequence
```

The tokenizer is `model.tokenizer` in `spec.yaml` (`bytes`: token id = byte value).
"""
