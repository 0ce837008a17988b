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

import argparse
import json
import os
from typing import Any

import numpy as np

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
    head = "| candidate | score at T | wins vs AdamLR-global | wins vs AdamLR-per-task | diverged |"
    sep = "|---|---|---|---|---|"
    if long:
        head += " score at 10 T | wins vs global at 10 T |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        n = r["valid/tasks"]
        line = (
            f"| {r['name']} | {r['valid/score']:.4f} | {r['valid/wins_global']}/{n} | "
            f"{r['valid/wins_per_task']}/{n} | {r['valid/diverged']} |"
        )
        if long:
            line += f" {r.get('valid_long/score', float('nan')):.4f} | {r.get('valid_long/wins_global', '-')}"
            line += f"/{r.get('valid_long/tasks', '-')} |"
        lines.append(line)
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> list[dict]:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "candidates", nargs="+", help="RUN, RUN:STEP,STEP, a theta file, or a pretrained name"
    )
    parser.add_argument(
        "--validation", default="valid", help="validation suite (lopt.validation.VALIDATION_SUITES)"
    )
    parser.add_argument("--long", action="store_true", help="also the long subset (10 x T)")
    parser.add_argument("--out", default="runs/select", help="writes selection.md and selection.json here")
    args = parser.parse_args(argv)
    console = Console()
    rows = validate_candidates(args.candidates, args.validation, args.long, console)
    os.makedirs(args.out, exist_ok=True)
    text = table(rows, args.long)
    with open(os.path.join(args.out, "selection.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "selection.json"), "w") as f:
        json.dump(
            {"validation": args.validation, "long": args.long, "candidates": args.candidates, "rows": rows},
            f,
            indent=1,
        )
    console.print(text)
    return rows


if __name__ == "__main__":
    main()
