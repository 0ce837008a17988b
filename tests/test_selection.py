"""Checkpoint selection (`lopt.selection`): ranking by the validation score, candidate parsing."""

from __future__ import annotations

import pytest

from lopt.selection import load_candidates, parse_candidate, rank, table
from lopt.validate import ConfigError


def _row(name, score, wins):
    return {
        "name": name,
        "valid/score": score,
        "valid/wins_global": wins,
        "valid/wins_per_task": 0,
        "valid/tasks": 4,
        "valid/diverged": 0,
    }


def test_rank_orders_by_score_then_wins():
    rows = [_row("a", 0.3, 1), _row("b", 0.1, 0), _row("c", 0.3, 3), _row("d", 2.0, 4)]
    assert [r["name"] for r in rank(rows)] == ["b", "c", "a", "d"]
    text = table(rank(rows), long=False)
    assert text.splitlines()[2].startswith("| b | 0.1000 | - | 0/4 |")  # no median: a row of an older lopt
    rows[1]["valid/median"] = 0.05
    assert table(rank(rows), long=False).splitlines()[2].startswith("| b | 0.1000 | 0.0500 | 0/4 |")


def test_parse_candidate():
    assert parse_candidate("runs/a:100,200") == ("runs/a", [100, 200])
    assert parse_candidate("runs/a") == ("runs/a", [])
    with pytest.raises(ConfigError, match="integer steps"):
        parse_candidate("runs/a:last")


def test_missing_candidate_names_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*theta file"):
        load_candidates([str(tmp_path / "nope")])
