"""`lopt.report`: the tables carry the numbers of the results they were made from, every output file
is written, the `lopt eval` driver wires searches, selection and the study together (with training
replaced by synthetic results), and bad input gives messages that name the problem."""

from __future__ import annotations

import csv
import json
import zlib

import jax
import numpy as np
import pytest
from test_tuning import synthetic

from lopt import report
from lopt.cli import main
from lopt.report import EvalConfig, Outcome, compare, report_blocks, to_markdown, write_report
from lopt.report import run as report_run
from lopt.studies import report_studies
from lopt.tasks.suites import Suite, _entry
from lopt.tuning import Method, Search
from lopt.validate import ConfigError


def small_results():
    """Two tasks; search "s" has 2 trials, search "one" 1 trial (diverged on t2). 2 seeds each."""
    s = {
        "t1": synthetic([[2.0, 2.0], [1.0, 1.0]], test=[[2.5, 2.5], [0.1, 0.1468]], task="t1"),
        "t2": synthetic([[3.0, 3.0], [4.0, 4.0]], test=[[3.25, 3.75], [4.5, 4.5]], task="t2"),
    }
    one = {
        "t1": synthetic([[1.5, 1.5]], test=[[0.4321, 0.4321]], task="t1", name="one"),
        "t2": synthetic([[1.0, 1.0]], task="t2", name="one", diverged=[[4, 2]]),
    }
    results = {t: {"s": s[t], "one": one[t]} for t in ("t1", "t2")}
    methods = [
        Method("p", Search("s", None, {"learning_rate": np.array([0.1, 0.2])}), "per_task"),
        Method("f", Search("one", None, {"_": np.zeros(1)}), "fixed"),
    ]
    return results, methods


def test_markdown_tables_hold_the_numbers_of_the_results():
    results, methods = small_results()
    outcomes = compare(results, methods)
    by = {(o.task, o.method): o for o in outcomes}
    assert by["t1", "p"].trial == 1 and by["t1", "p"].test_loss == pytest.approx(0.1234)
    assert by["t2", "p"].trial == 0 and by["t2", "p"].test_loss == pytest.approx(3.5)
    assert by["t2", "f"].diverged and by["t2", "f"].norm_test == 2.0
    md = to_markdown(report_blocks(EvalConfig(), methods, outcomes, {}, None, [], 1.0, {}))
    assert "| t1 | 0.1234 | 0.4321 |" in md
    assert "| t2 | 3.5 | diverged |" in md
    assert "| t1 | p | 1 | learning_rate=0.2 |" in md
    assert "| t2 | f | 0 | _=0 (diverged) |" in md  # the fixed setting failed there
    # summary: normalized test loss per task. t1: L_best 0.1234 (p), init 10 -> p 0, f (0.4321-0.1234)/9.8766
    f_t1 = (0.4321 - 0.1234) / (10 - 0.1234)
    assert f"| f | {report.fmt((f_t1 + 2.0) / 2)} |" in md
    assert "| f | " in md and "| 1 | 0/2 |" in md  # f: one diverged task, better than p on none


def test_write_report_writes_every_file(tmp_path):
    results, methods = small_results()
    outcomes = compare(results, methods)
    timings = [
        {
            "task": "t1",
            "search": "s",
            "runs": "2x2",
            "compile_seconds": 1.5,
            "run_seconds": 2.25,
            "cached": False,
        }
    ]
    summary = write_report(
        str(tmp_path), EvalConfig(name="x"), methods, results, outcomes, None, timings, 3.0
    )
    for f in (
        "report.md",
        "report.html",
        "results.csv",
        "final.csv",
        "summary.json",
        "timings.json",
        "figures/curves.png",
        "figures/improvement.png",
    ):
        assert (tmp_path / f).stat().st_size > 0, f
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * 5  # tasks x optimizers x seeds x (steps + 1)
    last = [
        r
        for r in rows
        if r["task"] == "t1" and r["optimizer"] == "p" and r["seed"] == "1" and r["step"] == "4"
    ]
    assert float(last[0]["test_loss"]) == pytest.approx(0.1468)
    with open(tmp_path / "final.csv") as f:
        final = list(csv.DictReader(f))
    assert {(r["task"], r["optimizer"], r["seed"]) for r in final} == {
        (t, m, s) for t in ("t1", "t2") for m in ("p", "f") for s in ("0", "1")
    }
    assert [r["diverged_step"] for r in final if r["task"] == "t2" and r["optimizer"] == "f"] == ["4", "2"]
    html = (tmp_path / "report.html").read_text()
    assert '<img src="figures/curves.png"' in html and "<td>0.1234</td>" in html
    assert summary["improvement"]["p"]["f"] == pytest.approx([-(0.4321 - 0.1234) / 9.8766, -2.0 + 0.0])
    assert "| t1 | s | 2x2 | 1.5 | 2.25 | no |" in (tmp_path / "report.md").read_text()


def test_run_eval_driver_with_synthetic_training(tmp_path, monkeypatch):
    suite = Suite(
        "tiny", "", (_entry("quadratic", dims=(2,)), _entry("functions2d"), _entry("linear_regression"))
    )
    monkeypatch.setattr(report_run, "get_suite", lambda name: suite)
    calls = []

    def fake_run_search(task, search, *, num_steps, num_seeds, require_cache, **kw):
        calls.append((task.name, search.name, require_cache))
        rng = np.random.default_rng(zlib.crc32(f"{task.name}{search.name}".encode()))
        valid = rng.uniform(1.0, 5.0, (search.num_trials, num_seeds))
        return synthetic(valid, valid + 0.5, task=task.name, name=search.name)

    monkeypatch.setattr(report_run, "run_search", fake_run_search)
    monkeypatch.setattr(report_run, "compile_search", lambda task, search, **kw: (None, 0.0))
    cfg = EvalConfig(
        name="r",
        out=str(tmp_path),
        cache=str(tmp_path / "cache"),
        steps=4,
        eval_every=2,
        seeds=2,
        optimizers=("adam-lr-global", "adam-lr-per-task", "sgd"),
    )
    summary = report.run_eval(cfg, studies=report_studies(cfg))
    # 3 tasks x 2 searches (adam grid shared by both adam methods, sgd) + 3 study tasks x 3 extra sweeps
    assert len(calls) == 3 * 2 + 3 * 3
    assert len(summary["outcomes"]) == 9 and len(summary["lookahead_study"]["rows"]) == 12
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["config"]["optimizers"] == list(cfg.optimizers) and len(saved["tasks"]) == 3
    assert saved["methods"][0]["hparams"][0] == {"learning_rate": pytest.approx(1e-5)}
    by = {(o["task"], o["method"]): o for o in summary["outcomes"]}
    globals_ = {by[t, "adam-lr-global"]["trial"] for t in saved["tasks"]}
    assert len(globals_) == 1  # one setting for every task
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Lookahead study" in md and "lookahead(sgd) vs sgd on 3 tasks" in md
    # `lopt report` re-renders from config.json and the cache only
    calls.clear()
    loaded = report.load_config(str(tmp_path / "r"))
    report.run_eval(loaded, require_cache=True, studies=report_studies(loaded))
    assert calls and all(c[2] for c in calls)


def test_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--optimizers", "adam-lr-per-task", "adamm"])
    msg = str(e.value.code)
    assert "unknown optimizer 'adamm'" in msg and "nadamw-list" in msg and "lookahead-adam-lr-per-task" in msg
    with pytest.raises(SystemExit) as e:
        main(["eval", "--steps", "100", "--eval-every", "30"])
    assert "steps=100 must be a multiple of eval_every=30" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "nothing")])
    assert "config.json does not exist" in str(e.value.code)


def test_outcome_fields_are_json_serializable():
    o = Outcome("t", "m", 0, {"learning_rate": 0.1}, False, 1.0, 2.0, 0.1, None, 0.5)
    assert json.loads(json.dumps(o.__dict__))["test_loss"] == 2.0


def test_suite_tasks_keeps_the_cheapest_candidates(monkeypatch):
    suite = Suite("tiny", "", (_entry("quadratic", dims=(2, 64)), _entry("functions2d")))
    monkeypatch.setattr(report_run, "get_suite", lambda name: suite)
    plain = report.suite_tasks(EvalConfig(candidates=1, per_family=3, seed=1))
    assert [t.name for t in plain] == [t.name for t in suite.tasks(3, 1)]
    dims = [t.static.dim for t in plain[:3]]
    assert dims == [64, 2, 2]  # seed 1 samples both sizes
    cheap = report.suite_tasks(EvalConfig(candidates=3, per_family=1, families=("quadratic",), seed=1))
    assert [t.static.dim for t in cheap] == [2]
    assert jax.tree.all(jax.tree.map(np.array_equal, cheap[0].dynamic, plain[1].dynamic))
    assert report.step_flops(plain[dims.index(64)]) > report.step_flops(plain[dims.index(2)])
    with pytest.raises(ConfigError, match="families contains 'mlp', which is not in suite"):
        report.suite_tasks(EvalConfig(families=("mlp",)))


@pytest.mark.parametrize("cores", [{0}, {0, 1}])
def test_pipelined_compiles_ahead_only_with_a_second_core(monkeypatch, cores):
    """With two cores the next program compiles in the background thread; pinned to one core each
    program compiles in the main thread when its turn comes (no thread competing for the core)."""
    import threading
    from types import SimpleNamespace

    from lopt.report import run as run_mod

    where = []

    def fake_compile(task, search, **kw):
        where.append((search.name, threading.current_thread() is threading.main_thread()))
        return f"compiled-{search.name}", 0.0

    def fake_run(task, search, *, compiled=None, **kw):  # compiled: compile_search's (program, seconds)
        return (compiled or fake_compile(task, search))[0]

    monkeypatch.setattr(run_mod.os, "sched_getaffinity", lambda pid: cores)
    monkeypatch.setattr(run_mod, "compile_search", fake_compile)
    monkeypatch.setattr(run_mod, "run_search", fake_run)
    monkeypatch.setattr(run_mod, "is_cached", lambda *a, **k: False)
    units = [("task", "t", SimpleNamespace(name=s)) for s in ("a", "b", "c")]
    run = dict(num_steps=1, num_seeds=1, eval_every=1, eval_batches=1, seed=0, require_cache=False)

    class _Progress:
        def update(self, *a, **k):
            pass

    got = [r for _, r in run_mod._pipelined(units, run, _Progress(), None)]
    assert got == ["compiled-a", "compiled-b", "compiled-c"]
    assert [s for s, _ in where] == ["a", "b", "c"]
    in_main = [m for _, m in where]
    assert in_main == ([True] * 3 if len(cores) == 1 else [False] * 3)


def test_tasks_filter_keeps_the_named_tasks_of_the_draw():
    from lopt.config import EvalConfig
    from lopt.report.run import _unique_names
    from lopt.validate import ConfigError

    base = dict(per_family=2, families=("logistic_regression", "flow"))
    names = _unique_names(report.suite_tasks(EvalConfig(**base)))
    assert len(names) == 4
    picked = (names[3], names[0])  # order of the draw is kept, not of the option
    got = _unique_names(report.suite_tasks(EvalConfig(**base, tasks=picked)))
    assert got == [names[0], names[3]]
    with pytest.raises(ConfigError, match=r"not in this draw.*its tasks are") as err:
        report.suite_tasks(EvalConfig(**base, tasks=("mlp(nope)",)))
    assert names[1] in str(err.value)
