"""`lopt.lookahead_study`: the four sweeps are what they claim (Lookahead around the inner optimizer,
the grids), and the summary's numbers (best rate, seed spread, good rates) are the hand-computed ones."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_tuning import synthetic

from lopt import lookahead_study
from lopt.optimizers import LookaheadState, lookahead
from lopt.tuning import ADAM_LR_GRID, Search


def test_study_searches_are_lookahead_around_the_inner_optimizer():
    s = lookahead_study.study_searches()
    assert list(s) == ["adam", "lookahead(adam)", "sgd", "lookahead(sgd)"]
    np.testing.assert_array_equal(s["adam"].trials["learning_rate"], ADAM_LR_GRID)
    np.testing.assert_array_equal(s["lookahead(sgd)"].trials["learning_rate"], lookahead_study.SGD_LR_GRID)
    params = {"w": jnp.array([1.0, -1.0])}
    opt = s["lookahead(sgd)"].make({"learning_rate": jnp.float32(0.1)})
    ref = lookahead(optax.sgd(0.1), k=5, alpha=0.5)
    st, st_ref, p, p_ref = opt.init(params), ref.init(params), params, params
    assert isinstance(st, LookaheadState)
    for t in range(7):  # crosses a sync at step 5
        g = {"w": p["w"] * 2.0 + t}
        u, st = opt.update(g, st, p)
        u_ref, st_ref = ref.update({"w": p_ref["w"] * 2.0 + t}, st_ref, p_ref)
        p, p_ref = optax.apply_updates(p, u), optax.apply_updates(p_ref, u_ref)
    np.testing.assert_allclose(p["w"], p_ref["w"], rtol=1e-6)


def test_summarize_hand_computed():
    lrs = np.array([0.01, 0.1, 1.0], np.float32)
    searches = {k: Search(k, None, {"learning_rate": lrs}) for k in ("sgd", "lookahead(sgd)")}
    # init 10; final outer-valid (2 seeds). sgd: best at lr 0.1 (mean 2), lr 1 diverged.
    sgd = synthetic(
        [[6.0, 6.0], [1.0, 3.0], [1.0, 1.0]],
        test=[[6.0, 6.0], [1.0, 3.0], [0.0, 0.0]],
        diverged=[[4, 4], [4, 4], [4, 1]],
    )
    # lookahead(sgd): every rate fine; best at lr 1 (mean 1), seeds agree
    la = synthetic([[4.0, 4.0], [1.5, 1.5], [1.0, 1.0]], test=[[4.0, 4.0], [1.5, 1.5], [1.25, 1.25]])
    study = lookahead_study.summarize({"task": {"sgd": sgd, "lookahead(sgd)": la}}, searches)
    rows = {r["optimizer"]: r for r in study["rows"]}
    assert rows["sgd"]["best_lr"] == pytest.approx(0.1) and rows["sgd"]["test_loss"] == pytest.approx(2.0)
    assert rows["sgd"]["seed_std"] == pytest.approx(1.0) and rows["sgd"]["diverged_lrs"] == 1
    assert rows["lookahead(sgd)"]["best_lr"] == pytest.approx(1.0)
    assert (
        rows["lookahead(sgd)"]["test_loss"] == pytest.approx(1.25)
        and rows["lookahead(sgd)"]["seed_std"] == 0.0
    )
    # L_best over both sweeps' non-failed rates = 1 (lookahead lr 1); normalized (L − 1)/9:
    # sgd: [5/9, 1/9, CLIP] -> none <= 0.1; lookahead: [3/9, 0.5/9, 0] -> 2 good
    np.testing.assert_allclose(study["sweeps"]["task"]["sgd"].norm_valid, [5 / 9, 1 / 9, 2.0])
    assert rows["sgd"]["good_lrs"] == 0 and rows["lookahead(sgd)"]["good_lrs"] == 2
    # median seed std over non-diverged rates: sgd [0, 1] -> 0.5; lookahead 0
    assert rows["sgd"]["median_seed_std"] == pytest.approx(0.5)
    (finding,) = study["findings"]
    assert finding.startswith(
        "lookahead(sgd) vs sgd on 1 tasks: lower final test loss at its tuned learning rate on 1 of 1"
    )
    assert "more good learning rates" in finding and "on 1 tasks, fewer on 0 (total 2 vs 0)" in finding
    assert "+1.00 decades" in finding
    assert finding.endswith(
        "On 1 of 1 tasks a best rate sits at the edge of the grid, so the tuned optimum may lie outside it."
    )
    assert rows["lookahead(sgd)"]["at_grid_edge"] and not rows["sgd"]["at_grid_edge"]
