"""fetch / cache behaviour on the cheap datasets, in a temporary cache (``$LOPT_DATA``)."""

import os
import random
import time

import numpy as np
import pytest

from lopt.data import (
    DATASETS,
    ChecksumError,
    DatasetMissingError,
    SourceError,
    cache_dir,
    fetch,
    load,
    status,
)
from lopt.data.cache import sha256_file
from lopt.data.sources import SOURCES, make_mnist1d
from lopt.validate import UnknownNameError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_cache_dir_follows_env(cache, monkeypatch):
    assert cache_dir() == cache
    monkeypatch.delenv("LOPT_DATA")
    assert str(cache_dir()).endswith(os.path.join(".cache", "lopt"))


def test_fetch_is_idempotent(cache):
    first = fetch(["iris", "wine", "moons"])
    assert [(r.name, r.action) for r in first] == [
        ("iris", "fetched"),
        ("wine", "fetched"),
        ("moons", "procedural"),
    ]
    files = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert files == ["iris/x.npy", "iris/y.npy", "wine/x.npy", "wine/y.npy"]  # no staging left behind
    before = _snapshot(cache)
    start = time.perf_counter()
    second = fetch(["iris", "wine"])
    assert time.perf_counter() - start < 0.5
    assert [r.action for r in second] == ["present", "present"]
    assert _snapshot(cache) == before


def test_fetched_files_match_pins(cache):
    fetch(["iris", "diabetes"])
    for name in ("iris", "diabetes"):
        for f in DATASETS[name].files:
            path = cache / name / f.name
            assert sha256_file(path) == f.sha256 and path.stat().st_size == f.size


def test_checksum_mismatch_names_file_and_touches_nothing(cache):
    fetch(["iris", "wine"])
    bad = cache / "iris" / "x.npy"
    bad.write_bytes(b"not the iris data")
    before = _snapshot(cache)
    pinned = DATASETS["iris"].files[0].sha256
    with pytest.raises(ChecksumError) as err:
        fetch(["iris"])
    message = str(err.value)
    assert str(bad) in message and pinned in message and sha256_file(bad) in message
    assert "lopt data fetch iris --force" in message
    with pytest.raises(ChecksumError, match="lopt data fetch iris --force"):
        load("iris")
    assert _snapshot(cache) == before  # the bad file and every other file left exactly as they were

    assert [r.action for r in fetch(["iris"], force=True)] == ["fetched"]
    assert sha256_file(bad) == pinned
    assert len(load("iris").splits["train"]["x"]) == 105


def test_missing_dataset_says_how_to_fetch(cache):
    with pytest.raises(DatasetMissingError, match="lopt data fetch iris"):
        load("iris")
    rows = {r.name: r for r in status()}
    assert not rows["iris"].present and rows["iris"].size == 0 and rows["iris"].expected_size == 4928 + 1328
    assert rows["moons"].present  # procedural


def test_status_after_fetch(cache):
    fetch(["wine"])
    row = {r.name: r for r in status(verify=True)}["wine"]
    assert row.present and row.size == row.expected_size == 18_640 + 1_552
    assert row.kind == "tabular" and "scikit-learn" in row.source


def test_unknown_name_lists_valid_names(cache):
    with pytest.raises(UnknownNameError) as err:
        load("mnits")
    assert "'mnits'" in str(err.value) and "fashion_mnist, iris, kjv, mnist, mnist1d" in str(err.value)
    with pytest.raises(UnknownNameError, match="valid dataset names are"):
        fetch(["iris", "nope"])
    assert not cache.exists()  # validated before any work


def test_missing_program_gives_install_advice(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SourceError, match=r"`bible` is not installed.*apt-get install bible-kjv"):
        fetch(["kjv"])
    assert not (cache / "kjv").exists()


def test_mnist1d_generation_keeps_global_random_state():
    random.seed(123)
    np.random.seed(7)
    py_before, np_before = random.getstate(), np.random.get_state()
    arrays = make_mnist1d()
    py_after, np_after = random.getstate(), np.random.get_state()
    assert py_after == py_before
    assert np_after[0] == np_before[0] and np_after[2:] == np_before[2:]
    np.testing.assert_array_equal(np_after[1], np_before[1])
    assert arrays["x_train"].shape == (4000, 40) and arrays["x_train"].dtype == np.float32
    assert arrays["y_test"].shape == (1000,) and arrays["y_test"].dtype == np.int32
    assert np.bincount(arrays["y_train"]).min() >= 350  # ~400 per class


def test_registry_is_consistent():
    from lopt.data.builders import BUILDERS

    assert set(BUILDERS) == set(DATASETS)
    assert set(SOURCES) == {n for n, s in DATASETS.items() if not s.procedural}
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.kind in ("image", "vector", "text", "tabular", "density")
        for f in spec.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.size > 0
