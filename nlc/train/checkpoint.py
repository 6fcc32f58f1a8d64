"""Checkpoints: safetensors tensors plus a JSON sidecar, written atomically; never pickles.

A checkpoint is a folder:

* ``model.safetensors``: the model's state dict (``safetensors.torch.save_model``, which
  handles tied weights);
* ``optimizer.safetensors``: the optimizer levels' state and the gradients still being
  accumulated by levels with ``period: {steps: k}`` (flat tensors, see
  :meth:`nlc.train.optim.OuterLevels.state_tensors`);
* ``meta.json``: the resolved spec (YAML) and its sha256, the step, the schedule state,
  RNG states, the data's name and sha256, library versions (see :func:`run_meta`).

Atomicity: everything is written into a fresh temporary folder next to the target and
fsynced; then the current ``checkpoint/`` is renamed to ``.checkpoint.old``, the new
folder renamed to ``checkpoint/`` and the old one removed. A crash at any point leaves
either the previous complete checkpoint or the new one: if it happens between the two
renames, readers take ``.checkpoint.old`` and the next run (or save) moves it back
(:func:`recover`). A half-written temporary folder is never read; the writer removes it.
Readers never change a run folder (a reader may poll a run that is still writing).
``checkpoint-<step>/`` snapshots (``keep=True``) are hard links of the same files.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from ..errors import NLCError
from ..spec import Spec
from ..spec.load import spec_to_yaml
from ..version import __version__

LATEST = "checkpoint"
_OLD = ".checkpoint.old"
_TMP_PREFIX = ".checkpoint.tmp-"
FORMAT = 1


class CheckpointError(NLCError):
    """A checkpoint is missing, incomplete, or does not belong to the run asked for."""


def spec_hash(spec: Spec) -> str:
    """sha256 of the spec's canonical YAML (every default filled in, see ``nlc show``)."""
    return hashlib.sha256(spec_to_yaml(spec).encode()).hexdigest()


def versions() -> dict[str, str]:
    import safetensors

    return {"nlc": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "safetensors": safetensors.__version__}


# -- RNG states ------------------------------------------------------------------------
def rng_state() -> dict:
    """The torch CPU (and CUDA) generator states as hex strings (JSON-safe)."""
    state = {"torch": torch.get_rng_state().numpy().tobytes().hex()}
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray.fromhex(state["torch"]), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray.fromhex(s), dtype=torch.uint8)
                                      for s in state["cuda"]])


# -- writing ---------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_meta(folder: Path, meta: dict) -> None:
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def recover(out: Path) -> None:
    """Finish a swap a crash interrupted: ``.checkpoint.old`` without ``checkpoint/`` is the
    last complete checkpoint; a stale old copy or temporary folder is removed. Only the
    run that writes ``out`` calls this (readers never change a run folder)."""
    latest, old = out / LATEST, out / _OLD
    if old.exists() and not latest.exists():
        os.rename(old, latest)
    elif old.exists():
        shutil.rmtree(old)
    for tmp in out.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _write_folder(out: Path, fill: Callable[[Path], None]) -> Path:
    """A complete, fsynced temporary folder in ``out`` filled by ``fill``."""
    tmp = out / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # not mkdtemp: the folder gets the umask's permissions, like any other
    try:
        fill(tmp)
        for file in tmp.iterdir():
            _fsync(file)
        _fsync(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _install(out: Path, tmp: Path, name: str) -> Path:
    """Rename ``tmp`` to ``out/name``, moving an existing one aside first (see module doc)."""
    target, old = out / name, out / (_OLD if name == LATEST else f".{name}.old")
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    _fsync(out)
    shutil.rmtree(old, ignore_errors=True)
    return target


def save_checkpoint(out: str | Path, model: nn.Module, optimizer_state: dict[str, torch.Tensor],
                    meta: dict, *, keep: bool = False) -> Path:
    """Write ``out/checkpoint/`` atomically (and ``out/checkpoint-<step>/`` when ``keep``).

    ``meta`` must hold ``step``; ``optimizer_state`` is a flat name -> tensor map.
    Returns the path of ``checkpoint/``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recover(out)
    step_meta = {"format": "pt", "nlc_step": str(meta["step"])}

    def fill(folder: Path) -> None:
        save_model(model, str(folder / "model.safetensors"), metadata=step_meta)
        save_file(optimizer_state, str(folder / "optimizer.safetensors"), metadata=step_meta)
        write_meta(folder, {"format": FORMAT, **meta})
        mode = (folder / "meta.json").stat().st_mode & 0o777  # safetensors writes 0600 files:
        for name in ("model.safetensors", "optimizer.safetensors"):  # give them the usual mode
            os.chmod(folder / name, mode)

    latest = _install(out, _write_folder(out, fill), LATEST)
    if keep:
        def link(folder: Path) -> None:
            for file in latest.iterdir():
                os.link(file, folder / file.name)

        _install(out, _write_folder(out, link), f"{LATEST}-{meta['step']}")
    return latest


# -- reading ---------------------------------------------------------------------------
def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder at ``path``: the folder itself, or ``path/checkpoint`` (or,
    while a save is between its two renames, ``path/.checkpoint.old``). Changes nothing."""
    path = Path(path)
    if path.is_dir() and not (path / "meta.json").exists():
        latest, old = path / LATEST, path / _OLD
        path = old if not (latest / "meta.json").exists() and (old / "meta.json").exists() else latest
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected a folder with meta.json, "
                              "model.safetensors and optimizer.safetensors, or a run folder holding checkpoint/)")
    return path


def read_meta(path: str | Path) -> dict:
    folder = find_checkpoint(path)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {folder / 'meta.json'}: {err}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {meta.get('format')!r} is not {FORMAT} "
                              f"(written by nlc {meta.get('versions', {}).get('nlc', '?')}; this is nlc {__version__})")
    return meta


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``model.safetensors`` into ``model`` (strict: every tensor must match)."""
    folder = find_checkpoint(path)
    device = next(model.parameters()).device
    load_model(model, folder / "model.safetensors", strict=True,
               device=device.index if device.type == "cuda" and device.index is not None else device.type)


def load_optimizer_state(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(find_checkpoint(path) / "optimizer.safetensors")


def load_checkpoint(path: str | Path, *, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model from the spec stored in the checkpoint and load its weights.

    ``path`` is a checkpoint folder or a run folder (its ``checkpoint/``). Returns
    ``(model, meta)``; the model has ``.spec``, ``.schedule`` etc. like any compiled one.
    """
    from ..compiler import compile as compile_spec
    from ..spec import load_spec

    meta = read_meta(path)
    spec = load_spec(meta["spec_yaml"])
    if spec_hash(spec) != meta["spec_sha256"]:
        raise CheckpointError(f"{find_checkpoint(path)}: the stored spec hashes to {spec_hash(spec)}, not the "
                              f"recorded {meta['spec_sha256']} (the checkpoint was edited or written by an "
                              "incompatible nlc version)")
    model = compile_spec(spec, device=device)
    load_weights(model, path)
    return model, meta
