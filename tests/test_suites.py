"""The named suites: disjoint (family, dataset) pairs, held-out-only families, reproducible task lists."""

import jax
import numpy as np
import pytest

from lopt.tasks import SUITES, get_suite
from lopt.validate import UnknownNameError

pytestmark = pytest.mark.strict_promotion


@pytest.mark.parametrize("train_suite", ["train", "train_nn"])
def test_train_and_test_suites_share_no_family_dataset_pair(train_suite):
    train, test = SUITES[train_suite].pairs(), SUITES["test"].pairs()
    assert train and test
    assert train.isdisjoint(test), train & test


def test_train_nn_is_the_train_suite_without_its_toy_problems():
    toys = {"quadratic", "functions2d", "linear_regression"}
    assert SUITES["train_nn"].pairs() == {(f, d) for f, d in SUITES["train"].pairs() if f not in toys}


def test_held_out_only_families_and_datasets():
    train_families = {f for f, _ in SUITES["train"].pairs()}
    train_datasets = {d for _, d in SUITES["train"].pairs()}
    assert {"transformer_lm", "conv1d"} <= {f for f, _ in SUITES["test"].pairs()}
    assert "transformer_lm" not in train_families and "conv1d" not in train_families
    for dataset in ("fashion_mnist", "iris", "checkerboard"):
        assert dataset not in train_datasets
        assert dataset in {d for _, d in SUITES["test"].pairs()}


def test_every_sampled_task_stays_inside_its_suite():
    for suite in SUITES.values():
        pairs = suite.pairs()
        for s in range(12):
            family, cfg = suite.sample(jax.random.key(s))
            dataset = getattr(cfg.static, "dataset", "-")
            assert (family.name, dataset) in pairs


def test_task_list_is_reproducible():
    a = get_suite("test").tasks(per_family=1, seed=3)
    b = get_suite("test").tasks(per_family=1, seed=3)
    assert [t.name for t in a] == [t.name for t in b]
    for ta, tb in zip(a, b):
        jax.tree.map(np.testing.assert_array_equal, ta.dynamic, tb.dynamic)
    assert len(a) == len(get_suite("test").entries)


def test_unknown_suite_lists_names():
    with pytest.raises(UnknownNameError, match="test, train, train_nn"):
        get_suite("heldout")
