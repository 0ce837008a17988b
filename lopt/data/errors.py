"""The errors of `lopt.data`; each message says what is wrong and the command that fixes it."""

from __future__ import annotations


class DatasetMissingError(FileNotFoundError):
    """A dataset is not in the cache yet; the message holds the exact ``lopt data fetch NAME`` command."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned value; the message names the file and both digests."""


class SourceError(RuntimeError):
    """A dataset's source (npm, apt, a Debian package's program, a Python package) is unavailable."""


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file (bad magic number, or a size that disagrees with its header)."""
