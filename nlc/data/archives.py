"""Reading files out of registry artifacts without installing them.

Three formats cover every registry: PyPI sdists and npm packages are gzip tarballs, PyPI
wheels are zip files, Debian packages are ``ar`` archives whose ``data.tar.{xz,gz,bz2}``
member holds the package's files. ``dpkg-deb`` is not needed: the ``ar`` container is read
here (60-byte member headers, 2-byte alignment) and the inner tarball with :mod:`tarfile`.
"""
from __future__ import annotations

import fnmatch
import io
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from .fetch import DataFetchError

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60


def read_members(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """``(path inside the artifact, content)`` of each regular file ``wanted`` accepts,
    in sorted path order."""
    name = path.name
    if name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path, "r:gz") as tar:
            yield from _tar_members(tar, wanted)
    elif name.endswith(".whl"):
        yield from _zip_members(path, wanted)
    elif name.endswith(".deb"):
        yield from _deb_members(path, wanted)
    else:
        raise DataFetchError(f"{path}: unknown archive format (expected .tar.gz, .tgz, .whl or .deb)")


def read_member(path: Path, member: str) -> bytes:
    """The content of one file inside the artifact."""
    for _, data in read_members(path, lambda candidate: candidate == member):
        return data
    raise DataFetchError(f"{path} has no file {member!r}: is it the pinned release?")


def glob_filter(pattern: str, exclude: str | None = None) -> Callable[[str], bool]:
    """A member filter: matches ``pattern`` (fnmatch; ``*`` crosses ``/``), not ``exclude``."""
    return lambda name: fnmatch.fnmatchcase(name, pattern) and not (
        exclude and fnmatch.fnmatchcase(name, exclude))


def _tar_members(tar: tarfile.TarFile, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    members = sorted((m for m in tar.getmembers() if m.isfile() and wanted(_clean(m.name))),
                     key=lambda m: _clean(m.name))
    for member in members:
        handle = tar.extractfile(member)
        assert handle is not None  # regular files always have content
        yield _clean(member.name), handle.read()


def _zip_members(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        for name in sorted(n for n in archive.namelist() if not n.endswith("/") and wanted(n)):
            yield name, archive.read(name)


def _deb_members(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    data = _ar_member(path, "data.tar")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        yield from _tar_members(tar, wanted)


def _ar_member(path: Path, prefix: str) -> bytes:
    """The first member of the ``ar`` archive at ``path`` whose name starts with ``prefix``."""
    with open(path, "rb") as handle:
        if handle.read(len(AR_MAGIC)) != AR_MAGIC:
            raise DataFetchError(f"{path} is not a Debian package (no ar header)")
        while header := handle.read(AR_HEADER):
            if len(header) < AR_HEADER:
                break
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith(prefix):
                return handle.read(size)
            handle.seek(size + size % 2, 1)
    raise DataFetchError(f"{path} has no {prefix}* member: is it a Debian binary package?")


def _clean(name: str) -> str:
    """Tar member names without a leading ``./`` (Debian data tarballs use it)."""
    return name[2:] if name.startswith("./") else name
