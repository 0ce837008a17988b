"""The on-disk cache: where it is, sha256 checks against pinned digests, and atomic installs.

Layout: ``cache_dir() / <dataset name> / <file>``. Nothing here deletes a cached file: a file
whose digest is wrong is reported (with the command that replaces it) and left in place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lopt.data.errors import ChecksumError, DatasetMissingError


def cache_dir() -> Path:
    """The dataset cache: ``$LOPT_DATA`` if set, else ``~/.cache/lopt``."""
    return Path(os.environ.get("LOPT_DATA") or "~/.cache/lopt").expanduser()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``, streamed."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch_command(name: str) -> str:
    """The shell command that (re)fetches dataset ``name``."""
    return f"lopt data fetch {name}"


def checksum_error(dataset: str, path: Path, expected: str, actual: str) -> ChecksumError:
    """The error for a cached file whose digest is wrong; it says how to replace the file."""
    return ChecksumError(
        f"{path}: sha256 mismatch for dataset {dataset!r}: expected {expected}, got {actual}. "
        f"The file is corrupt or was written by something else; it was left in place. "
        f"Replace it with: {fetch_command(dataset)} --force"
    )


def missing_error(dataset: str, path: Path) -> DatasetMissingError:
    """The error for a dataset whose file is not in the cache; it gives the fetch command."""
    return DatasetMissingError(
        f"dataset {dataset!r} is not in the cache ({path} is missing). "
        f"Fetch it with: {fetch_command(dataset)}  (or `make data`; cache dir: $LOPT_DATA or ~/.cache/lopt)"
    )


def read_verified(dataset: str, filename: str, sha256: str, root: Path | None = None) -> bytes:
    """The bytes of a cached file after checking them against the pinned ``sha256``.

    Raises:
        DatasetMissingError: the file is not in the cache.
        ChecksumError: the file's digest differs from ``sha256``.
    """
    path = (root or cache_dir()) / dataset / filename
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise missing_error(dataset, path) from None
    actual = sha256_bytes(data)
    if actual != sha256:
        raise checksum_error(dataset, path, sha256, actual)
    return data


def install(staged: Path, final: Path) -> None:
    """Move a fully written file into the cache atomically: fsync it, ``os.replace``, fsync the dir.

    ``staged`` must be on the same filesystem as ``final`` (stage under the cache dir).
    """
    with open(staged, "rb") as f:
        os.fsync(f.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
