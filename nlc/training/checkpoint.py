"""Checkpoints: safetensors tensors plus a JSON sidecar, written atomically; never pickles.

A checkpoint is a folder:

* ``model.safetensors``: the model's state dict (``safetensors.torch.save_model``, which
  handles tied weights);
* ``optimizer.safetensors``: the optimizer levels' state and the gradients still being
  accumulated by levels with ``period: {steps: k}`` (flat tensors, see
  :meth:`nlc.training.optim.OuterLevels.state_tensors`);
* ``meta.json``: the resolved spec (YAML) and its sha256, the step, the schedule state,
  RNG states, the data's name and sha256, library versions (written by :mod:`nlc.training.loop`);
* ``spec.yaml`` (when meta holds the spec): the same resolved spec as a file, every default
  filled in and no ``extends``, so ``nlc train checkpoint/spec.yaml`` trains it afresh and
  other tools read it as any spec. nlc itself reads the spec from meta.json (hashed).

Atomicity: everything is written into a fresh temporary folder next to the target and
fsynced; then the current ``checkpoint/`` is renamed to ``.checkpoint.old``, the new
folder renamed to ``checkpoint/`` and the old one removed. A crash at any point leaves
either the previous complete checkpoint or the new one: if it happens between the two
renames, readers take ``.checkpoint.old`` and the next run (or save) moves it back
(:func:`recover`). A half-written temporary folder is never read; the writer removes it.
Readers never change a run folder (a reader may poll a run that is still writing).
``checkpoint-<step>/`` snapshots (``keep=True``) are hard links of the same files.

Reading trusts nothing (a checkpoint may be truncated, edited or hostile): every file is
checked before torch sees it (:mod:`nlc.training.checkpoint_checks`: the safetensors header
against the file's size, each tensor's shape and dtype against the model the spec builds,
meta.json's entries and types), and the stored spec is validated again by the normal
loader from its YAML text. Each problem is one :class:`CheckpointError` line naming the file.
This module locates, writes and loads checkpoints; the checks are in that one.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

import safetensors
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from .. import limits
from ..compiler import compile_spec
from ..errors import NLCError
from ..files import fsync_path
from ..graph.validate import validate
from ..spec import Spec
from ..spec.load import spec_to_yaml
from ..spec.source import parse_yaml
from ..version import __version__
from ..runtime.lifetime import CLOCK
from .checkpoint_checks import (FILES, FORMAT, CheckpointError, Meta, NoCheckpointError, check_meta, match_model,
                                match_optimizer, tensor_index)

LATEST = "checkpoint"
_OLD = ".checkpoint.old"
_TMP_PREFIX = ".checkpoint.tmp-"


def spec_hash(spec: Spec) -> str:
    """sha256 of the spec's canonical YAML (every default filled in, see ``nlc show``)."""
    return hashlib.sha256(spec_to_yaml(spec).encode()).hexdigest()


def versions() -> dict[str, str]:
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
            fsync_path(file)
        fsync_path(tmp)
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
    fsync_path(out)
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
        if "spec_yaml" in meta:  # atomic with the rest: the whole folder is renamed into place
            (folder / "spec.yaml").write_text(_SPEC_HEADER.format(step=meta["step"]) + meta["spec_yaml"],
                                              encoding="utf-8")
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


_SPEC_HEADER = ("# The resolved spec of the run this checkpoint (step {step}) belongs to: self-contained, every\n"
                "# default filled in. Train it afresh: nlc train THIS_FILE --out DIR (nlc reads meta.json's copy).\n")


# -- reading ---------------------------------------------------------------------------
def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder at ``path``: the folder itself, or ``path/checkpoint`` (or,
    while a save is between its two renames, ``path/.checkpoint.old``). Changes nothing.

    Raises :class:`NoCheckpointError` when nothing there is a checkpoint, and
    :class:`CheckpointError` for a file given as the folder or a folder missing meta.json."""
    path = Path(path)
    if path.is_file():
        raise CheckpointError(f"{path}: is a file, not a checkpoint folder (give the folder that holds "
                              f"{', '.join(FILES)}, or its run folder)")
    if path.is_dir() and not any((path / name).exists() for name in FILES):
        latest, old = path / LATEST, path / _OLD
        path = old if not latest.exists() and (old / "meta.json").is_file() else latest
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"{path}: is a file, not a checkpoint folder")
    if not path.is_dir():
        raise NoCheckpointError(f"no checkpoint at {path} (expected a folder with {', '.join(FILES)}, "
                                "or a run folder holding checkpoint/)")
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"{path / 'meta.json'}: missing (an incomplete checkpoint: nlc writes "
                              f"{', '.join(FILES)} together)")
    return path


def read_meta(path: str | Path) -> Meta:
    """meta.json of the checkpoint at ``path``, its entries checked
    (:func:`~nlc.training.checkpoint_checks.check_meta`)."""
    file = find_checkpoint(path) / "meta.json"
    most = 2 * limits.current().spec_bytes + 2**20  # the resolved spec, RNG states, a few numbers
    size = file.stat().st_size
    if size > most:
        raise CheckpointError(f"{file}: {size:,} bytes, more than a checkpoint's meta.json may hold ({most:,}; "
                              "raise it with nlc --max-spec-bytes N)")
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except OSError as err:
        raise CheckpointError(f"{file}: cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        problem = "empty" if not err.doc.strip() else f"not JSON ({err.msg}: line {err.lineno}, column {err.colno})"
        raise CheckpointError(f"{file}: {problem}") from None
    except RecursionError:
        raise CheckpointError(f"{file}: nested too deeply to be a checkpoint's meta.json") from None
    return check_meta(data, file)


def _loading(file: Path, load: Callable[[], Any]) -> Any:
    """``load()``, with what the checks (:mod:`.checkpoint_checks`) cannot foresee (I/O) as a
    CheckpointError."""
    try:
        return load()
    except (OSError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{file}: cannot be loaded ({str(err).splitlines()[0]})") from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``model.safetensors`` into ``model``: every tensor must exist, match and be there."""
    file = find_checkpoint(path) / "model.safetensors"
    match_model(file, tensor_index(file), model)
    device = next(model.parameters()).device
    where = device.index if device.type == "cuda" and device.index is not None else device.type
    _loading(file, lambda: load_model(model, file, strict=True, device=where))


def load_optimizer_state(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The flat optimizer state (:meth:`nlc.training.optim.OuterLevels.state_tensors`); with
    ``model``, each entry is checked against the parameter it belongs to."""
    file = find_checkpoint(path) / "optimizer.safetensors"
    index = tensor_index(file)
    if model is not None:
        match_optimizer(file, index, dict(model.named_parameters()))
    return _loading(file, lambda: load_file(file))


def stream_tensors(model: nn.Module, carried: dict) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The carried state of ``lifetime: stream`` and ``document`` layers as ``stream/<layer>/<key>`` tensors
    (saved beside the optimizer state) and each layer's clock (for ``meta.json``)."""
    tensors, clocks = {}, {}
    for layer in model.carried_layers:
        for key, value in carried[layer].items():
            if key == CLOCK:
                clocks[layer] = int(value)
            else:
                tensors[f"stream/{layer}/{key}"] = value.detach().contiguous()
    return tensors, clocks


def carried_state(model: nn.Module, flat: dict[str, torch.Tensor], meta: Meta, path: Path, batch: int) -> dict:
    """The state a resumed run's next step continues from: what :func:`stream_tensors`
    saved, checked against a fresh state of ``batch`` rows (keys, shapes but a carried
    tail's length, dtypes), or a fresh state when the checkpoint has none (step 0)."""
    state = model.init_state(batch)
    clocks = meta.get("stream_clocks")
    if clocks is None:
        return state
    for layer in model.carried_layers:
        fresh = state[layer]
        saved = {k.split("/", 2)[2]: v for k, v in flat.items() if k.startswith(f"stream/{layer}/")}
        want = {k for k in fresh if k != CLOCK}
        clock = clocks.get(layer)
        if set(saved) != want or not isinstance(clock, int) or isinstance(clock, bool) or clock < 0:
            raise CheckpointError(f"{path}: the carried state of layer {layer!r} does not match the model "
                                  f"(saved {sorted(saved)}, clock {clock!r}; the model needs {sorted(want)})")
        for key, value in saved.items():
            ref = fresh[key]
            if value.dtype != ref.dtype or value.dim() != ref.dim() or value.shape[0] != ref.shape[0]:
                raise CheckpointError(f"{path}: carried state {layer}/{key} is {tuple(value.shape)} "
                                      f"{value.dtype}, the model needs {tuple(ref.shape)} {ref.dtype}")
        state[layer] = {**{k: v.to(ref.device) for k, v in saved.items()}, CLOCK: clock}
    return state


def load_checkpoint(path: str | Path, *, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model from the spec stored in the checkpoint and load its weights.

    ``path`` is a checkpoint folder or a run folder (its ``checkpoint/``). The stored spec
    is validated again from its text, like any spec a user gives. Returns ``(model, meta)``;
    the model is in eval mode (it is loaded to be used; call ``model.train()`` to train it
    further, as :func:`nlc.train` does) and has ``.spec``, ``.schedule`` etc. like any
    compiled one.
    """
    meta = read_meta(path)
    spec = stored_spec(meta)
    if spec_hash(spec) != meta["spec_sha256"]:
        raise CheckpointError(f"{meta.file}: the stored spec hashes to {spec_hash(spec)}, not the recorded "
                              f"{meta['spec_sha256']} (the checkpoint was edited or written by an incompatible "
                              "nlc version)")
    model = compile_spec(spec, device=device)
    load_weights(model, meta.file.parent)
    return model.eval(), meta


def stored_spec(meta: Meta) -> Spec:
    """The spec in ``meta["spec_yaml"]``, parsed as text (never as a file name) and validated
    by the normal loader; its first error becomes one CheckpointError line."""
    text = meta["spec_yaml"]
    try:
        spec, issues = validate(parse_yaml(text, f"{meta.file} spec_yaml"))
    except NLCError as err:  # a SpecError from parsing
        spec, issues = None, getattr(err, "issues", [])
    if spec is None:
        errors = [i for i in issues if i.severity == "error"] or issues
        first = errors[0].format().splitlines()[0] if errors else "unknown problem"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CheckpointError(f"the stored spec does not validate: {first}{more}")
    return spec
