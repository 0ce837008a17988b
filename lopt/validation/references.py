"""Stored references of a validation suite: AdamLR per task and AdamLR global, computed once.

For every task of the suite (and of its long subset, at long_factor x T), Adam runs over the 15
learning rates of `lopt.tuning.ADAM_LR_GRID` with the suite's seeds. Per task, the reference is
the rate with the lowest final outer-valid loss (median over seeds, diverged runs excluded); the
global reference is the one rate with the lowest mean normalized outer-valid loss over the tasks
(`lopt.tuning.select_global`). Both are selected and scored on outer-valid, the split a
meta-training run may look at: no test split is computed.

The numbers are cached as JSON keyed by a fingerprint of everything they depend on (the tasks,
horizon, seeds, grid, evaluation protocol): first in the package (``references/<name>.json``,
committed, so a fresh machine need not recompute), then in ``<cache>/validation/``; otherwise they
are computed (a few minutes for ``valid``) and written to the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from lopt.serialization import write_json
from lopt.tasks.base import Task
from lopt.validation.runs import EVAL_BATCHES, PROTOCOL_VERSION, final_losses
from lopt.validation.suite import ValidationSuite

PACKAGED = os.path.join(os.path.dirname(__file__), "references")


def fingerprint(vs: ValidationSuite, tasks: list[Task], steps: int) -> str:
    """sha256 of what the references of ``tasks`` at ``steps`` depend on."""
    from lopt.tuning import ADAM_LR_GRID, task_fingerprint

    blob = {
        "suite": dataclasses.asdict(vs),
        "steps": steps,
        "tasks": [task_fingerprint(t) for t in tasks],
        "grid": [float(x) for x in ADAM_LR_GRID],
        "eval_batches": EVAL_BATCHES,
        "protocol": PROTOCOL_VERSION,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def compute(vs: ValidationSuite, tasks: list[Task], steps: int, progress=None) -> dict[str, Any]:
    """Run AdamLR on every task and select the per-task and global references (see the module)."""
    from lopt.tuning import ADAM_LR_GRID, BaselineMaker, normalize, select_global, select_per_task

    make, trials = BaselineMaker("adam"), {"learning_rate": np.asarray(ADAM_LR_GRID, np.float32)}
    finals, inits, bads = [], [], []
    for task in tasks:
        final, init, diverged = final_losses(task, make, trials, steps=steps, seeds=vs.seeds)
        finals.append(np.median(final, axis=-1))  # (C,)
        inits.append(float(np.median(init)))
        bads.append(diverged.any(-1) | ~np.isfinite(final).all(-1))
        if progress:
            progress(task)
    finals, bads = np.stack(finals), np.stack(bads)  # (T, C)
    per_task = [select_per_task(f, b) for f, b in zip(finals, bads)]
    best = np.array([f[i] if i >= 0 else np.nan for f, i in zip(finals, per_task)])
    norm = normalize(finals, best[:, None], np.asarray(inits)[:, None])
    g = select_global(norm, bads)
    rows = []
    for t, task in enumerate(tasks):
        i = per_task[t]
        rows.append(
            {
                "task": task.name,
                "init": inits[t],
                "per_task": {
                    "learning_rate": float(ADAM_LR_GRID[i]) if i >= 0 else None,
                    "loss": float(best[t]),
                },
                "global": {
                    "learning_rate": float(ADAM_LR_GRID[g]),
                    "loss": float(finals[t, g]) if not bads[t, g] else float("inf"),
                },
            }
        )
    return {"steps": steps, "seeds": vs.seeds, "tasks": rows}


def references(
    vs: ValidationSuite, tasks: list[Task], steps: int, *, cache: str | None = None, progress=None
) -> dict[str, Any]:
    """The references of ``tasks`` at ``steps``: packaged, cached, or computed and cached."""
    key = fingerprint(vs, tasks, steps)
    name = f"{vs.name}-T{steps}.json"
    for path in (os.path.join(PACKAGED, name), _cache_file(cache, name)):
        if os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
            if stored.get("fingerprint") == key:
                return stored
    result = {"fingerprint": key, "suite": vs.name, **compute(vs, tasks, steps, progress)}
    write_json(_cache_file(cache, name), result)
    return result


def _cache_file(cache: str | None, name: str) -> str:
    from lopt.tuning import default_cache_dir

    return os.path.join(cache or default_cache_dir(), "validation", name)
