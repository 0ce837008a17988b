"""`lopt.serialization`: every checkpoint and theta file in the repository (written by the earlier
hand-written codec and by safetensors' own writer) still loads bitwise; round trips keep every
dtype's bits; corruption, foreign files and failed writes give the errors they should."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from lopt import serialization
from lopt.checkpoint import read_config
from lopt.optimizers.learned import load_theta

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([*ROOT.glob("docs/meta-runs/**/*.safetensors"), *ROOT.glob("lopt/pretrained/*.safetensors")])


def _raw(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The header and each tensor's bytes, sliced from the file by hand (no codec involved)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    payload = data[8 + n :]
    return header, {
        k: payload[v["data_offsets"][0] : v["data_offsets"][1]]
        for k, v in header.items()
        if k != "__metadata__"
    }


def test_the_repository_has_files_of_both_kinds():
    kinds = {serialization.read(p, require_sha256=False)[0]["format"] for p in SHIPPED}
    assert kinds == {"lopt.checkpoint", "lopt.theta"} and len(SHIPPED) >= 4


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_file_loads_bitwise(path):
    header, raw = _raw(path)
    metadata, tensors = serialization.read(
        path, require_sha256=header["__metadata__"]["format"] == "lopt.checkpoint"
    )
    assert metadata == {k: v for k, v in header["__metadata__"].items() if k != "sha256"}
    assert set(tensors) == set(raw)
    for name, array in tensors.items():
        assert array.tobytes() == raw[name]
        assert (
            list(array.shape) == header[name]["shape"]
            and serialization.CODES[array.dtype] == header[name]["dtype"]
        )
    if metadata["format"] == "lopt.checkpoint":
        assert read_config(path) == json.loads(metadata["config"])  # the checkpoint reader agrees
    else:
        _, theta = load_theta(path)
        flat = jax.tree_util.tree_flatten_with_path(theta)[0]
        loaded = {"/".join(str(k.key) for k in p): np.asarray(v).tobytes() for p, v in flat}
        assert loaded == raw


def test_round_trip_keeps_every_dtype_bitwise(tmp_path):
    arrays = {
        "f32": np.array([[1.5, -0.0], [np.inf, np.nan]], np.float32),
        "bf16": np.array([1.5, np.nan, -3.0], jnp.bfloat16),
        "f8": np.array([0.5, -2.0], jnp.float8_e4m3fn),
        "i32": np.array(7, np.int32),  # 0-d stays 0-d
        "u8": np.zeros((0, 3), np.uint8),
        "bool": np.array([True, False]),
        "strided": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
    }
    path = serialization.write(tmp_path / "x.safetensors", arrays, {"format": "test", "n": "1"})
    metadata, back = serialization.read(path)
    assert metadata == {"format": "test", "n": "1"}
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        assert back[name].tobytes() == np.ascontiguousarray(a).tobytes(), name
    header, _ = _raw(path)
    assert len(header["__metadata__"]["sha256"]) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temp file left


def test_corruption_and_foreign_files_are_named(tmp_path):
    path = serialization.write(tmp_path / "x.safetensors", {"w": np.ones(4, np.float32)}, {"format": "test"})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(serialization.SerializationError, match="checksum mismatch") as info:
        serialization.read(path)
    assert info.value.path == str(path)
    path.write_bytes(bytes(data[:-2]))
    with pytest.raises(serialization.SerializationError, match="truncated"):
        serialization.read(path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign), metadata={"format": "x"})
    with pytest.raises(serialization.SerializationError, match="checksum mismatch"):
        serialization.read(foreign)  # no sha256 recorded
    assert serialization.read(foreign, require_sha256=False)[0] == {"format": "x"}
    with pytest.raises(ValueError, match="dtype <U1"):
        serialization.encode({"s": np.array(["a"])}, {})


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = serialization.write(tmp_path / "x.safetensors", {"w": np.ones(2, np.float32)}, {"v": "1"})

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        serialization.write(path, {"w": np.zeros(2, np.float32)}, {"v": "2"})
    monkeypatch.undo()
    assert serialization.read(path)[0] == {"v": "1"} and os.listdir(tmp_path) == ["x.safetensors"]
