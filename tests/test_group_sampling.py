"""`sample_groups`: stratified task groups cover every family of the suite evenly; uniform draws are
the former ones, bit for bit; an older run's config resolves to the sampling it was trained with."""

import collections
import json

import jax
import pytest

from lopt.config import ConfigError, MetaTrainConfig, read_config_file
from lopt.meta_train.trainer import sample_groups
from lopt.tasks.base import host_rng
from lopt.tasks.suites import get_suite


def _families(cfg, seed):
    groups = sample_groups(jax.random.key(seed), cfg)
    counts = collections.Counter()
    for family, _, n in groups:
        counts[family.name] += n
    return counts


@pytest.mark.parametrize("num_groups", [3, 7, 10, 14, 22])
def test_stratified_gives_every_family_its_share(num_groups):
    cfg = MetaTrainConfig(num_groups=num_groups, validate_every=0)
    names = [f.name for f in get_suite(cfg.suite).families()]
    for seed in range(4):
        counts = _families(cfg, seed)
        assert sum(counts.values()) == num_groups
        assert set(counts) <= set(names)
        low, rest = divmod(num_groups, len(names))
        assert sorted(counts.get(n, 0) for n in names) == [low] * (len(names) - rest) + [low + 1] * rest


def test_stratified_prefixes_agree_and_the_seed_changes_the_draw():
    small = sample_groups(jax.random.key(2), MetaTrainConfig(num_groups=8, validate_every=0))
    large = sample_groups(jax.random.key(2), MetaTrainConfig(num_groups=14, validate_every=0))
    assert [(f.name, s) for f, s, _ in small][:6] == [(f.name, s) for f, s, _ in large][:6]
    other = sample_groups(jax.random.key(3), MetaTrainConfig(num_groups=8, validate_every=0))
    assert [(f.name, s) for f, s, _ in other] != [(f.name, s) for f, s, _ in small]


def test_uniform_is_the_former_draw():
    cfg = MetaTrainConfig(num_groups=8, group_sampling="uniform", validate_every=0)
    families = get_suite(cfg.suite).families()
    key = jax.random.key(5)
    expected = []
    for k in jax.random.split(key, cfg.num_groups):  # the former sampler, written out
        k_family, k_static = jax.random.split(k)
        family = families[int(host_rng(k_family).integers(len(families)))]
        expected.append((family.name, family.sample_static(k_static)))
    got = [(f.name, s) for f, s, n in sample_groups(key, cfg) for _ in range(n)]
    assert sorted(got, key=repr) == sorted(expected, key=repr)


def test_one_family_draws_the_same_statics_either_way():
    base = {"family": "quadratic", "space": '{"dims": [2, 4, 8]}', "num_groups": 6, "validate_every": 0}
    a = sample_groups(jax.random.key(0), MetaTrainConfig(**base))
    b = sample_groups(jax.random.key(0), MetaTrainConfig(**base, group_sampling="uniform"))
    assert [(s, n) for _, s, n in a] == [(s, n) for _, s, n in b]


def test_an_older_run_resolves_to_uniform_and_a_bad_name_lists_the_choices(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": {"num_groups": 8}, "groups": []}))
    assert read_config_file(path)["group_sampling"] == "uniform"
    with pytest.raises(ConfigError, match="stratified"):
        MetaTrainConfig(group_sampling="even")
