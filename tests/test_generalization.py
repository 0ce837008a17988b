"""The generalization study: the variants change exactly what they say, and each row's Adam rate
is the outer-valid argmin of its own 15-rate search, with the test loss reported at that rate."""

import jax
import numpy as np
import pytest

from lopt.generalization import run_study, variants
from lopt.optimizers.learned import get_learned
from lopt.tasks.base import TaskConfig
from lopt.tasks.mlp import MLP, MLPStatic
from lopt.tuning import ADAM_LR_GRID, lr_search, run_search, score


def _tiny():
    family = MLP(datasets=("digits",))
    static = MLPStatic("digits", 8, (4,), "relu", 8)
    return family.task(TaskConfig(static, family.sample_dynamic(jax.random.key(0), static)))


def test_variants_change_one_thing_each():
    task = _tiny()
    got = {label: (v.static, n) for label, v, n in variants(task, 20, 7)}
    assert got["base"] == (task.static, 20)
    assert got["batch x4"][0].batch_size == 32 and got["batch x4"][0].hidden == (4,)
    assert got["batch /4"][0].batch_size == 2
    assert got["width x4"][0].hidden == (16,) and got["width x4"][0].batch_size == 8
    assert got["horizon x10"] == (task.static, 70)


@pytest.mark.slow  # ~1-2 min: four compiled evaluation programs
def test_rows_select_adam_on_outer_valid_and_report_test(tmp_path):
    task = _tiny()
    learned = get_learned("mlp")()
    theta = learned.init(jax.random.key(1))
    grid = ADAM_LR_GRID[::5]  # 3 rates keep the test fast; the study uses all 15
    rows = run_study(
        [task],
        learned,
        theta,
        steps=20,
        longest_horizon=4,
        seeds=2,
        cache=str(tmp_path),
        grid=grid,
        only=("base", "horizon x10"),
    )
    assert [r["variant"] for r in rows] == ["base", "horizon x10"] and rows[-1]["steps"] == 40
    chosen = [v for v in variants(task, 20, 4) if v[0] in ("base", "horizon x10")]
    for r, (_, variant, n) in zip(rows, chosen):
        again = run_search(
            variant,
            lr_search("adam", grid),
            num_steps=n,
            num_seeds=2,
            eval_every=n // 10,
            cache=str(tmp_path),
        )
        assert again.cached  # the study's own run, read back
        valid = np.where(np.isfinite(score(again)), score(again), np.inf)
        best = int(np.argmin(valid))
        assert r["adam_lr"] == float(grid[best])
        assert r["adam_test_loss"] == float(score(again, "test")[best])
        assert r["ratio"] == r["learned_test_loss"] / r["adam_test_loss"]
