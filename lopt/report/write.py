"""Writing a report: tidy CSVs, figures, Markdown and HTML, summary.json and timings.json."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import jax

from lopt.evaluate import Curves, tidy
from lopt.report.compare import BASELINE_METHODS, Outcome, improvements
from lopt.report.render import to_html, to_markdown
from lopt.report.sections import StudySection, report_blocks
from lopt.tuning import Method, SearchResult

if TYPE_CHECKING:
    from lopt.report.run import EvalConfig


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Rows of dicts as CSV; columns are the union of keys in first-seen order; None is empty."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)


def _selected(curves: Curves, i: int) -> Curves:
    return Curves(
        curves.train_loss[i],
        curves.eval_steps,
        jax.tree.map(lambda a: a[i], curves.eval),
        curves.diverged_step[i],
    )


def _tables(results, methods, outcomes) -> tuple[list[dict], list[dict], list]:
    """The tidy rows (results.csv), one row per (task, optimizer, seed) (final.csv), and the
    panels of the curves figure, from the selected trial of every method on every task."""
    by = {(o.task, o.method): o for o in outcomes}
    tidy_rows, final_rows, panels = [], [], []
    for t, rs in results.items():
        panel = {}
        for m in methods:
            o = by[t, m.name]
            c = _selected(rs[m.search.name].curves, max(o.trial, 0))
            hp = json.dumps(o.hparams)
            tidy_rows += tidy(c, task=t, optimizer=m.name, trial=o.trial, hparams=hp)
            for s in range(c.train_loss.shape[0]):
                final_rows.append(
                    {
                        "task": t,
                        "optimizer": m.name,
                        "seed": s,
                        "trial": o.trial,
                        "hparams": hp,
                        "diverged_step": int(c.diverged_step[s]),
                        "selection_diverged": o.diverged,
                        **{f"{sp}_{k}": float(v[s, -1]) for sp, mt in c.eval.items() for k, v in mt.items()},
                    }
                )
            panel[m.name] = {
                "train": c.train_loss,
                "eval_steps": c.eval_steps,
                "test": c.eval["test"]["loss"],
                "diverged": o.diverged,
            }
        panels.append((t, panel))
    return tidy_rows, final_rows, panels


def write_report(
    out_dir: str,
    cfg: EvalConfig,
    methods: Sequence[Method],
    results: Mapping[str, Mapping[str, SearchResult]],
    outcomes: Sequence[Outcome],
    studies: Sequence[tuple[StudySection, dict]] | None,
    timings: Sequence[dict],
    wall_seconds: float,
) -> dict:
    """Write every output file of a report into ``out_dir``; returns the summary written to
    summary.json. ``studies``: (section, its summary) of each study that ran."""
    from lopt.report import figures  # matplotlib: imported only when a report is written

    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    tidy_rows, final_rows, panels = _tables(results, methods, outcomes)
    write_csv(os.path.join(out_dir, "results.csv"), tidy_rows)
    write_csv(os.path.join(out_dir, "final.csv"), final_rows)
    names = [m.name for m in methods]
    baselines = [b for b in BASELINE_METHODS if b in names] or names[:1]
    improvement = improvements(outcomes, baselines) if len(methods) > 1 else {}
    figs = {"curves": "figures/curves.png"}
    figures.curves_figure(os.path.join(out_dir, figs["curves"]), panels)
    if improvement:
        figs["improvement"] = "figures/improvement.png"
        figures.improvement_figure(os.path.join(out_dir, figs["improvement"]), improvement)
    study_blocks: list[tuple] = []
    for section, result in studies or ():
        study_figs = section.figures(out_dir, result)
        study_blocks += section.blocks(result, study_figs)
    blocks = report_blocks(cfg, methods, outcomes, improvement, study_blocks, timings, wall_seconds, figs)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(to_markdown(blocks))
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(to_html(blocks, f"lopt report: {cfg.name}"))
    summary = {
        "outcomes": [dataclasses.asdict(o) for o in outcomes],
        "improvement": {b: {m: v.tolist() for m, v in d.items()} for b, d in improvement.items()},
        **{section.name: section.to_json(result) for section, result in studies or ()},
        "wall_seconds": wall_seconds,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    with open(os.path.join(out_dir, "timings.json"), "w") as f:
        json.dump({"wall_seconds": wall_seconds, "searches": list(timings)}, f, indent=1)
    return summary
