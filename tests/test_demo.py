"""`lopt demo` at a small size: Adam's rate is selected on outer-valid and reported on test, the
pretrained optimizer's numbers are those of an independent `evaluate` run, the meta-training part
logs every outer step, and the report links figures that exist."""

import json
import re

import numpy as np

import lopt
from lopt.demo import DemoConfig, heldout_tasks, run_demo
from lopt.tuning import run_key


def test_demo_small(tmp_path):
    cfg = DemoConfig(
        out=str(tmp_path),
        families=("logistic_regression",),
        steps=200,
        seeds=2,
        eval_every=100,
        meta_steps=20,
    )
    results = run_demo(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 200
    assert [r["task"] for r in saved["heldout"]] == [t.name for t in heldout_tasks(cfg)]
    tasks = heldout_tasks(cfg)
    for row, task in zip(saved["heldout"], tasks):
        valid = row["adam_valid_loss_per_lr"]
        best = int(np.nanargmin(valid))
        assert row["adam_best_lr"] == cfg.learning_rates[best]
        assert row["adam_test_loss"] == row["adam_test_loss_per_lr"][best]
        curves = lopt.evaluate(
            run_key(task, cfg.seed),  # the key of every run on this task (Adam's too)
            task,
            lopt.pretrained(cfg.pretrained, num_steps=200),  # T: the run length
            num_steps=200,
            num_seeds=2,
            eval_every=100,
        )
        np.testing.assert_allclose(
            row["pretrained_test_loss"], np.median(curves.eval["test"]["loss"][:, -1]), rtol=1e-4
        )
    meta = saved["meta_train"]
    assert len(meta["meta_loss"]) == 20 and np.all(np.isfinite(meta["meta_loss"]))
    assert results["meta_train"]["fresh_tasks"] == 12
    html = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="([^"]+)"', html)
    assert sorted(images) == ["figures/heldout_curves.png", "figures/meta_loss.png"]
    for image in images:
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
