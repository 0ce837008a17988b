"""Validation curves of meta-training runs: score against CPU time, read from ``metrics.jsonl``.

    lopt curves runs/a runs/b --out docs/ablations       # table + figure (`validation_curves`)

For each run: the validation rows (step, CPU-hours, score, wins) and the best score reached within
CPU budgets (the theta a run would have kept, `best.safetensors`, had it stopped there).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def validation_rows(run: str | os.PathLike) -> list[dict]:
    """The ``valid/*`` rows of a run's metrics.jsonl, in step order (a row cut by a kill is skipped).
    A row of an older lopt without ``valid/median`` gets it from its per-task ``valid/norm``."""
    rows = []
    for line in Path(run, "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "valid/score" in row:
            if "valid/median" not in row and "valid/norm" in row:
                row["valid/median"] = float(np.median(row["valid/norm"]))
            rows.append(row)
    return rows


def best_within(rows: list[dict], cpu_hours: float, key: str = "valid/score") -> dict | None:
    """The validation row with the lowest ``key`` among those at most ``cpu_hours`` into the run."""
    inside = [r for r in rows if r["cpu_seconds"] <= cpu_hours * 3600 and r.get(key) is not None]
    return min(inside, key=lambda r: r[key]) if inside else None


def validation_curves(
    runs: tuple[str, ...], budgets: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0), out: str = "", by: str = "score"
) -> dict:
    """Print the table of the best score within each CPU budget of each run; with ``out``, write
    ``curves.md``, ``curves.json`` and ``validation.png`` there. Returns curves, table and budgets.

    Args:
        runs: run directories (name=DIR to label them).
        budgets: CPU-hours.
        out: write curves.md, curves.json and validation.png here.
        by: the validation number to rank by: score (the mean over tasks) or median.
    """
    from lopt.config import SELECT_BY
    from lopt.report import figures
    from lopt.report.render import table
    from lopt.validate import check_choice

    check_choice("by", by, SELECT_BY)
    curves, body = {}, []
    key = f"valid/{by}"
    header = ["run", *(f"best {by} within {b:g} CPU-h (step)" for b in budgets), "CPU-h run"]
    for spec in runs:
        name, _, path = (
            spec.rpartition("=") if "=" in spec else (os.path.basename(os.path.normpath(spec)), "", spec)
        )
        rows = validation_rows(path)
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
        body.append(
            [name, *(_budget_cell(rows, b, key) for b in budgets), f"{rows[-1]['cpu_seconds'] / 3600:.2f}"]
        )
    text = table(header, body).rstrip("\n")
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        Path(out, "curves.md").write_text(text + "\n")
        Path(out, "curves.json").write_text(json.dumps(curves, indent=1) + "\n")
        figures.validation_figure(os.path.join(out, "validation.png"), curves)
    return {"curves": curves, "table": text, "budgets": np.asarray(budgets).tolist()}


def _budget_cell(rows: list[dict], budget: float, key: str) -> str:
    """The best ``key`` within ``budget`` CPU-hours and its step; - if the run did not get that far."""
    best = best_within(rows, budget, key)
    if best is None or rows[-1]["cpu_seconds"] < budget * 3600 * 0.98:
        return "-"
    return f"{best[key]:.4f} ({best['step']})"


if __name__ == "__main__":  # the earlier entry point: `lopt curves`
    from lopt.cli import main

    main(["curves", *sys.argv[1:]])
