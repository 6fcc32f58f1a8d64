"""Checkpoints: safetensors tensors plus a JSON sidecar, written atomically; never pickles.

A checkpoint is a folder:

* ``model.safetensors``: the model's state dict (``safetensors.torch.save_model``, which
  handles tied weights);
* ``optimizer.safetensors``: the optimizer levels' state and the gradients still being
  accumulated by levels with ``period: {steps: k}`` (flat tensors, see
  :meth:`nlc.train.optim.OuterLevels.state_tensors`);
* ``meta.json``: the resolved spec (YAML) and its sha256, the step, the schedule state,
  RNG states, the data's name and sha256, library versions (written by :mod:`nlc.train.loop`);
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
checked before torch sees it (the safetensors header against the file's size, each
tensor's shape and dtype against the model the spec builds, meta.json's entries and
types), and the stored spec is validated again by the normal loader from its YAML text.
Each problem is one :class:`CheckpointError` line naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import secrets
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from .. import limits
from ..status import BAD_INPUT
from ..errors import NLCError
from ..files import fsync_path
from ..spec import Spec
from ..spec.load import spec_to_yaml
from ..version import __version__

LATEST = "checkpoint"
_OLD = ".checkpoint.old"
_TMP_PREFIX = ".checkpoint.tmp-"
FORMAT = 1


class CheckpointError(NLCError):
    """A checkpoint is missing, incomplete, corrupt, or does not belong to the run asked for."""

    exit_status = BAD_INPUT  # nlc.status: a file that cannot be used


class NoCheckpointError(CheckpointError):
    """Nothing at the path looks like a checkpoint (a run that has not saved one yet), as
    opposed to a checkpoint that is there but unusable."""


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
FILES = ("meta.json", "model.safetensors", "optimizer.safetensors")


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


class Meta(dict):
    """The content of meta.json; an entry it lacks raises :class:`CheckpointError` naming
    the file (not a bare KeyError), so every reader of a field gets the one-line error."""

    file: Path

    def __missing__(self, key: str) -> Any:
        raise CheckpointError(f"{self.file}: has no {key!r} entry (not a checkpoint written by nlc train)")

    def require(self, *keys: str) -> None:
        for key in keys:
            if key not in self:
                self.__missing__(key)


_INT, _NUMBER, _STR, _OBJECT = ((int,), "an integer"), ((int, float), "a number"), ((str,), "a string"), \
    ((dict,), "an object")
_ENTRIES = {  # the types of the entries readers use
    "step": _INT, "steps": _INT, "seed": _INT, "elapsed": _NUMBER, "world_size": _INT, "spec_yaml": _STR,
    "spec_sha256": _STR, "rng": _OBJECT, "data": _OBJECT, "schedule": _OBJECT, "versions": _OBJECT}


def read_meta(path: str | Path) -> Meta:
    """meta.json of the checkpoint at ``path``, its entries checked (see :data:`_ENTRIES`);
    ``step`` and ``format`` are required, the others are checked when present."""
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
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: holds a JSON {type(data).__name__}, not an object")
    meta = Meta(data)
    meta.file = file
    if meta.get("format") != FORMAT:
        versions_ = meta.get("versions")
        written = versions_.get("nlc", "?") if isinstance(versions_, dict) else "?"
        raise CheckpointError(f"{file}: checkpoint format {meta.get('format')!r} is not {FORMAT} "
                              f"(written by nlc {written}; this is nlc {__version__})")
    _check_entries(meta, file)
    return meta


def _check_entries(meta: Meta, file: Path) -> None:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{file}: {what}")

    meta.require("step")
    for key, (types, kind) in _ENTRIES.items():
        value = meta.get(key)
        if key in meta and (not isinstance(value, types) or isinstance(value, bool)):
            raise bad(f"'{key}' is {json.dumps(value)[:40]}, not {kind}")
        if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
            raise bad(f"'{key}' is {value}, not a finite number >= 0")
    if "spec_yaml" in meta or "spec_sha256" in meta:  # the spec and its hash come together
        meta.require("spec_yaml", "spec_sha256")
        actual = hashlib.sha256(meta["spec_yaml"].encode("utf-8", "surrogatepass")).hexdigest()
        if actual != meta["spec_sha256"]:
            raise bad(f"'spec_yaml' hashes to {actual}, not the recorded spec_sha256 {meta['spec_sha256']} "
                      "(the file was edited)")
    if "rng" in meta:
        length = 2 * torch.get_rng_state().numel()
        states = [meta["rng"].get("torch")]
        states += meta["rng"].get("cuda", []) if isinstance(meta["rng"].get("cuda", []), list) else [None]
        if not all(isinstance(s, str) and _is_hex(s) for s in states) or len(states[0]) != length:
            raise bad(f"'rng' does not hold torch generator states (hex strings, the CPU one {length} digits)")
    if "data" in meta:
        name, digest = meta["data"].get("name"), meta["data"].get("sha256")
        if not isinstance(name, str) or not (digest is None or isinstance(digest, str)):
            raise bad("'data' needs a 'name' (a string) and a 'sha256' (a string or null)")


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdef" for c in text)


# safetensors dtype names -> torch dtypes (those torch can hold)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_MAX_HEADER = 100_000_000  # safetensors' own bound on its JSON header


def tensor_index(file: Path) -> dict[str, tuple[torch.dtype, list[int]]]:
    """``name -> (dtype, shape)`` of a safetensors file, after checking its header against
    the file's size (so a truncated or padded file is named before anything is loaded)."""
    try:
        size = file.stat().st_size
        with file.open("rb") as stream:
            head = stream.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if length is None or length > min(size - 8, _MAX_HEADER):
                header = None
            else:
                header = stream.read(length)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing (an incomplete checkpoint: nlc writes {', '.join(FILES)} "
                              "together)") from None
    except OSError as err:
        raise CheckpointError(f"{file}: cannot be read ({err.strerror or err})") from None
    if size == 0:
        raise CheckpointError(f"{file}: empty (0 bytes)")
    if length is None:
        raise CheckpointError(f"{file}: truncated ({size} bytes, less than the 8-byte safetensors header length)")
    if header is None:
        raise CheckpointError(f"{file}: truncated (safetensors header says {length:,} bytes, file has {size:,})"
                              if length <= _MAX_HEADER else f"{file}: not a safetensors file (header length {length:,})")
    try:
        entries = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{file}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(entries, dict):
        raise CheckpointError(f"{file}: not a safetensors file (its header is not a JSON object)")
    index, spans = {}, []
    for name, entry in entries.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = _DTYPES[entry["dtype"]], list(entry["shape"]), entry["data_offsets"]
            assert all(type(n) is int and n >= 0 for n in (*shape, begin, end))
            assert end - begin == math.prod(shape) * dtype.itemsize
        except (KeyError, TypeError, ValueError, AssertionError):
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry "
                                  f"{json.dumps(entry)[:80]}") from None
        index[name] = (dtype, shape)
        spans.append((begin, end))
    spans.sort()
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])) or (spans and spans[0][0] != 0):
        raise CheckpointError(f"{file}: not a safetensors file (its tensors overlap or leave gaps)")
    expected = 8 + length + (spans[-1][1] if spans else 0)
    if size < expected:
        raise CheckpointError(f"{file}: truncated (its tensors end at byte {expected:,}, file has {size:,})")
    if size > expected:
        raise CheckpointError(f"{file}: {size - expected:,} bytes after its last tensor (not a file nlc wrote)")
    return index


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _match_model(file: Path, index: dict[str, tuple[torch.dtype, list[int]]], model: nn.Module) -> None:
    """Every tensor of ``file`` is one of the model's, with its shape and dtype, and every
    one of the model's is in the file (or tied to one that is)."""
    expected = model.state_dict()
    unknown = [name for name in index if name not in expected]
    if unknown:
        raise CheckpointError(f"{file}: holds {_names(unknown)}, which the model built from the spec does not have")
    for name, (dtype, shape) in index.items():
        want = expected[name]
        if shape != list(want.shape):
            raise CheckpointError(f"{file}: tensor {name!r} has shape {shape}, the model built from the spec "
                                  f"needs {list(want.shape)}")
        if dtype != want.dtype:
            raise CheckpointError(f"{file}: tensor {name!r} is {str(dtype).removeprefix('torch.')}, the model "
                                  f"needs {str(want.dtype).removeprefix('torch.')}")
    stored = {_storage(expected[name]) for name in index}
    missing = [name for name, t in expected.items() if name not in index and _storage(t) not in stored]
    if missing:
        raise CheckpointError(f"{file}: lacks {_names(missing)} of the model built from the spec")


def _storage(tensor: torch.Tensor) -> tuple:
    """Tied tensors share a storage (safetensors saves one of them); empty ones never count as tied."""
    return (tensor.device, tensor.untyped_storage().data_ptr()) if tensor.numel() else (id(tensor),)


def _loading(file: Path, load: Callable[[], Any]) -> Any:
    """``load()``, with what the checks above cannot foresee (I/O) as a CheckpointError."""
    try:
        return load()
    except (OSError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{file}: cannot be loaded ({str(err).splitlines()[0]})") from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``model.safetensors`` into ``model``: every tensor must exist, match and be there."""
    file = find_checkpoint(path) / "model.safetensors"
    _match_model(file, tensor_index(file), model)
    device = next(model.parameters()).device
    where = device.index if device.type == "cuda" and device.index is not None else device.type
    _loading(file, lambda: load_model(model, file, strict=True, device=where))


def load_optimizer_state(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The flat optimizer state (:meth:`nlc.train.optim.OuterLevels.state_tensors`); with
    ``model``, each entry is checked against the parameter it belongs to."""
    file = find_checkpoint(path) / "optimizer.safetensors"
    index = tensor_index(file)
    if model is not None:
        _match_optimizer(file, index, dict(model.named_parameters()))
    return _loading(file, lambda: load_file(file))


def _match_optimizer(file: Path, index: dict[str, tuple[torch.dtype, list[int]]],
                     params: dict[str, nn.Parameter]) -> None:
    """``grad/<param>`` has the parameter's shape; ``opt/<param>/<key>`` its shape or none (a step count)."""
    for name, (dtype, shape) in index.items():
        kind, _, rest = name.partition("/")
        param = rest if kind == "grad" else rest.rpartition("/")[0]
        if kind not in ("grad", "opt") or param not in params:
            raise CheckpointError(f"{file}: holds {name!r}, which belongs to no parameter of the model")
        want = list(params[param].shape)
        if shape != want and not (kind == "opt" and shape == []):
            raise CheckpointError(f"{file}: {name!r} has shape {shape}, the parameter has {want}")
        if not dtype.is_floating_point:
            raise CheckpointError(f"{file}: {name!r} is {str(dtype).removeprefix('torch.')}, not floating point")


def load_checkpoint(path: str | Path, *, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model from the spec stored in the checkpoint and load its weights.

    ``path`` is a checkpoint folder or a run folder (its ``checkpoint/``). The stored spec
    is validated again from its text, like any spec a user gives. Returns ``(model, meta)``;
    the model is in eval mode (it is loaded to be used; call ``model.train()`` to train it
    further, as :func:`nlc.train` does) and has ``.spec``, ``.schedule`` etc. like any
    compiled one.
    """
    from ..compiler import compile as compile_spec

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
    from ..spec.load import validate
    from ..spec.source import parse_yaml

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
