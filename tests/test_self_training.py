"""The self-training study compares like with like: its two meta-training configs differ only in
the outer optimizer (and where they write), and the learned one loads the shipped weights."""

import dataclasses

import lopt
from lopt.meta_train import outer_optimizer
from lopt.self_training import configs


def test_the_two_runs_differ_only_in_the_outer_optimizer(tmp_path):
    runs = configs("mlp-small-v1", steps=300, out=str(tmp_path))
    assert list(runs) == ["AdamW", "mlp-small-v1"]
    a, b = (dataclasses.asdict(c) for c in runs.values())
    differ = {k for k in a if a[k] != b[k]}
    assert differ == {"outer_opt", "outer_theta", "out"}
    assert b["outer_opt"] == "mlp" and b["outer_theta"] == lopt.PRETRAINED["mlp-small-v1"].weights_path
    assert a["num_steps"] == b["num_steps"] == 300 and a["seed"] == b["seed"]
    outer_optimizer(runs["mlp-small-v1"])  # builds: the file holds an `mlp` theta
