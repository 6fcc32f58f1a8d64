"""Atomic file writes: every file nlc writes appears whole under its name or not at all.

A write goes to a temporary file in the target's folder, is flushed and fsynced, then
renamed over the target (``os.replace`` is atomic within one file system), so a crash or a
kill never leaves a half-written metrics log, report, figure (:mod:`nlc.figures`) or cache entry. Checkpoints
(folders) have their own rename scheme (:mod:`nlc.training.checkpoint`).

``tempfile.mkstemp`` creates its file private (mode 0600); the file is given the mode an
ordinary ``open(path, "w")`` would have (``0o666`` less the process umask) before the
rename, so a run folder shared with a group stays readable to it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask. Read from ``/proc/self/status`` where Linux offers it: the
    ``os.umask`` set-and-restore fallback briefly changes a process-wide setting, which a
    thread creating a file at that moment would see."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder: so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename;
    the file gets the umask's permissions (``0o666 & ~umask``), like any other new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8; returns ``path``."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))
    return Path(path)
