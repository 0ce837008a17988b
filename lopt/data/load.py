"""`load(name)`: a dataset as host numpy arrays; `device_arrays`: the same splits as jax arrays.

Both are cached per process (keyed by the cache dir too, so changing ``$LOPT_DATA`` is honoured).
Every cached file is checked against its pinned sha256 on first load.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from lopt.data.builders import BUILDERS
from lopt.data.cache import cache_dir
from lopt.data.dataset import Dataset
from lopt.data.images import resize_images
from lopt.data.registry import DATASETS
from lopt.validate import unknown_name


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)


def load(name: str) -> Dataset:
    """The dataset ``name`` (a key of `DATASETS`) in its four splits, as read-only numpy arrays.

    Raises:
        UnknownNameError: ``name`` is not a dataset; the message lists the valid names.
        DatasetMissingError: it is not fetched; the message says ``lopt data fetch NAME``.
        ChecksumError: a cached file does not match its pinned sha256.
    """
    _check_name(name)
    return _load(name, str(cache_dir()))


@functools.cache
def _load(name: str, root: str) -> Dataset:
    return BUILDERS[name](Path(root))


def device_arrays(name: str, image_size: int | None = None) -> dict[str, dict[str, jax.Array]]:
    """The splits of ``load(name)`` as device-resident jax arrays, for sampling batches inside jit.

    Arrays keep their host dtypes (images stay uint8: convert per batch).

    Args:
        name: a key of `DATASETS`.
        image_size: image datasets only: resize to ``(image_size, image_size)`` with
            `resize_images`; None keeps the native size.

    Returns:
        ``{split: {"x": ..., "y": ...}}`` (text and densities have ``"x"`` only).
    """
    _check_name(name)
    root = str(cache_dir())
    dataset = _load(name, root)
    if image_size is not None and dataset.kind != "image":
        raise ValueError(
            f"image_size={image_size} applies to image datasets only; {name!r} is {dataset.kind}."
        )
    if image_size is not None and image_size == dataset.input_shape[0]:
        image_size = None  # the native size: share one device copy with image_size=None
    return _device_arrays(name, image_size, root)


@functools.cache
def _device_arrays(name: str, image_size: int | None, root: str) -> dict[str, dict[str, jax.Array]]:
    dataset = _load(name, root)
    out = {}
    # concrete arrays even when first called under a trace (jit / eval_shape): this cache outlives it
    with jax.ensure_compile_time_eval():
        for split, arrays in dataset.splits.items():
            arrays = dict(arrays)
            if image_size is not None:
                arrays["x"] = resize_images(arrays["x"], image_size)
            out[split] = {k: jnp.asarray(v) for k, v in arrays.items()}
    return out
