"""load / splits / resize / device_arrays on the cheap datasets (fetched into a temporary cache)."""

import itertools

import jax
import numpy as np
import pytest

from lopt.data import DATASETS, SPLITS, device_arrays, load, resize_images
from lopt.data.builders import BUILDERS
from lopt.data.splits import holdout_sizes, permutation, seed_of, split_indices, text_ranges

CHEAP = ("digits", "mnist1d", "breast_cancer", "wine", "iris", "diabetes")
DENSITIES = ("moons", "circles", "eight_gaussians", "checkerboard")


@pytest.fixture(scope="module", autouse=True)
def cheap_cache(tmp_path_factory):
    from lopt.data import fetch

    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cache")
        mp.setenv("LOPT_DATA", str(root))
        fetch(list(CHEAP))
        yield root


def test_splits_match_tasks():
    from lopt.tasks.base import SPLITS as TASK_SPLITS

    assert SPLITS == TASK_SPLITS == ("train", "inner_valid", "outer_valid", "test")


@pytest.mark.parametrize("name", CHEAP + DENSITIES)
def test_load_is_deterministic_and_cached(name, cheap_cache):
    a, b = BUILDERS[name](cheap_cache), BUILDERS[name](cheap_cache)  # two independent builds
    for split in SPLITS:
        assert a.splits[split].keys() == b.splits[split].keys()
        for k in a.splits[split]:
            np.testing.assert_array_equal(a.splits[split][k], b.splits[split][k])
    assert load(name) is load(name)
    assert not load(name).splits["train"]["x"].flags.writeable


@pytest.mark.parametrize(
    "name, total, shape, num_classes",
    [
        ("digits", 1797, (8, 8), 10),
        ("iris", 150, (4,), 3),
        ("wine", 178, (13,), 3),
        ("breast_cancer", 569, (30,), 2),
        ("diabetes", 442, (10,), None),
        ("mnist1d", 5000, (40,), 10),
    ],
)
def test_sizes_shapes_dtypes(name, total, shape, num_classes):
    ds = load(name)
    assert ds.input_shape == shape and ds.num_classes == num_classes and ds.kind == DATASETS[name].kind
    assert sum(len(s["x"]) for s in ds.splits.values()) == total
    x_dtype = np.uint8 if ds.kind == "image" else np.float32
    y_dtype = np.float32 if num_classes is None else np.int32
    for arrays in ds.splits.values():
        assert arrays["x"].dtype == x_dtype and arrays["x"].shape[1:] == shape
        assert arrays["y"].dtype == y_dtype and arrays["y"].shape == arrays["x"].shape[:1]
        if num_classes:
            assert arrays["y"].min() >= 0 and arrays["y"].max() < num_classes


def test_holdout_split_sizes_and_disjoint_indices():
    assert holdout_sizes(1797) == {"train": 1257, "inner_valid": 180, "outer_valid": 180, "test": 180}
    assert holdout_sizes(150) == {"train": 105, "inner_valid": 15, "outer_valid": 15, "test": 15}
    idx = split_indices(1797, holdout_sizes(1797), seed_of("digits"))
    joined = np.concatenate(list(idx.values()))
    assert len(np.unique(joined)) == 1797 == len(joined)
    assert not np.array_equal(np.sort(idx["train"][:50]), np.arange(50))  # really shuffled
    np.testing.assert_array_equal(permutation(10, 3), permutation(10, 3))
    assert not np.array_equal(permutation(100, 1), permutation(100, 2))


def test_digits_rows_come_from_the_split_indices():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    idx = split_indices(1797, holdout_sizes(1797), seed_of("digits"))
    ds = load("digits")
    for split in SPLITS:
        np.testing.assert_array_equal(ds.splits[split]["y"], y[idx[split]])
        expected = np.floor(x[idx[split]] * 255 / 16 + 0.5).reshape(-1, 8, 8)
        np.testing.assert_array_equal(ds.splits[split]["x"], expected)
    assert ds.splits["train"]["x"].max() == 255


def test_mnist1d_uses_its_official_test_set(cheap_cache):
    raw = {k: np.load(cheap_cache / "mnist1d" / f"{k}.npy") for k in ("x_test", "y_train")}
    ds = load("mnist1d")
    np.testing.assert_array_equal(ds.splits["test"]["x"], raw["x_test"])
    idx = split_indices(4000, {"train": 3000, "inner_valid": 500, "outer_valid": 500}, seed_of("mnist1d"))
    np.testing.assert_array_equal(ds.splits["outer_valid"]["y"], raw["y_train"][idx["outer_valid"]])


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "diabetes"])
def test_tabular_is_standardised_with_train_stats(name):
    ds = load(name)
    x = ds.splits["train"]["x"]
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-5)
    assert abs(ds.splits["test"]["x"].mean()) < 0.5  # held-out data: close to, not exactly, standard
    if name == "diabetes":
        y = ds.splits["train"]["y"]
        assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-5


@pytest.mark.parametrize("name", DENSITIES)
def test_densities_are_separate_pools(name):
    ds = load(name)
    assert ds.kind == "density" and ds.input_shape == (2,)
    sizes = {s: a["x"].shape for s, a in ds.splits.items()}
    assert sizes == {
        "train": (8000, 2),
        "inner_valid": (1000, 2),
        "outer_valid": (1000, 2),
        "test": (1000, 2),
    }
    assert all(a["x"].dtype == np.float32 for a in ds.splits.values())
    train = {row.tobytes() for row in ds.splits["train"]["x"]}
    assert not train & {row.tobytes() for row in ds.splits["test"]["x"]}


def test_density_shapes_are_right():
    board = load("checkerboard").splits["train"]["x"]
    parity = (np.floor(board[:, 0] / 2) + np.floor(board[:, 1] / 2)) % 2  # 0 on the black squares
    assert (parity == 0).all()
    assert board.min() >= -4 and board.max() <= 4
    points = load("eight_gaussians").splits["train"]["x"]
    sector = np.round(np.arctan2(points[:, 1], points[:, 0]) / (np.pi / 4)).astype(int) % 8
    assert np.bincount(sector, minlength=8).min() > 850  # ~1000 per mode
    radius = np.linalg.norm(load("circles").splits["train"]["x"], axis=1)
    assert ((np.abs(radius - 1) < 0.25) | (np.abs(radius - 0.5) < 0.25)).all()


def test_text_ranges_are_contiguous_and_cut_at_lines():
    text = "".join(f"verse {i}\n" for i in range(1000))
    ranges = text_ranges(text)
    assert list(ranges) == list(SPLITS)
    bounds = list(ranges.values())
    assert bounds[0][0] == 0 and bounds[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(text[lo - 1] == "\n" for lo, _ in bounds[1:])
    assert 0.79 < (bounds[0][1] / len(text)) < 0.81


def test_resize_constant_and_by_hand():
    rng = np.random.default_rng(0)
    const = np.full((2, 28, 28), 77, np.uint8)
    for size in (14, 7, 4):
        out = resize_images(const, size)
        assert out.shape == (2, size, size) and out.dtype == np.uint8 and (out == 77).all()
    x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    q = x.astype(int)
    by_hand = (q[:, 0::2, 0::2] + q[:, 1::2, 0::2] + q[:, 0::2, 1::2] + q[:, 1::2, 1::2] + 2) // 4
    np.testing.assert_array_equal(resize_images(x, 14), by_hand)
    assert resize_images(x, 28) is x


def test_resize_to_8_pads_to_32_like_digits():
    out = resize_images(np.full((1, 28, 28), 200, np.uint8), 8)[0]
    assert (out[1:-1, 1:-1] == 200).all()  # interior 4x4 blocks are all image
    assert out[0, 3] == 100 and out[0, 0] == 50  # edge blocks half image, corners a quarter


def test_resize_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"valid sizes are \[1, 2, 4, 7, 8, 14, 16, 28\]"):
        resize_images(np.zeros((1, 28, 28), np.uint8), 10)
    with pytest.raises(ValueError, match="uint8"):
        resize_images(np.zeros((1, 28, 28), np.float32), 14)


def test_device_arrays():
    arrays = device_arrays("digits", image_size=4)
    assert arrays is device_arrays("digits", image_size=4)
    assert set(arrays) == set(SPLITS)
    x, y = arrays["train"]["x"], arrays["train"]["y"]
    assert (
        isinstance(x, jax.Array) and x.shape == (1257, 4, 4) and x.dtype == np.uint8 and y.dtype == np.int32
    )
    np.testing.assert_array_equal(np.asarray(x), resize_images(load("digits").splits["train"]["x"], 4))
    assert device_arrays("digits", image_size=8) is device_arrays("digits")  # native size: one copy
    assert device_arrays("iris")["test"]["x"].shape == (15, 4)
    with pytest.raises(ValueError, match="image datasets only"):
        device_arrays("iris", image_size=4)


def test_device_arrays_first_loaded_under_a_trace_stay_concrete():
    """The device-array cache outlives the trace that first fills it (e.g. `jax.eval_shape` of a
    meta-trainer's init): it must hold concrete arrays, not the trace's tracers."""
    import importlib

    load_module = importlib.import_module("lopt.data.load")  # the module (lopt.data.load is also a function)

    load_module._device_arrays.cache_clear()
    jax.eval_shape(lambda: load_module.device_arrays("wine")["train"]["x"].sum())
    x = load_module.device_arrays("wine")["train"]["x"]
    assert isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
    np.testing.assert_array_equal(np.asarray(x), load("wine").splits["train"]["x"])
