"""The one codec of lopt's files: named tensors + string metadata <-> a safetensors file, with a
sha256 and atomic writes. Checkpoints (`lopt.checkpoint`) and theta files (`lopt.save_theta`) use it.

    write(path, {"w": array}, {"format": "lopt.theta", ...})      # atomic; adds metadata["sha256"]
    metadata, tensors = read(path)                               # checks the layout and the sha256
    atomic_write(path, data); write_json(path, value)            # any other file lopt writes whole

Encoding and decoding are the `safetensors` library's (``serialize`` / ``deserialize``: every
dtype it knows, bfloat16 and float8 included, bits unchanged). lopt adds:

- **sha256** in the header's ``__metadata__``: the hash of the canonical JSON of the header without
  it (``json.dumps(header, sort_keys=True, separators=(",", ":"))``), followed by the tensor payload
  as stored. Any writer that computes it so (lopt's earlier hand-written codec did) is verified;
  corruption is caught even where the file still parses. Files without one (theta files written
  before it existed) load when ``require_sha256=False``.
- **atomic replace**: the bytes go to a temp file in the same directory, flushed and fsynced,
  renamed over the final name (`os.replace`), and the directory is fsynced. A process killed at
  any moment leaves the complete old file or the complete new one.
- **clear errors**: `SerializationError` names the file and the cause (truncated, bad header,
  layout, checksum).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, TensorSpec, deserialize, serialize

_MAX_HEADER = 100_000_000  # bytes; the safetensors library's own limit

# safetensors dtype codes <-> numpy dtypes (bfloat16 and float8 are ml_dtypes', via jax.numpy).
DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(jnp.bfloat16),
    "F8_E4M3": np.dtype(jnp.float8_e4m3fn),
    "F8_E5M2": np.dtype(jnp.float8_e5m2),
    "C64": np.dtype(np.complex64),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
CODES = {dtype: code for code, dtype in DTYPES.items()}


class SerializationError(Exception):
    """A file cannot be read: ``path`` names it and ``cause`` says why."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path, self.cause = os.fspath(path), cause
        super().__init__(f"{self.path}: {cause}")


def _canonical(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _split(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n].decode("utf-8")), data[8 + n :]


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The file's bytes: ``tensors`` (C-contiguous numpy arrays of `DTYPES`) and ``metadata`` plus
    its ``sha256``."""
    arrays = {}  # C-contiguous, little-endian; alive while serialize reads their buffers
    for name, array in tensors.items():
        if array.dtype not in CODES:
            raise ValueError(
                f"tensor {name} has dtype {array.dtype}, which a safetensors file cannot store; "
                f"supported: {sorted(str(d) for d in CODES)}."
            )
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        arrays[name] = little if little.flags.c_contiguous else little.copy(order="C")  # (keeps 0-d 0-d)
    specs = {
        name: TensorSpec(dtype=a.dtype.name, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, a in arrays.items()
    }
    header, payload = _split(serialize(specs, metadata=dict(metadata)))
    digest = hashlib.sha256(_canonical(header))
    digest.update(payload)
    return serialize(specs, metadata={**metadata, "sha256": digest.hexdigest()})


def atomic_write(
    path: str | os.PathLike, data: bytes | Callable[[], bytes], temp: str | os.PathLike | None = None
) -> Path:
    """Write ``data`` (or what ``data()`` returns, computed once the temp file exists) to ``path``
    atomically (``temp``: the temp file, default a hidden unique name beside ``path``); returns
    ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(temp) if temp else path.parent / f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        with open(temp, "xb") as f:
            f.write(data() if callable(data) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """``value`` as JSON (indent 1, a final newline), written with `atomic_write`; returns ``path``."""
    return atomic_write(path, (json.dumps(value, indent=1) + "\n").encode())


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows) have no directory fsync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    """`encode` and `atomic_write`."""
    return atomic_write(path, lambda: encode(tensors, metadata))


def read(
    path: str | os.PathLike, *, require_sha256: bool = True, check: Callable[[dict], None] | None = None
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata without its sha256, tensors by name) of a file, validated down to its checksum.

    ``check(metadata)`` runs once the header parses, before the layout and the checksum are
    verified: a file of another format or version is named as such, not as corrupt."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SerializationError(path, f"cannot be read: {err.strerror or err}") from None
    header, payload = _header(path, data, check)
    metadata = dict(header["__metadata__"])
    recorded = metadata.pop("sha256", None)
    if recorded is not None or require_sha256:
        digest = hashlib.sha256(_canonical({**header, "__metadata__": metadata}))
        digest.update(payload)
        if recorded != digest.hexdigest():
            raise SerializationError(
                path,
                f"checksum mismatch: the contents are corrupt (sha256 {digest.hexdigest()}, recorded {recorded})",
            )
    try:
        decoded = deserialize(data)
    except SafetensorError as err:
        raise SerializationError(path, f"bad file: {err}") from None
    tensors = {
        name: np.frombuffer(t["data"], DTYPES[t["dtype"]]).reshape(t["shape"]).copy() for name, t in decoded
    }
    return metadata, tensors


def _header(path: Path, data: bytes, check: Callable[[dict], None] | None) -> tuple[dict, bytes]:
    """(header, payload) of a file's bytes: the header parsed and its layout checked."""
    size = len(data)
    if size < 8:
        raise SerializationError(path, f"truncated: {size} bytes, less than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER:
        raise SerializationError(path, f"bad header: its length field says {n} bytes; not a safetensors file")
    if 8 + n > size:
        raise SerializationError(path, f"truncated: the header needs {8 + n} bytes, the file has {size}")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise SerializationError(path, f"bad header: not valid JSON ({err})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise SerializationError(path, "bad header: no __metadata__; not a lopt checkpoint or theta file")
    if check is not None:
        check(header["__metadata__"])
    payload = data[8 + n :]
    expected = _layout(path, header)
    if len(payload) < expected:
        raise SerializationError(
            path,
            f"truncated: the header describes {expected} bytes of tensors, the file holds {len(payload)}",
        )
    if len(payload) > expected:
        raise SerializationError(
            path, f"corrupt: {len(payload) - expected} unexpected bytes after the tensors"
        )
    return header, payload


def _layout(path: Path, header: dict) -> int:
    """The payload size the header describes; tensors must tile it in order, without gaps."""
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = DTYPES[info["dtype"]], tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SerializationError(
                path, f"bad header: tensor {name} has an invalid entry {info!r}"
            ) from None
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise SerializationError(
                path, f"bad header: tensor {name}'s offsets do not match its shape and dtype"
            )
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SerializationError(
                path, f"bad header: tensor {name} does not start where the previous one ends"
            )
        position = end
    return position
