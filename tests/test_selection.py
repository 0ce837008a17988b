"""Checkpoint selection (`lopt.selection`): the ranking by hand on synthetic report rows."""

from __future__ import annotations

import numpy as np
import pytest

from lopt.selection import parse_candidate, rank
from lopt.validate import ConfigError


def _final(method, task, losses):
    return [{"optimizer": method, "task": task, "outer_valid_loss": str(v)} for v in losses]


def test_rank_counts_wins_on_outer_valid_and_normalizes_by_hand():
    final = (
        _final("adam-lr-global", "a", [1.0, 1.2, 1.1]) + _final("adam-lr-global", "b", [0.5, 0.5, 0.5])
        + _final("x@100", "a", [0.9, 1.0, 0.95]) + _final("x@100", "b", [0.6, 0.7, 0.8])
        + _final("x@200", "a", [2.0, "nan", 2.2]) + _final("x@200", "b", ["nan", "nan", "nan"])
    )  # fmt: skip
    init = [{"task": "a", "outer_valid_loss": "3.0"}, {"task": "b", "outer_valid_loss": "2.5"}]
    ranked = {r["method"]: r for r in rank(final, init)}
    # medians: adam a=1.1 b=0.5; x@100 a=0.95 b=0.7; x@200 NaN on both (a NaN seed makes the median NaN)
    assert ranked["x@100"]["wins"] == 1 and ranked["x@100"]["tasks"] == 2
    best_a, best_b = 0.95, 0.5
    n_a = (0.95 - best_a) / (3.0 - best_a)
    n_b = (0.7 - best_b) / (2.5 - best_b)
    assert ranked["x@100"]["mean_norm_valid"] == pytest.approx((n_a + n_b) / 2)
    n_adam = ((1.1 - best_a) / (3.0 - best_a) + 0.0) / 2
    assert ranked["adam-lr-global"]["mean_norm_valid"] == pytest.approx(n_adam)
    # a diverged seed makes the median NaN on task a, a diverged task counts as CLIP = 2
    assert ranked["x@200"]["wins"] == 0
    assert ranked["x@200"]["mean_norm_valid"] == pytest.approx(2.0)
    order = [r["method"] for r in rank(final, init)]
    assert order == ["x@100", "x@200", "adam-lr-global"]  # the reference is listed last
    assert np.isfinite(ranked["x@100"]["valid"]["a"])


def test_parse_candidate():
    assert parse_candidate("runs/a:100,200") == ("runs/a", [100, 200])
    assert parse_candidate("runs/a") == ("runs/a", [])
    with pytest.raises(ConfigError, match="integer steps"):
        parse_candidate("runs/a:last")
