"""Hyperparameter optimization (`lopt.hpo`, `lopt tune`): what one hypergradient costs, and what
tuning by PES buys against a learning-rate grid.

Part 1 -- cost. On one task, the wall time of one hypergradient of each method (jitted, compile
excluded, median of ``--repeats``) relative to one training run of T steps (the same optimizer,
jitted `lax.scan`, no hypergradient):

- unrolled: backprop through the whole run of T steps;
- truncated: one window of K steps (an online run makes T / K of them);
- ift: CG with 50 Hessian-vector products at the run's final params (the run itself not counted;
  l2 alone, the hparam it can tune);
- es: one antithetic estimate over whole runs, P pairs (2P runs of T steps);
- pes / nres: one estimate over a truncation, P pairs (2P x K steps).

Part 2 -- quality at a third of the compute. On three tasks of different families, Adam's learning
rate chosen by a 15-point log grid on [1e-5, 1] (`lopt.tuning.ADAM_LR_GRID`) with 3 seeds of T
steps each, against ``lopt tune --method pes`` given a third of the grid's inner steps (its
tuning plus its own 3-seed final evaluation). Score: the final outer-valid loss, median over the
3 seeds (the grid's seeds: common random numbers). Target: within 2% of the grid's best.

Run: .venv/bin/python benchmarks/hpo.py [--steps 1000] [--only cost quality] [--tasks nqm ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from lopt.hpo import HParamSpace, inner_init, inner_steps, truncated_hypergrad, unrolled_hypergrad
from lopt.hpo.es import hparam_estimator
from lopt.hpo.implicit import ift_hypergrad_task
from lopt.hpo.tune import Setup, TuneConfig, run_trials, run_tune
from lopt.tuning import ADAM_LR_GRID

QUALITY_TASKS = (
    "nqm",
    "logistic_regression",
    "mlp",
)  # three families: a quadratic, a convex model, a network


def _time(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile seconds, median run seconds) of jitted ``fn(*args)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    comp = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return comp, float(np.median(runs))


def cost(
    task_name: str, steps: int, truncation: int, particles: int, repeats: int, console: Console
) -> list[dict]:
    cfg = TuneConfig(
        optimizer="adam8p", hparams="learning_rate,l2", start="l2=1e-4", ranges="l2=1e-6:1", num_steps=steps
    )
    setup = Setup.build(task_name, cfg)
    task, space = setup.task, setup.space
    theta = space.init()
    key = jax.random.key(0)
    state = inner_init(key, task, space, theta)
    w = inner_steps(key, task, space, theta, state, steps)[0].params
    sigma = {"sigma": jnp.float32(0.1)}
    rows = []

    def add(name, fn, *args, steps_note=""):
        comp, sec = _time(fn, *args, repeats=repeats)
        rows.append({"method": name, "compile_s": comp, "run_s": sec, "what": steps_note})

    add(
        "training run (reference)",
        lambda k, t, th: inner_steps(k, t, space, th, inner_init(k, t, space, th), steps)[1],
        key,
        task,
        theta,
        steps_note=f"{steps} steps",
    )
    add(
        "unrolled",
        lambda k, t, th: unrolled_hypergrad(k, t, space, th, steps),
        key,
        task,
        theta,
        steps_note=f"backprop through {steps} steps",
    )
    add(
        "truncated (one window)",
        lambda k, t, th, s: truncated_hypergrad(k, t, space, th, s, truncation)[1],
        key,
        task,
        theta,
        state,
        steps_note=f"backprop through {truncation} steps",
    )
    l2 = HParamSpace.build("adam8p", ("l2",), start={"l2": 1e-4}, ranges={"l2": (1e-6, 1.0)})  # IFT: l2 only
    add(
        "ift (CG, 50 HVPs; l2 only)",
        lambda k, t, th, w: ift_hypergrad_task(k, t, l2, th, w, num_iters=50, damping=1e-3)[1],
        key,
        task,
        l2.init(),
        w,
        steps_note="at the run's final params (run not counted)",
    )
    for method in ("es", "pes", "nres"):
        est = hparam_estimator(
            method,
            space,
            setup.family,
            setup.static,
            num_particles=particles,
            truncation_length=truncation,
            horizon=(steps, steps),
        )
        est_state = est.init(key, theta, sigma)
        n = est.inner_steps_per_estimate()
        add(
            f"{method} (one estimate)",
            lambda k, th, s, e=est: e.estimate(k, th, s, sigma)[0],
            key,
            theta,
            est_state,
            steps_note=f"{n:,} inner steps ({2 * particles} unrolls)",
        )
    ref = rows[0]["run_s"]
    table = Table(title=f"one hypergradient vs one training run: {task.name}, adam8p (learning_rate, l2)")
    for col in ("method", "what", "compile s", "run s", "x a training run"):
        table.add_column(col)
    for r in rows:
        r["ratio"] = r["run_s"] / ref
        table.add_row(
            r["method"], r["what"], f"{r['compile_s']:.1f}", f"{r['run_s']:.4f}", f"{r['ratio']:.2f}"
        )
    console.print(table)
    return rows


def quality(task_name: str, steps: int, pes_cfg: dict, console: Console) -> dict:
    base = TuneConfig(
        optimizer="adam",
        hparams="learning_rate",
        num_steps=steps,
        num_seeds=3,
        grid_size=15,
        compare=False,
        out=f"runs/bench_hpo/{task_name}",
        **pes_cfg,
    )
    setup = Setup.build(task_name, dataclasses.replace(base, method="grid"))
    t0 = time.perf_counter()
    valid, test, bad, _ = run_trials(setup, {"learning_rate": np.asarray(ADAM_LR_GRID)})
    grid_seconds = time.perf_counter() - t0
    masked = np.where(bad, np.inf, valid)
    best = int(np.argmin(masked))
    grid_steps = len(ADAM_LR_GRID) * 3 * steps
    out = run_tune(
        task_name, dataclasses.replace(base, method="pes", budget=grid_steps // 3), console=console
    )
    pes_valid = out["final"]["outer_valid"]
    gap = None if pes_valid is None else float((pes_valid - masked[best]) / abs(masked[best]))
    return {
        "task": setup.task.name,
        "grid": {
            "lr": float(ADAM_LR_GRID[best]),
            "outer_valid": float(masked[best]),
            "test": float(test[best]),
            "inner_steps": grid_steps,
            "seconds": grid_seconds,
            "curve": [None if b else float(v) for v, b in zip(valid, bad)],
        },
        "pes": {
            "lr": out["final"]["hparams"]["learning_rate"],
            "outer_valid": pes_valid,
            "test": out["final"]["test"],
            "inner_steps": out["compute"]["total_inner_steps"],
            "seconds": out["compute"]["tuning_seconds"] + out["compute"]["eval_seconds"],
        },
        "gap": gap,
        "within_2pct": bool(gap is not None and gap <= 0.02),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="T: inner steps of one training run")
    p.add_argument("--truncation", type=int, default=50, help="K of truncated / pes / nres")
    p.add_argument("--particles", type=int, default=2, help="P antithetic pairs of es / pes / nres")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cost-task", default="mlp", help="the task family of part 1")
    p.add_argument("--tasks", nargs="+", default=list(QUALITY_TASKS), help="the task families of part 2")
    p.add_argument("--only", nargs="+", default=["cost", "quality"], choices=["cost", "quality"])
    p.add_argument("--outer-lr", type=float, default=0.15, help="pes: Adam's step on log lr")
    p.add_argument("--sigma", type=float, default=0.3, help="pes: σ of the log-lr perturbations")
    p.add_argument("--out", default="runs/bench_hpo/results.json")
    args = p.parse_args()
    console = Console(width=160)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    console.print(f"uptime: {load}")
    results: dict = {"args": vars(args), "uptime_start": load}
    if "cost" in args.only:
        results["cost"] = cost(
            args.cost_task, args.steps, args.truncation, args.particles, args.repeats, console
        )
    if "quality" in args.only:
        pes_cfg = {
            "truncation": args.truncation,
            "num_particles": args.particles,
            "outer_lr": args.outer_lr,
            "sigma": args.sigma,
        }
        rows = [quality(t, args.steps, pes_cfg, console) for t in args.tasks]
        results["quality"] = rows
        table = Table(
            title=f"Adam lr: PES at <= 1/3 of a 15-point grid's inner steps (T = {args.steps}, 3 seeds)"
        )
        for col in (
            "task",
            "grid lr",
            "grid valid",
            "grid steps",
            "pes lr",
            "pes valid",
            "pes steps",
            "gap",
            "<= 2%",
        ):
            table.add_column(col)
        for r in rows:
            g, q = r["grid"], r["pes"]
            table.add_row(
                r["task"],
                f"{g['lr']:.3g}",
                f"{g['outer_valid']:.5g}",
                f"{g['inner_steps']:,}",
                f"{q['lr']:.3g}",
                "diverged" if q["outer_valid"] is None else f"{q['outer_valid']:.5g}",
                f"{q['inner_steps']:,}",
                "-" if r["gap"] is None else f"{100 * r['gap']:+.2f}%",
                "yes" if r["within_2pct"] else "no",
            )
        console.print(table)
        console.print(f"PES within 2% on {sum(r['within_2pct'] for r in rows)} of {len(rows)} tasks")
    results["uptime_end"] = subprocess.run(
        ["uptime"], capture_output=True, text=True, check=False
    ).stdout.strip()
    console.print(f"uptime: {results['uptime_end']}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
