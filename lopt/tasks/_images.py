"""Helpers shared by the image and MNIST-1D task families (mlp, mlp_autoencoder, cnn, conv1d).

Dataset names and their valid image sides, validation of the families' dataset fields, batch
sampling from `lopt.data.device_arrays` (uint8 images become float32 in [0, 1] per batch),
host-side rejection sampling under a budget, and the CPU-friendly conv and pooling layers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from lopt.tasks import _nn
from lopt.validate import ConfigError, check_choice, check_range, check_subset

# The valid image sides of each dataset; mnist1d is a 40-dim vector (image size None).
DATASET_SIZES: dict[str, tuple[int | None, ...]] = {
    "digits": (8,),
    "mnist": (8, 14, 28),
    "fashion_mnist": (8, 14, 28),
    "mnist1d": (None,),
}
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist")
RESIZABLE_SIZES = (8, 14, 28)
NUM_CLASSES = 10  # every dataset here has ten classes
MNIST1D_LENGTH = 40


def check_datasets(field: str, datasets: Iterable[str], supported: Iterable[str]) -> None:
    """A family's ``datasets`` field: non-empty, each one of ``supported``."""
    check_subset(field, datasets, supported)


def check_image_sizes(field: str, image_sizes: Iterable[int]) -> None:
    """A family's ``image_sizes`` field: non-empty, each one of 8 / 14 / 28."""
    check_subset(field, image_sizes, RESIZABLE_SIZES)


def check_values(field: str, values: Iterable[int], lo: int, hi: int) -> None:
    """A non-empty tuple of integer choices, each in [lo, hi] (widths, depths, batch sizes...)."""
    values = tuple(values)
    if not values:
        raise ConfigError(f"{field} is empty: give at least one value in [{lo}, {hi}].")
    for v in values:
        check_range(field, v, lo, hi)


def check_static_data(cls: str, dataset: str, image_size: int | None, supported: Iterable[str]) -> None:
    """A static config's ``dataset`` (one of ``supported``) and ``image_size`` (valid for it)."""
    check_choice(f"{cls}.dataset", dataset, supported)
    check_choice(f"{cls}.image_size", image_size, DATASET_SIZES[dataset])


def size_choices(dataset: str, image_sizes: tuple[int, ...]) -> tuple[int | None, ...]:
    """Sides to sample for ``dataset``: ``image_sizes`` for mnist / fashion_mnist, else its only one."""
    return tuple(image_sizes) if len(DATASET_SIZES[dataset]) > 1 else DATASET_SIZES[dataset]


def input_dim(dataset: str, image_size: int | None) -> int:
    """Number of input features once flattened: side² for images, 40 for mnist1d."""
    if dataset == "mnist1d":
        return MNIST1D_LENGTH
    if image_size is None:
        raise ValueError(f"input_dim({dataset!r}) needs an image_size.")
    return image_size * image_size


def pick(rng, choices: tuple) -> Any:
    """One element of ``choices`` (host-side; keeps Python types, unlike ``rng.choice``)."""
    return choices[int(rng.integers(len(choices)))]


def describe_data(dataset: str, image_size: int | None) -> str:
    """``"mnist 14x14"``, ``"digits 8x8"`` or ``"mnist1d"``."""
    return dataset if image_size is None else f"{dataset} {image_size}x{image_size}"


def load(dataset: str, image_size: int | None) -> Any:
    """Device-resident splits of ``dataset`` at ``image_size`` (cached by `lopt.data`)."""
    import lopt.data  # imported lazily: task modules must import without the data package

    if image_size is None:
        return lopt.data.device_arrays(dataset)
    return lopt.data.device_arrays(dataset, image_size=image_size)


def sample_xy(key: jax.Array, arrays: dict, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """``batch_size`` rows (with replacement) of one split; uint8 images become float32 in [0, 1].

    Returns ``x`` of shape (B, *input_shape) float32 and ``y`` (B,) int32.
    """
    rows = _nn.sample_rows(key, {"x": arrays["x"], "y": arrays["y"]}, batch_size)
    x = rows["x"]
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0  # (B, H, W) in [0, 1]
    return x.astype(jnp.float32), rows["y"].astype(jnp.int32)


def fits(static: Any, max_params: int, max_macs: int) -> bool:
    """Whether a static config is within both budgets (it has ``num_params()`` and ``macs()``)."""
    return static.num_params() <= max_params and static.macs() <= max_macs


def within_budget(cls: str, structures: Iterable[Any], max_params: int, max_macs: int) -> list:
    """The structures within budget; `ConfigError` naming both budgets if there is none."""
    check_range(f"{cls}.max_params", max_params, 1, 10**12)
    check_range(f"{cls}.max_macs", max_macs, 1, 10**15)
    structures = list(structures)
    kept = [s for s in structures if fits(s, max_params, max_macs)]
    if not kept:
        params, macs = min(s.num_params() for s in structures), min(s.macs() for s in structures)
        raise ConfigError(
            f"{cls}.max_params={max_params} and {cls}.max_macs={max_macs} exclude every configuration "
            f"of the sampling space (the smallest have {params} parameters and {macs} multiply-adds "
            "per batch): raise them or allow smaller sizes."
        )
    return kept


def extremes(structures: list) -> tuple[Any, Any]:
    """The structures with the fewest and the most parameters (ties: fewest / most multiply-adds)."""
    cost = lambda s: (s.num_params(), s.macs())  # noqa: E731
    return min(structures, key=cost), max(structures, key=cost)


def sample_within_budget(draw: Callable[[], Any], max_params: int, max_macs: int) -> Any:
    """Draw static configs until one is within both budgets (host-side rejection sampling).

    The family's ``__post_init__`` checks (`within_budget`) that some configuration fits.
    """
    while True:
        static = draw()
        if fits(static, max_params, max_macs):
            return static


def conv(p: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    """'SAME' convolution, channels last, as one matmul over extracted patches (im2col).

    The same function as `lopt.tasks._nn.conv` (x (B, *spatial, C_in) -> (B, ⌈spatial/stride⌉,
    C_out), weights (*kernel, C_in, C_out)), but XLA's CPU convolution is 10-70x slower than
    this for the small channel counts here, mostly in the backward pass. Patches are gathered
    by strided slicing, ordered (*kernel offset, C_in) like the reshaped weights.
    """
    *kernel, c_in, c_out = p["w"].shape
    spatial = x.shape[1:-1]
    out = [-(-n // stride) for n in spatial]  # ⌈n / stride⌉
    pads = [max((o - 1) * stride + k - n, 0) for o, k, n in zip(out, kernel, spatial)]
    x = jnp.pad(x, ((0, 0), *[(q // 2, q - q // 2) for q in pads], (0, 0)))  # TF 'SAME' split
    cols = [
        x[(slice(None), *[slice(o, o + (m - 1) * stride + 1, stride) for o, m in zip(offset, out)])]
        for offset in itertools.product(*[range(k) for k in kernel])
    ]  # each (B, *out, C_in)
    patches = jnp.concatenate(cols, axis=-1)  # (B, *out, prod(kernel) C_in)
    y = patches @ p["w"].reshape(math.prod(kernel) * c_in, c_out)  # (B, *out, C_out)
    return y + p["b"][(None,) * (y.ndim - 1)]


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max pool, stride 2, 'SAME' (odd sides padded with -inf).

    x (B, H, W, C) -> (B, ⌈H/2⌉, ⌈W/2⌉, C). A reshape and a max: on CPU its gradient is ~4x
    faster than that of `jax.lax.reduce_window`.
    """
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return x.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))
