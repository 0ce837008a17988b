"""`lopt tune`: results.json and the figure, compute accounting, diverging trials, bad input."""

import json
import os

import numpy as np
import pytest

from lopt.cli import main
from lopt.hpo.tune import TUNERS, TuneConfig, parse_space, run_tune, search_points


def _run(tmp_path, task="nqm", **kw):
    cfg = TuneConfig(
        **{"optimizer": "sgd", "num_steps": 40, "num_seeds": 2, "grid_size": 6, "out": str(tmp_path), **kw}
    )
    return cfg, run_tune(task, cfg)


def test_grid_records_diverging_trials_and_writes_results(tmp_path):
    _, out = _run(tmp_path, method="grid", ranges="learning_rate=1e-3:10", budget=400, compare=False)
    with open(tmp_path / "results.json") as f:
        on_disk = json.load(f)
    assert on_disk["final"] == out["final"] and os.path.getsize(tmp_path / "tune.png") > 1000
    with open(tmp_path / "config.json") as f:  # the resolved config, written before the run starts
        assert json.load(f)["config"] == on_disk["config"] and on_disk["config"]["budget"] == 400
    lrs = [r["hparams"]["learning_rate"] for r in out["trajectory"]]
    np.testing.assert_allclose(lrs, [1e-3, 1e-2, 1e-1, 1.0, 10.0], rtol=1e-5)  # 400 steps: 5 runs of 2 x 40
    diverged = [r["diverged"] for r in out["trajectory"]]
    assert diverged[-1] and not any(diverged[:3])  # lr 10 on curvatures up to 1 diverges; recorded
    assert out["trajectory"][-1]["outer_valid"] is None
    assert out["final"]["outer_valid"] is not None and not out["final"]["diverged"]
    assert out["compute"]["total_inner_steps"] == 5 * 2 * 40 <= out["compute"]["budget"]


def test_pes_stays_in_range_within_budget_beside_equal_compute_searches(tmp_path):
    _, out = _run(tmp_path, method="pes", truncation=10, num_particles=2, budget=1200, outer_lr=0.3)
    lo, hi = out["space"]["learning_rate"]["range"]
    for row in out["trajectory"]:
        assert lo * (1 - 1e-5) <= row["hparams"]["learning_rate"] <= hi * (1 + 1e-5)
    c = out["compute"]
    assert c["tuning_inner_steps"] + c["eval_inner_steps"] == c["total_inner_steps"] <= 1200
    assert c["tuning_inner_steps"] == (len(out["trajectory"]) - 1) * 2 * 2 * 10
    for other in ("grid", "random"):  # equal compute: as many full runs as the method's total steps buy
        assert out[other]["inner_steps"] <= c["total_inner_steps"]
        assert out[other]["num_trials"] == c["total_inner_steps"] // (40 * 2)
    assert out["final"]["test"] is not None


def test_search_points_grid_is_a_product_in_log_space():
    space = parse_space(
        TuneConfig(
            optimizer="momentum",
            hparams="learning_rate,momentum",
            ranges="learning_rate=1e-4:1,momentum=0:0.99",
        )
    )
    pts = search_points(space, 9, "grid")
    assert sorted(set(np.round(pts["learning_rate"], 6))) == pytest.approx([1e-4, 1e-2, 1.0], rel=1e-4)
    assert sorted(set(np.round(pts["momentum"], 6))) == pytest.approx([0.0, 0.9, 0.99], abs=1e-4)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--hparams", "learning_rate,weight_decay"], "valid hparams are: learning_rate, b1, b2, eps"),
        (["--ranges", "learning_rate=1e-2:1"], "start value learning_rate=0.001 is outside its range"),
        (["--method", "ift"], "use --optimizer adam8p --hparams l2"),
        (["--ranges", "learning_rate=1e-2"], "learning_rate=1e-5:1"),
    ],
)
def test_bad_input_exits_with_a_message_that_says_what_to_change(args, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main(["tune", "nqm", *args])
    assert expected in str(e.value)


@pytest.mark.parametrize("method", sorted(TUNERS))
def test_every_method_runs_within_its_budget(tmp_path, method):
    extra = {"optimizer": "adam8p", "hparams": "l2", "ranges": "l2=1e-6:1"} if method == "ift" else {}
    _, out = _run(
        tmp_path,
        method=method,
        num_steps=20,
        truncation=10,
        num_particles=2,
        budget=400,
        compare=False,
        **extra,
    )
    c = out["compute"]
    assert c["total_inner_steps"] <= c["budget"] == 400
    assert out["final"]["outer_valid"] is not None and np.isfinite(out["final"]["outer_valid"])
    assert len(out["trajectory"]) >= 2
