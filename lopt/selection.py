"""Choose which checkpoint of a meta-training run to ship, on meta-training tasks only.

A run's later checkpoints are not always better on the horizon that matters (the meta-loss is
measured on truncations, often early in training), so the shipped theta is chosen by evaluating
candidates the way the held-out report does -- full training runs, several seeds -- but on tasks
of a *training* suite, and by the **outer-valid** loss: the held-out suite and the test split
play no part in the choice. Each candidate is compared with AdamLR-global (15 rates, one rate
chosen for all the tasks on outer-valid):

- ``wins``: tasks where the candidate's final outer-valid loss (median over seeds) is below AdamLR-global's;
- ``mean_norm_valid``: its normalized outer-valid loss clip((L − L_best)/(L_init − L_best), 0, 2),
  averaged over tasks, L_best the best of all methods on that task, L_init the loss at step 0.

The best candidate has the most wins, then the lowest mean_norm_valid.

    python -m lopt.selection runs/pretrain-mlp-ls:500,1000 runs/pretrain-hierarchical-ls:1000 --name select
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict

import numpy as np

from lopt.report import EvalConfig, run_eval
from lopt.tuning import CLIP, learned_method, normalize
from lopt.validate import ConfigError

REFERENCE = "adam-lr-global"


def parse_candidate(spec: str) -> tuple[str, list[int]]:
    """``RUN:STEP,STEP`` -> (run directory, steps); ``RUN`` alone -> its latest checkpoint ([])."""
    run, _, steps = spec.partition(":")
    try:
        return run, [int(s) for s in steps.split(",") if s]
    except ValueError:
        raise ConfigError(f"candidate {spec!r}: write RUN or RUN:STEP,STEP with integer steps.") from None


def load_candidates(specs: list[str]) -> list[tuple[str, object, dict]]:
    """[(name, learned, theta)] for every checkpoint the specs name; name = '<run basename>@<step>'."""
    from lopt.checkpoint import checkpoint_path
    from lopt.meta_train import load_run

    out = []
    for spec in specs:
        run, steps = parse_candidate(spec)
        paths = [checkpoint_path(os.path.join(run, "checkpoints"), s) for s in steps] or [run]
        for path in paths:
            trainer, state, _, step = load_run(path)
            out.append((f"{os.path.basename(os.path.normpath(run))}@{step}", trainer.learned, state.theta))
    return out


def rank(final_rows: list[dict], init_rows: list[dict], reference: str = REFERENCE) -> list[dict]:
    """Per method: wins over ``reference`` on outer-valid, and mean normalized outer-valid loss.

    ``final_rows``: the report's final.csv (one row per task, method and seed, the selected
    setting); ``init_rows``: results.csv rows at step 0 (their outer-valid loss is L_init)."""
    valid: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in final_rows:
        loss = float(r["outer_valid_loss"]) if r["outer_valid_loss"] not in ("", "nan") else np.nan
        valid[r["optimizer"]][r["task"]].append(loss)
    init: dict[str, list[float]] = defaultdict(list)
    for r in init_rows:
        if r["outer_valid_loss"] not in ("", "nan"):
            init[r["task"]].append(float(r["outer_valid_loss"]))
    med = {m: {t: float(np.median(v)) for t, v in by.items()} for m, by in valid.items()}
    tasks = sorted(med[reference])
    best = {t: np.nanmin([med[m][t] for m in med]) for t in tasks}
    out = []
    for m in med:
        norm = [
            CLIP if not np.isfinite(med[m][t]) else float(normalize(med[m][t], best[t], float(np.median(init[t]))))
            for t in tasks
        ]
        wins = sum(bool(np.isfinite(med[m][t]) and med[m][t] < med[reference][t]) for t in tasks)
        out.append({"method": m, "wins": wins, "tasks": len(tasks), "mean_norm_valid": float(np.mean(norm)),
                    "valid": {t: med[m][t] for t in tasks}})  # fmt: skip
    return sorted(out, key=lambda r: (r["method"] == reference, -r["wins"], r["mean_norm_valid"]))


def _read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="RUN (latest checkpoint) or RUN:STEP,STEP,...")
    parser.add_argument("--name", default="select", help="report name: everything goes to <out>/<name>/")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--suite", default="train_nn", help="a training suite (never the held-out 'test')")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-family", type=int, default=1)
    args = parser.parse_args(argv)
    if args.suite == "test":
        parser.error("--suite test is the held-out suite: selecting on it would leak into the held-out report.")
    cfg = EvalConfig(name=args.name, out=args.out, suite=args.suite, per_family=args.per_family, steps=args.steps,
                     seeds=args.seeds, optimizers=(REFERENCE,), lookahead_study=False)  # fmt: skip
    extra = [learned_method(n, learned, theta, doc=f"checkpoint {n}") for n, learned, theta in load_candidates(args.candidates)]
    run_eval(cfg, extra)
    out_dir = os.path.join(args.out, args.name)
    results = _read_csv(os.path.join(out_dir, "results.csv"))
    ranked = rank(_read_csv(os.path.join(out_dir, "final.csv")), [r for r in results if r["step"] == "0"])
    lines = ["| candidate | wins vs AdamLR-global (outer-valid) | mean normalized outer-valid loss |", "|---|---|---|"]
    lines += [f"| {r['method']} | {r['wins']}/{r['tasks']} | {r['mean_norm_valid']:.4f} |" for r in ranked]
    with open(os.path.join(out_dir, "selection.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "selection.json"), "w") as f:
        json.dump(ranked, f, indent=1)
    print("\n".join(lines))
    return ranked


if __name__ == "__main__":
    main()
