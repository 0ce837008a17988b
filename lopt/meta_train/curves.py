"""Validation curves of meta-training runs: score against CPU time, read from ``metrics.jsonl``.

    lopt curves runs/a runs/b --out docs/ablations       # table + figure (`validation_curves`)
    lopt curves a=runs/a b=runs/b --steps 400 800 --window 300 800 --by median   # an A/B at equal steps

For each run: the validation rows (step, CPU-hours, score, wins) and the best score reached within
CPU budgets, or within outer steps (the theta a run would have kept, `best.safetensors`, had it
stopped there). Outer steps are the fair budget between runs whose start-up differs (references
computed or read, a resume's recompilation); CPU-hours are the honest one for a single run. The
window column is the mean of the score over the validations in a step range: steadier than a best,
which favours the noisiest run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def validation_rows(run: str | os.PathLike) -> list[dict]:
    """The ``valid/*`` rows of a run's metrics.jsonl, in step order (a row cut by a kill is skipped;
    of two rows of one step, written again after a resume, the later is kept). A row of an older
    lopt without ``valid/median`` gets it from its per-task ``valid/norm``."""
    rows = {}
    for line in Path(run, "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "valid/score" in row:
            if "valid/median" not in row and "valid/norm" in row:
                row["valid/median"] = float(np.median(row["valid/norm"]))
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def best_within(rows: list[dict], cpu_hours: float, key: str = "valid/score") -> dict | None:
    """The validation row with the lowest ``key`` among those at most ``cpu_hours`` into the run."""
    return _best_until(rows, "cpu_seconds", cpu_hours * 3600, key)


def _best_until(rows: list[dict], field: str, limit: float, key: str) -> dict | None:
    """The row with the lowest ``key`` among those whose ``field`` (cpu_seconds, step) is at most ``limit``."""
    inside = [r for r in rows if r[field] <= limit and r.get(key) is not None]
    return min(inside, key=lambda r: r[key]) if inside else None


def _in_window(rows: list[dict], span: tuple[int, int], key: str) -> list:
    """``key`` of the validations at steps ``span[0]``-``span[1]`` (both included) that have it."""
    return [r[key] for r in rows if span[0] <= r["step"] <= span[1] and r.get(key) is not None]


def window_mean(
    rows: list[dict], span: tuple[int, int], key: str = "valid/score"
) -> tuple[float, int] | None:
    """The mean of ``key`` over the validations in ``span`` and how many there were; None if none."""
    inside = _in_window(rows, span, key)
    return (float(np.mean(inside)), len(inside)) if inside else None


def suite_of(run: str | os.PathLike) -> str:
    """The validation suite a run was validated on, from its ``config.json`` ("" if it has none)."""
    try:
        return json.loads(Path(run, "config.json").read_text())["config"].get("validation", "")
    except (OSError, ValueError, KeyError):
        return ""


def task_means(rows: list[dict], span: tuple[int, int]) -> np.ndarray | None:
    """Each validation task's normalized loss averaged over the validations in ``span``, in the
    suite's order; None when the run has none there."""
    inside = _in_window(rows, span, "valid/norm")
    return np.mean(inside, axis=0) if inside else None


def paired(run: tuple[str, np.ndarray], base: tuple[str, np.ndarray], names: tuple[str, str]) -> str:
    """Tasks on which ``run``'s window mean is below ``base``'s, of all, and the median difference."""
    from lopt.validate import ConfigError

    if run[0] != base[0] or run[1].shape != base[1].shape:
        raise ConfigError(
            f"--against: {names[0]} and {names[1]} were validated on different tasks; pair runs of one "
            "validation suite (--validation)."
        )
    diff = run[1] - base[1]
    return f"{int(np.sum(diff < 0))}/{diff.size} (median Δ {np.median(diff):+.4f})"


def validation_curves(
    runs: tuple[str, ...],
    budgets: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0),
    out: str = "",
    by: str = "score",
    steps: tuple[int, ...] = (),
    window: tuple[int, ...] = (),
    against: str = "",
) -> dict:
    """Print the table of the best ``by`` within each budget of each run (CPU-hours, or outer
    ``steps`` when given) and, with ``window`` (FIRST, LAST), its mean over those steps and, with
    ``against`` (a run's label), on how many tasks each run's window mean beats that run's; with
    ``out``, write ``curves.md``, ``curves.json`` and ``validation.png`` there. Runs are DIR or
    name=DIR. Returns curves, table and budgets (the options of `lopt curves`)."""
    from lopt.config import SELECT_BY
    from lopt.report import figures
    from lopt.report.render import table
    from lopt.validate import ConfigError, check_choice

    check_choice("by", by, SELECT_BY)
    if window and (len(window) != 2 or window[0] > window[1]):
        raise ConfigError(
            f"window={tuple(window)}: give two outer steps FIRST LAST, FIRST <= LAST (e.g. 300 800)."
        )
    named, suites = {}, {}
    for spec in runs:
        name, _, path = (
            spec.rpartition("=") if "=" in spec else (os.path.basename(os.path.normpath(spec)), "", spec)
        )
        named[name], suites[name] = validation_rows(path), suite_of(path)
    if against and (against not in named or not window):
        raise ConfigError(
            f"against={against!r}: name one of the runs ({', '.join(named)}) and give --window FIRST LAST."
        )
    span = (window[0], window[1]) if window else (0, -1)
    base = task_means(named[against], span) if against else None
    curves, body = {}, []
    key = f"valid/{by}"
    columns = [f"best {by} within {s} steps (step)" for s in steps] or [
        f"best {by} within {b:g} CPU-h (step)" for b in budgets
    ]
    if window:
        columns.append(f"mean {by}, steps {window[0]}-{window[1]} (validations)")
    if against:
        columns.append(f"tasks better than {against}, steps {window[0]}-{window[1]}")
    header = ["run", *columns, "steps run", "CPU-h run"]
    for name, rows in named.items():
        if not rows:
            continue
        curves[name] = {
            "cpu_hours": [r["cpu_seconds"] / 3600 for r in rows],
            "score": [r["valid/score"] for r in rows],
            "median": [r.get("valid/median") for r in rows],
            "step": [r["step"] for r in rows],
            "wins_global": [r["valid/wins_global"] for r in rows],
            "global_score": rows[0]["valid/global_score"],
        }
        cells = [_best_cell(rows, "step", s, s, key) for s in steps] or [
            _best_cell(rows, "cpu_seconds", b * 3600, b * 3600 * 0.98, key) for b in budgets
        ]
        if window:
            mean = window_mean(rows, span, key)
            cells.append("-" if mean is None else f"{mean[0]:.4f} ({mean[1]})")
        if against:
            means = task_means(rows, span)
            cells.append(
                "-"
                if means is None or base is None
                else paired((suites[name], means), (suites[against], base), (name, against))
            )
        body.append([name, *cells, str(rows[-1]["step"]), f"{rows[-1]['cpu_seconds'] / 3600:.2f}"])
    text = table(header, body).rstrip("\n")
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        Path(out, "curves.md").write_text(text + "\n")
        Path(out, "curves.json").write_text(json.dumps(curves, indent=1) + "\n")
        figures.validation_figure(os.path.join(out, "validation.png"), curves)
    return {"curves": curves, "table": text, "budgets": np.asarray(budgets).tolist()}


def _best_cell(rows: list[dict], field: str, limit: float, reached: float, key: str) -> str:
    """The best ``key`` with ``field`` (cpu_seconds, step) at most ``limit``, and its step; - if the
    run's last row did not get to ``reached``."""
    best = _best_until(rows, field, limit, key)
    if best is None or rows[-1][field] < reached:
        return "-"
    return f"{best[key]:.4f} ({best['step']})"


if __name__ == "__main__":  # the earlier entry point: `lopt curves`
    from lopt.cli import main

    main(["curves", *sys.argv[1:]])
