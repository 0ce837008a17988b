"""Downsampling uint8 images by area averaging (28x28 MNIST -> 14x14 or 8x8 for cheap tasks)."""

from __future__ import annotations

import numpy as np

# Zero padding per side tried when the size does not divide the image: 28 + 2*2 = 32, the 32x32
# NIST bitmaps that scikit-learn's 8x8 digits were averaged down from in 4x4 blocks.
_PAD = 2


def _plan(height: int, size: int) -> tuple[int, int] | None:
    """(padding per side, block size) for resizing ``height`` to ``size``, or None if not possible."""
    if 1 <= size <= height and height % size == 0:
        return 0, height // size
    if 1 <= size < height and (height + 2 * _PAD) % size == 0:
        return _PAD, (height + 2 * _PAD) // size
    return None


def valid_sizes(height: int) -> list[int]:
    """The sizes `resize_images` accepts for square images of side ``height``."""
    return [s for s in range(1, height + 1) if _plan(height, s) is not None]


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Area-average square uint8 images (N, H, H) down to (N, size, size).

    Each output pixel is the mean of a ``f x f`` block, rounded to nearest (halves up):
    ``out[n, i, j] = round(mean(x[n, f*i : f*(i+1), f*j : f*(j+1)]))``. When ``size`` divides
    ``H`` the blocks tile the image (28 -> 14: 2x2 means); otherwise the image is first zero-padded
    by 2 pixels per side (28 -> 32 -> 8: 4x4 means, the way scikit-learn's digits were made).
    ``size == H`` returns ``x`` itself.

    Raises:
        ValueError: ``x`` is not uint8 (N, H, H), or ``size`` is not one of `valid_sizes` (listed).
    """
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"resize_images expects uint8 images of shape (N, H, H); got {x.dtype} {x.shape}.")
    height = x.shape[1]
    if size == height:
        return x
    plan = _plan(height, size)
    if plan is None:
        raise ValueError(
            f"cannot resize {height}x{height} images to {size}x{size}: valid sizes are {valid_sizes(height)}."
        )
    pad, f = plan
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))  # (N, H + 2 pad, H + 2 pad)
    acc = np.uint16 if f * f * 255 < 2**16 else np.uint32  # uint16 when it cannot overflow: ~5x faster
    sums = np.zeros((len(x), size, size), acc)  # (N, size, size)
    for a in range(f):  # f*f strided adds: much faster than reshape + sum over two inner axes
        for b in range(f):
            sums += x[:, a::f, b::f]
    return ((sums + (f * f) // 2) // (f * f)).astype(np.uint8)
