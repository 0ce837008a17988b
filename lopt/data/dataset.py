"""The `Dataset` record that `load` returns, and the four split names shared with `lopt.tasks`."""

from __future__ import annotations

import dataclasses

import numpy as np

from lopt.data.registry import Kind

# The same tuple as `lopt.tasks.base.SPLITS` (a test checks that they agree).
SPLITS = ("train", "inner_valid", "outer_valid", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset as read-only numpy arrays on the host, in four disjoint, deterministic splits.

    Array conventions per ``kind`` (the tasks rely on them):

    - ``image``: ``x`` uint8 (N, H, W) in 0..255, ``y`` int32 (N,).
    - ``vector``: ``x`` float32 (N, D), ``y`` int32 (N,).
    - ``tabular``: ``x`` float32 (N, D) standardised with the train split's mean/std; ``y`` int32
      for classification, float32 standardised with train stats for regression.
    - ``text``: ``x`` uint8 token ids, one contiguous 1-D stream per split; id = index in ``vocab``.
    - ``density``: ``x`` float32 (N, 2).
    """

    name: str
    kind: Kind
    splits: dict[str, dict[str, np.ndarray]]  # split name -> {"x": ..., "y": ...}
    num_classes: int | None  # None for regression, text and densities
    vocab: str | None  # text only: the sorted distinct characters
    input_shape: tuple[int, ...]  # shape of one example's x: (H, W), (D,), or () for a token

    def __post_init__(self):
        if tuple(self.splits) != SPLITS:
            raise ValueError(
                f"Dataset {self.name!r} has splits {list(self.splits)}; expected {list(SPLITS)}."
            )
        for arrays in self.splits.values():
            for array in arrays.values():
                array.setflags(write=False)  # shared through load's cache: nobody may edit it

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(a['x'])}" for s, a in self.splits.items())
        return f"Dataset({self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, {sizes})"
