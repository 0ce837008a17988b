"""The report's sections, one function each, and the protocol by which a study adds its own.

Each section function returns a list of blocks (see `lopt.report.render`). `report_blocks` lays
them out in order; the blocks a study contributes (`StudySection.blocks`) go before the timings.
The report never imports a study: the caller of `lopt.report.run_eval` passes the study sections
(``lopt eval`` passes those its config asks for, `lopt.studies.report_studies`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lopt.report.compare import Outcome, _describe
from lopt.report.render import fmt
from lopt.tuning import CLIP, Method, Search, SearchResult

if TYPE_CHECKING:
    from lopt.report.run import EvalConfig

NORMALIZATION_TEXT = (
    f"Normalized loss, per task and split: n = clip((L − L_best) / (L_init − L_best), 0, {CLIP:g}), "
    "where L is a final loss (median over seeds), L_best the best final loss of any non-diverged "
    "setting of any method on that task, and L_init the loss at initialization. 0 is the best run "
    f"seen, 1 no progress, {CLIP:g} diverged. "
    "Settings are selected on the outer-valid split; every number below is on the test split."
)


class StudySection(Protocol):
    """A study's part of a `lopt eval` report: extra searches on a few of the report's tasks, a
    summary of their results, figures and blocks."""

    name: str  # its key in summary.json, e.g. "lookahead_study"

    def searches(self) -> dict[str, Search]:
        """label -> a search to run on each of the study's tasks."""
        ...

    def summarize(
        self, results: Mapping[str, Mapping[str, SearchResult]], searches: Mapping[str, Search]
    ) -> dict:
        """``results``: task -> label -> the result of ``searches[label]``."""
        ...

    def figures(self, out_dir: str, summary: dict) -> dict[str, str]:
        """Draw its figures under ``out_dir``; name -> path relative to ``out_dir``."""
        ...

    def blocks(self, summary: dict, figs: Mapping[str, str]) -> list[tuple]:
        """Its section of the report."""
        ...

    def to_json(self, summary: dict) -> Any:
        """What summary.json keeps of it."""
        ...


def overview(cfg: EvalConfig, methods: Sequence[Method], tasks: Sequence[str], timings, wall_seconds) -> list:
    """Title, budget, timings in one sentence, the methods, and the normalization."""
    cached = sum(bool(t["cached"]) for t in timings)
    return [
        ("h1", f"lopt report: {cfg.name}"),
        (
            "p",
            (
                f"Suite `{cfg.suite}`, {len(tasks)} tasks ({cfg.per_family} per family, the cheapest of "
                f"{max(cfg.candidates, cfg.per_family)} sampled), {cfg.steps} steps, {cfg.seeds} seeds, "
                f"evaluations every {cfg.eval_every} steps. The searches took "
                f"{sum(t['compile_seconds'] for t in timings):.0f} s compiling and "
                f"{sum(t['run_seconds'] for t in timings):.0f} s training when they ran ({cached} of "
                f"{len(timings)} read from the cache this time); this report took {wall_seconds:.0f} s. "
                "Resolved config: config.json; tidy results: results.csv, final.csv."
            ),
        ),
        (
            "list",
            [
                f"`{m.name}`: {m.doc or m.search.name} ({m.select.replace('_', ' ')}, {m.num_trials} trials)"
                for m in methods
            ],
        ),
        ("p", NORMALIZATION_TEXT),
    ]


def summary(names: Sequence[str], tasks: Sequence[str], by: Mapping[tuple[str, str], Outcome]) -> list:
    """Mean and median normalized test loss, diverged tasks, wins against the first method."""
    ref = names[0]
    rows = []
    for m in names:
        n = np.array([by[t, m].norm_test for t in tasks])
        wins = sum(by[t, m].norm_test < by[t, ref].norm_test for t in tasks)
        rows.append(
            [
                m,
                fmt(float(n.mean())),
                fmt(float(np.median(n))),
                sum(by[t, m].diverged for t in tasks),
                f"{wins}/{len(tasks)}" if m != ref else "-",
            ]
        )
    header = [
        "optimizer",
        "mean normalized test loss",
        "median",
        "diverged tasks",
        f"tasks better than {ref}",
    ]
    return [("h2", "Summary over tasks"), ("table", header, rows)]


def final_loss(names: Sequence[str], tasks: Sequence[str], by: Mapping[tuple[str, str], Outcome]) -> list:
    """Final test loss per task and method."""
    return [
        ("h2", "Final test loss (median over seeds; the selected setting)"),
        ("table", ["task", *names], [[t, *(fmt(by[t, m].test_loss) for m in names)] for t in tasks]),
    ]


def accuracy(names: Sequence[str], tasks: Sequence[str], by: Mapping[tuple[str, str], Outcome]) -> list:
    """Final test accuracy of the classifiers (nothing when no task has one)."""
    if not any(o.test_accuracy is not None for o in by.values()):
        return []
    rows = [
        [t, *(fmt(by[t, m].test_accuracy) for m in names)]
        for t in tasks
        if by[t, names[0]].test_accuracy is not None or by[t, names[0]].diverged
    ]
    return [("h2", "Final test accuracy (classifiers)"), ("table", ["task", *names], rows)]


def settings(names: Sequence[str], tasks: Sequence[str], by: Mapping[tuple[str, str], Outcome]) -> list:
    """The selected trial and hparams of every method on every task."""
    rows = [[t, m, by[t, m].trial, _describe(by[t, m])] for t in tasks for m in names]
    return [("h2", "Selected settings"), ("table", ["task", "optimizer", "trial", "hparams"], rows)]


def improvement(improvement: Mapping[str, Mapping[str, np.ndarray]], figs: Mapping[str, str]) -> list:
    """Improvement over baselines (Metz et al. 2020): a box plot and a table."""
    if not improvement:
        return []
    blocks: list[tuple] = [
        ("h2", "Improvement over baselines"),
        (
            "p",
            (
                "Per task: normalized test loss of the baseline minus that of the method (positive: the "
                "method is better). Boxes span the tasks (Metz et al. 2020, improvement over baselines)."
            ),
        ),
    ]
    if "improvement" in figs:
        blocks.append(("img", figs["improvement"], "improvement over baselines"))
    rows = [
        [b, m, fmt(float(np.median(v))), fmt(float(v.mean())), f"{int((v > 0).sum())}/{len(v)}"]
        for b, d in improvement.items()
        for m, v in d.items()
    ]
    blocks.append(("table", ["baseline", "method", "median improvement", "mean", "tasks improved"], rows))
    return blocks


def curves(figs: Mapping[str, str]) -> list:
    """The per-task loss curves figure."""
    return (
        [("h2", "Loss curves"), ("img", figs["curves"], "per-task loss curves")] if "curves" in figs else []
    )


def timings(rows: Sequence[dict]) -> list:
    """Compile and run seconds of every search, and whether it came from the cache."""
    header = ["task", "search", "trials x seeds", "compile s", "run s", "cached"]
    table = [
        [
            r["task"],
            r["search"],
            r["runs"],
            fmt(r["compile_seconds"], 3),
            fmt(r["run_seconds"], 3),
            "yes" if r["cached"] else "no",
        ]
        for r in rows
    ]
    return [("h2", "Timings"), ("table", header, table)]


def report_blocks(
    cfg: EvalConfig,
    methods: Sequence[Method],
    outcomes: Sequence[Outcome],
    improvements: Mapping[str, Mapping[str, np.ndarray]],
    study_blocks: Sequence[tuple] | None,
    timing_rows: Sequence[dict],
    wall_seconds: float,
    figs: Mapping[str, str],
) -> list[tuple]:
    """The report's content, rendered by `lopt.report.render.to_markdown` and ``to_html``;
    ``study_blocks``: the sections the studies contributed."""
    names = [m.name for m in methods]
    tasks = list(dict.fromkeys(o.task for o in outcomes))
    by = {(o.task, o.method): o for o in outcomes}
    return [
        *overview(cfg, methods, tasks, timing_rows, wall_seconds),
        *summary(names, tasks, by),
        *final_loss(names, tasks, by),
        *accuracy(names, tasks, by),
        *settings(names, tasks, by),
        *improvement(improvements, figs),
        *curves(figs),
        *(study_blocks or []),
        *timings(timing_rows),
    ]
