"""Deterministic, disjoint train / inner_valid / outer_valid / test splits.

Row permutations come from a fixed integer hash (splitmix64) of the row index and a per-dataset
seed rather than from a numpy Generator, so a split never changes with the numpy version.
"""

from __future__ import annotations

import zlib

import numpy as np

from lopt.data.dataset import SPLITS


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014) on uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def seed_of(name: str) -> int:
    """A fixed per-dataset seed (crc32 of the name)."""
    return zlib.crc32(name.encode())


def permutation(n: int, seed: int) -> np.ndarray:
    """A fixed pseudo-random permutation of ``range(n)`` determined by ``seed`` (int64)."""
    keys = _splitmix64(np.arange(n, dtype=np.uint64) + _splitmix64(np.array([seed], np.uint64)))
    return np.argsort(keys, kind="stable")


def split_indices(n: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint row indices: consecutive chunks of a seeded permutation of ``range(n)``.

    Args:
        n: number of rows; ``sum(sizes.values())`` must equal it.
        sizes: split name -> number of rows, in the order the chunks are taken.
        seed: the permutation's seed.
    """
    if sum(sizes.values()) != n:
        raise ValueError(f"split sizes {sizes} sum to {sum(sizes.values())}, not to the {n} rows.")
    perm = permutation(n, seed)
    bounds = np.cumsum([0, *sizes.values()])
    return {name: perm[lo:hi] for name, lo, hi in zip(sizes, bounds[:-1], bounds[1:])}


def holdout_sizes(n: int, fraction: float = 0.1) -> dict[str, int]:
    """Sizes for all four `SPLITS` of ``n`` rows: ``fraction`` each for the three held-out splits."""
    k = round(fraction * n)
    return {"train": n - 3 * k, "inner_valid": k, "outer_valid": k, "test": k}


def text_ranges(
    text: str, fractions: tuple[float, ...] = (0.8, 0.05, 0.05, 0.1)
) -> dict[str, tuple[int, int]]:
    """Contiguous ``[start, stop)`` character ranges for the four `SPLITS`, cut at line boundaries.

    Each nominal cut at ``fraction * len(text)`` moves forward to just after the next newline, so
    every split starts at the beginning of a line (a verse for the KJV).
    """
    cuts, total = [0], 0.0
    for fraction in fractions[:-1]:
        total += fraction
        newline = text.find("\n", round(total * len(text)))
        cuts.append(len(text) if newline < 0 else newline + 1)
    cuts.append(len(text))
    return {name: (cuts[i], cuts[i + 1]) for i, name in enumerate(SPLITS)}
