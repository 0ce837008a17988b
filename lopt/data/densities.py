"""Procedural 2-D densities for normalizing-flow tasks, generated deterministically from fixed seeds.

``eight_gaussians`` and ``checkerboard`` follow the toy densities of FFJORD.

References:
    Grathwohl et al. 2019, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
    Generative Models" (``lib/toy_data.py``).
"""

from __future__ import annotations

import numpy as np

from lopt.data.dataset import SPLITS

POOL_SIZES = {"train": 8000, "inner_valid": 1000, "outer_valid": 1000, "test": 1000}
NOISE = 0.05  # moons / circles


def _moons(n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import make_moons

    return np.asarray(make_moons(n, noise=NOISE, random_state=seed)[0])


def _circles(n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import make_circles

    return np.asarray(make_circles(n, noise=NOISE, factor=0.5, random_state=seed)[0])


def _eight_gaussians(n: int, seed: int) -> np.ndarray:
    """Gaussians (std 0.5) at 4 * (cos, sin)(k pi / 4), k = 0..7, all scaled by 1 / 1.414."""
    rng = np.random.default_rng(seed)
    angles = np.pi / 4 * rng.integers(0, 8, n)  # (N,)
    centers = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (N, 2)
    return (centers + 0.5 * rng.standard_normal((n, 2))) / 1.414


def _checkerboard(n: int, seed: int) -> np.ndarray:
    """Uniform on the black squares of a 4x4 board on [-4, 4]^2."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2, 2, n)  # (N,)
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2  # (N,)
    return 2 * np.stack([x1, x2], axis=1)


_GENERATORS = {
    "moons": _moons,
    "circles": _circles,
    "eight_gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
}


def density_splits(name: str) -> dict[str, dict[str, np.ndarray]]:
    """Separate pools (seeds 0..3) of float32 (N, 2) points for the four `SPLITS` of ``name``."""
    gen = _GENERATORS[name]
    return {s: {"x": gen(POOL_SIZES[s], seed).astype(np.float32)} for seed, s in enumerate(SPLITS)}
