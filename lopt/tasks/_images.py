"""Helpers shared by the image and MNIST-1D task families (mlp, mlp_autoencoder, cnn, conv1d).

Dataset names and their valid image sides, validation of the families' dataset fields, batch
sampling from `lopt.data.device_arrays` (uint8 images become float32 in [0, 1] per batch), and
host-side rejection sampling under a parameter budget.
"""

from __future__ import annotations

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
    return MNIST1D_LENGTH if dataset == "mnist1d" else image_size * image_size


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


def check_budget(cls: str, max_params: int, smallest: int) -> None:
    """``max_params`` must be positive and admit the smallest configuration of the space."""
    check_range(f"{cls}.max_params", max_params, 1, 10**9)
    if smallest > max_params:
        raise ConfigError(
            f"{cls}.max_params={max_params} is below the smallest configuration of the sampling "
            f"space ({smallest} parameters): raise max_params or allow smaller sizes."
        )


def sample_within_budget(draw: Callable[[], Any], count: Callable[[Any], int], max_params: int) -> Any:
    """Draw static configs until one has at most ``max_params`` parameters (host-side rejection).

    The family's ``__post_init__`` checks that the smallest configuration fits, so this ends.
    """
    while True:
        static = draw()
        if count(static) <= max_params:
            return static
