"""Choose which theta to ship by the validation protocol (`lopt.validation`), never on held-out data.

Every candidate -- a checkpoint of a meta-training run, a run's ``best.safetensors``, a theta file,
or a shipped pretrained optimizer -- is validated the way meta-training validates its theta: full
training runs of the unperturbed optimizer on the validation suite's fixed tasks (drawn from the
meta-training distribution), fixed seeds, final outer-valid loss against the stored AdamLR
references. The held-out suite and the test split play no part. Candidates are ranked by
``valid/score`` (lower is better; 0 = per-task-tuned Adam), ties broken by wins over AdamLR-global;
``--long`` adds the suite's long subset at 10 x T.

    python -m lopt.selection runs/a:500,1000 runs/a/best.safetensors hierarchical-small-v1 --long
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated, Any

import numpy as np
import tyro

from lopt.validate import ConfigError


def parse_candidate(spec: str) -> tuple[str, list[int]]:
    """``RUN:STEP,STEP`` -> (run directory, steps); ``RUN`` alone -> its latest checkpoint ([])."""
    run, _, steps = spec.partition(":")
    try:
        return run, [int(s) for s in steps.split(",") if s]
    except ValueError:
        raise ConfigError(f"candidate {spec!r}: write RUN or RUN:STEP,STEP with integer steps.") from None


def load_candidates(specs: list[str]) -> list[tuple[str, Any, Any]]:
    """[(name, learned, theta)] for every candidate the specs name (see the module docstring)."""
    from lopt.checkpoint import checkpoint_path
    from lopt.meta_train import load_run
    from lopt.optimizers.learned import load_theta
    from lopt.pretrained import PRETRAINED, load_pretrained

    out = []
    for spec in specs:
        if spec in PRETRAINED:
            out.append((spec, *load_pretrained(spec)))
            continue
        if spec.endswith(".safetensors") and os.path.isfile(spec) and "ckpt_" not in os.path.basename(spec):
            out.append((spec, *load_theta(spec)))
            continue
        run, steps = parse_candidate(spec)
        if not os.path.exists(run):
            raise ConfigError(
                f"candidate {spec!r}: {run} does not exist (give a run directory, a checkpoint, "
                f"a theta file or one of {sorted(PRETRAINED)})."
            )
        paths = [checkpoint_path(os.path.join(run, "checkpoints"), s) for s in steps] or [run]
        for path in paths:
            trainer, state, _, step = load_run(path)
            out.append((f"{os.path.basename(os.path.normpath(run))}@{step}", trainer.learned, state.theta))
    return out


def rank(rows: list[dict]) -> list[dict]:
    """Rows sorted by score (lower first), then by wins over AdamLR-global (more first)."""
    return sorted(rows, key=lambda r: (r["valid/score"], -r["valid/wins_global"]))


def table(rows: list[dict], long: bool) -> str:
    """The ranking as a Markdown table (`lopt.report.render.table`)."""
    from lopt.report.render import table as render

    header = [
        "candidate",
        "score at T",
        "median at T",
        "wins vs AdamLR-global",
        "wins vs AdamLR-per-task",
        "diverged",
    ]
    header += ["score at 10 T", "wins vs global at 10 T"] if long else []
    body = []
    for r in rows:
        n = r["valid/tasks"]
        row = [
            r["name"],
            f"{r['valid/score']:.4f}",
            f"{r['valid/median']:.4f}" if "valid/median" in r else "-",
            f"{r['valid/wins_global']}/{n}",
            f"{r['valid/wins_per_task']}/{n}",
            r["valid/diverged"],
        ]
        if long:
            row.append(f"{r.get('valid_long/score', float('nan')):.4f}")
            row.append(f"{r.get('valid_long/wins_global', '-')}/{r.get('valid_long/tasks', '-')}")
        body.append(row)
    return render(header, body).rstrip("\n")


def validate_candidates(
    specs: list[str], suite: str = "valid", long: bool = False, console=None
) -> list[dict]:
    """Validate every candidate; rows of metrics (JSON-ready), ranked."""
    from lopt.validation import Validator, get_validation_suite

    vs = get_validation_suite(suite)
    validators: dict[Any, Validator] = {}
    rows = []
    for name, learned, theta in load_candidates(specs):
        validator = validators.setdefault(learned, Validator(vs, learned, console=console))
        metrics = validator(theta, long=long)
        rows.append(
            {"name": name, **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in metrics.items()}}
        )
        if console is not None:
            console.print(
                f"{name}: score {metrics['valid/score']:.4f}, wins vs AdamLR-global "
                f"{metrics['valid/wins_global']}/{metrics['valid/tasks']}"
            )
    return rank(rows)


@dataclasses.dataclass(frozen=True)
class Config:
    """Validate and rank thetas on a validation suite (never the held-out suite)."""

    # RUN (its latest checkpoint), RUN:STEP,STEP, a theta file, or a pretrained name
    candidates: Annotated[tuple[str, ...], tyro.conf.Positional] = ()
    validation: str = "valid"  # validation suite (lopt.validation.VALIDATION_SUITES)
    long: bool = False  # also the long subset (10 x T)
    out: str = "runs/select"  # writes selection.md and selection.json here


def run(cfg: Config) -> list[dict]:
    """Validate every candidate, write ``selection.md`` / ``selection.json``, print the ranking."""
    from rich.console import Console

    if not cfg.candidates:
        raise ConfigError(
            "no candidates: give run directories, RUN:STEP,STEP, theta files or pretrained names."
        )
    console = Console()
    rows = validate_candidates(list(cfg.candidates), cfg.validation, cfg.long, console)
    os.makedirs(cfg.out, exist_ok=True)
    text = table(rows, cfg.long)
    with open(os.path.join(cfg.out, "selection.md"), "w") as f:
        f.write(text + "\n")
    saved = {"validation": cfg.validation, "long": cfg.long, "candidates": list(cfg.candidates), "rows": rows}
    with open(os.path.join(cfg.out, "selection.json"), "w") as f:
        json.dump(saved, f, indent=1)
    console.print(text)
    return rows
