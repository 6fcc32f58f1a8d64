"""Checking untrusted checkpoint files before torch sees them; never pickles, never writes.

A checkpoint may be truncated, edited or hostile, so nothing in it is believed until it is
checked here: a safetensors file's header against the file's size (:func:`tensor_index`,
which reads the header only), each tensor's name, shape and dtype against the model the
spec builds (:func:`match_model`, :func:`match_optimizer`), and meta.json's structure,
entries and types (:func:`check_meta`). Each problem is one :class:`CheckpointError` line
naming the file. Locating, writing and loading checkpoints is :mod:`nlc.training.checkpoint`,
which imports this module (never the other way round).
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import NLCError
from ..optim.gradient_memories import state_shape_ok
from ..status import BAD_INPUT
from ..version import __version__

FORMAT = 1
FILES = ("meta.json", "model.safetensors", "optimizer.safetensors")


class CheckpointError(NLCError):
    """A checkpoint is missing, incomplete, corrupt, or does not belong to the run asked for."""

    exit_status = BAD_INPUT  # nlc.status: a file that cannot be used


class NoCheckpointError(CheckpointError):
    """Nothing at the path looks like a checkpoint (a run that has not saved one yet), as
    opposed to a checkpoint that is there but unusable."""


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
    "spec_sha256": _STR, "rng": _OBJECT, "data": _OBJECT, "schedule": _OBJECT, "versions": _OBJECT,
    "stream_clocks": _OBJECT}


def check_meta(data: Any, file: Path) -> Meta:
    """meta.json's parsed content ``data`` as a :class:`Meta`, its entries checked (see
    :data:`_ENTRIES`); ``step`` and ``format`` are required, the others are checked when present."""
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
        try:  # the right length is not enough: mt19937 refuses some contents
            torch.Generator().set_state(torch.frombuffer(bytearray.fromhex(states[0]), dtype=torch.uint8))
        except RuntimeError as err:
            raise bad(f"'rng' holds no valid CPU generator state ({err})") from None
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


def match_model(file: Path, index: dict[str, tuple[torch.dtype, list[int]]], model: nn.Module) -> None:
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


def match_optimizer(file: Path, index: dict[str, tuple[torch.dtype, list[int]]],
                    params: dict[str, nn.Parameter]) -> None:
    """``grad/<param>`` has the parameter's shape; ``opt/<param>/<key>`` its shape, none (a step
    count) or a deep momentum's weights (:func:`nlc.optim.gradient_memories.state_shape_ok`); ``stream/<layer>/<key>`` (a carried state) is checked by ``checkpoint.carried_state``."""
    for name, (dtype, shape) in index.items():
        kind, _, rest = name.partition("/")
        if kind == "stream":  # a carried stream state: checked against the model when it is loaded
            continue
        param = rest if kind == "grad" else rest.rpartition("/")[0]
        if kind not in ("grad", "opt") or param not in params:
            raise CheckpointError(f"{file}: holds {name!r}, which belongs to no parameter of the model")
        want = list(params[param].shape)
        if shape != want and not (kind == "opt" and (shape == [] or state_shape_ok(name.rpartition("/")[2], shape,
                                                                                     want))):
            raise CheckpointError(f"{file}: {name!r} has shape {shape}, the parameter has {want}")
        if not dtype.is_floating_point:
            raise CheckpointError(f"{file}: {name!r} is {str(dtype).removeprefix('torch.')}, not floating point")

