"""The self-training study compares like with like: its two meta-training configs differ only in
the outer optimizer (and where they write), and the learned one loads the shipped weights."""

import dataclasses

import pytest

import lopt
from lopt.meta_train import outer_optimizer
from lopt.self_training import configs


@pytest.mark.parametrize("name, arch", [("mlp-small-v1", "mlp"), ("hierarchical-small-v1", "hierarchical")])
def test_the_two_runs_differ_only_in_the_outer_optimizer(tmp_path, name, arch):
    runs = configs(name, steps=300, out=str(tmp_path))
    assert list(runs) == ["AdamW", name]
    a, b = (dataclasses.asdict(c) for c in runs.values())
    differ = {k for k in a if a[k] != b[k]}
    assert differ == {"outer_opt", "outer_theta", "out"}
    assert b["outer_opt"] == arch and b["outer_theta"] == lopt.PRETRAINED[name].weights_path
    assert a["num_steps"] == b["num_steps"] == 300 and a["seed"] == b["seed"]
    outer_optimizer(runs[name])  # the file holds a theta of that architecture, or this raises
