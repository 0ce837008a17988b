"""Readers for the raw formats the datasets ship in: IDX arrays (MNIST, Fashion-MNIST) and the KJV dump.

IDX layout (LeCun's MNIST page): a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the data in C order, big-endian. The files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib

import numpy as np

from lopt.data.errors import IdxFormatError

# IDX type byte -> numpy dtype of the (big-endian) payload.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# A verse line of the `bible` dump: leading spaces, the verse number, one space, then the text.
_VERSE = re.compile(r"^\s+\d+\s")


def read_idx(source: str | os.PathLike | bytes, *, name: str | None = None) -> np.ndarray:
    """Read an IDX array from a path or from bytes, gzip-compressed or raw.

    Args:
        source: a file path, or the file's bytes (e.g. a member read from the MNIST npm tarball).
        name: how errors refer to the data; defaults to the path (or ``"<bytes>"``).

    Returns:
        The array with the header's shape, in native byte order (uint8 for MNIST-style files).

    Raises:
        IdxFormatError: the magic number is wrong or the payload size disagrees with the header;
            the message names the file.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        raw, name = bytes(source), name or "<bytes>"
    else:
        name = name or os.fspath(source)
        with open(source, "rb") as f:
            raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFormatError(f"{name}: corrupt gzip stream ({e}).") from e

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise IdxFormatError(
            f"{name}: not an IDX file: bad magic number {raw[:4].hex()!r} (expected 0000 then a type "
            f"byte in {[f'{t:02x}' for t in _IDX_DTYPES]} and the number of dimensions)."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise IdxFormatError(
            f"{name}: IDX header announces {ndim} dimensions but the file ends at byte {len(raw)}."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise IdxFormatError(
            f"{name}: IDX header says shape {shape} of {dtype.name} ({expected} bytes in all), "
            f"but the data holds {len(raw)} bytes: the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_kjv(text: str) -> str:
    """Clean the ``bible`` program's dump of the King James Version to one verse per line.

    The dump has book/chapter headings ("Genesis 1"), blank lines and verse lines such as
    ``"  1 In the beginning God created the heaven and the earth."``. Verse lines are kept with
    their number prefix stripped; everything else is dropped.

    Returns:
        The verses, each followed by ``"\\n"`` (31,102 lines for the full KJV).
    """
    verses = [_VERSE.sub("", line, count=1) for line in text.splitlines() if _VERSE.match(line)]
    return "".join(v + "\n" for v in verses)
