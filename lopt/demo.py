"""`lopt demo`: the main end-to-end job that exists today.

Trains three held-out tasks (one CNN on Fashion-MNIST, the transformer char-LM on KJV, the 1-D
conv net on MNIST-1D) with Adam over a learning-rate grid, several seeds each (learning rates and
seeds vmapped in one compiled program per task), selects the learning rate on the outer-valid
split, reports the test split, prints a table and writes ``results.json`` and ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from lopt.evaluate import evaluate_hparams
from lopt.optimizers import get_baseline
from lopt.tasks.base import Task
from lopt.tasks.suites import get_suite


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Resolved configuration of a demo run (written to config.json)."""

    out: str = "runs/demo"  # output directory
    steps: int = 1000  # training steps per run
    seeds: int = 3  # seeds per learning rate (vmapped)
    seed: int = 0  # random seed of everything
    families: tuple[str, ...] = ("cnn", "transformer_lm", "conv1d")  # held-out families to train
    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # Adam grid
    eval_every: int = 100  # steps between validation / test evaluations


def adam_grid(key: jax.Array, task: Task, cfg: DemoConfig) -> dict:
    """Final metrics for every (learning rate, seed): split -> metric -> (L, S). One compiled
    program per task: learning rates and seeds are vmapped."""
    lrs = {"learning_rate": jnp.asarray(cfg.learning_rates, jnp.float32)}
    curves = evaluate_hparams(
        key, task, lrs, make=get_baseline("adam").make, num_steps=cfg.steps, num_seeds=cfg.seeds,
        eval_every=cfg.eval_every, eval_splits=("outer_valid", "test"),
    )
    return jax.tree.map(lambda x: x[..., -1], curves.eval)


def run_demo(out: str = "runs/demo", steps: int = 1000, seeds: int = 3, seed: int = 0) -> list[dict]:
    """Run the demo and return its result rows (also written to ``out/results.json``)."""
    cfg = DemoConfig(out=out, steps=steps, seeds=seeds, seed=seed)
    console = Console(width=None if sys.stdout.isatty() else 150)
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    console.print(f"[bold]lopt demo[/]: Adam over {len(cfg.learning_rates)} learning rates x {cfg.seeds} seeds, "
                  f"{cfg.steps} steps, on held-out tasks (config in {cfg.out}/config.json)")
    suite = get_suite("test")
    by_family = {f.name: f for f in suite.families()}
    rows = []
    key = jax.random.key(cfg.seed)
    for i, name in enumerate(cfg.families):
        family = by_family[name]
        task = family.task(family.sample(jax.random.fold_in(key, 2 * i)))
        t0 = time.perf_counter()
        m = jax.device_get(adam_grid(jax.random.fold_in(key, 2 * i + 1), task, cfg))
        seconds = time.perf_counter() - t0
        valid = np.median(m["outer_valid"]["loss"], axis=1)  # (L,) median over seeds
        valid = np.where(np.isfinite(valid), valid, np.inf)
        best = int(np.argmin(valid))
        row = {
            "task": task.name,
            "params": task.num_params(),
            "best_lr": cfg.learning_rates[best],
            "test_loss": float(np.median(m["test"]["loss"][best])),
            "test_accuracy": float(np.median(m["test"]["accuracy"][best])) if "accuracy" in m["test"] else None,
            "valid_loss_per_lr": [float(v) for v in valid],
            "test_loss_per_lr": [float(np.median(v)) for v in m["test"]["loss"]],
            "seconds": seconds,
            "steps_per_second": len(cfg.learning_rates) * cfg.seeds * cfg.steps / seconds,
        }
        rows.append(row)
        console.print(f"  {task.name}: best lr {row['best_lr']:g}, test loss {row['test_loss']:.4f} ({seconds:.0f} s)")
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    table = Table(title="Adam, learning rate selected on outer-valid, median test metrics over seeds")
    for col in ("task", "params", "best lr", "test loss", "test acc", "test loss at each lr", "steps/s (all runs)"):
        table.add_column(col)
    for r in rows:
        acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
        per_lr = " ".join(f"{v:.3g}" for v in r["test_loss_per_lr"])
        table.add_row(r["task"], f"{r['params']:,}", f"{r['best_lr']:g}", f"{r['test_loss']:.4f}", acc, per_lr,
                      f"{r['steps_per_second']:,.0f}")
    console.print(table)
    console.print(f"results: {cfg.out}/results.json")
    return rows
