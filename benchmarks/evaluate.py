"""Steps per second of `lopt.evaluate` (one jitted program: `lax.scan` over steps, `vmap` over seeds)
against a Python loop calling a jitted training step, seed after seed, on the same task and optimizer.

Both do the same work: Adam steps on training batches, and every ``eval_every`` steps the metrics of
the inner-valid, outer-valid and test splits. The loop is the best case of its kind: the step and
the evaluation are jitted, the losses stay on the device (no host sync per step), and the loop
blocks once at the end. Rates count seed-steps (seeds x steps) per second; medians of 3 runs after
compilation, measured side by side in one process.

Run: .venv/bin/python benchmarks/evaluate.py [--steps 1000] [--seeds 8]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np
import optax
from rich.console import Console
from rich.table import Table

from lopt.evaluate import EVAL_SPLITS, eval_metrics, evaluate
from lopt.tasks import get_family


def python_loop(task, opt, key, steps: int, seeds: int, eval_every: int, eval_batches: int = 4):
    """Train ``seeds`` seeds one after another with a jitted step in a Python loop."""

    @jax.jit
    def step(params, state, k):
        k_batch, k_loss = jax.random.split(k)
        loss, grads = jax.value_and_grad(task.loss)(params, k_loss, task.batch(k_batch, "train"))
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    @jax.jit
    def evaluate_all(params, k):
        keys = jax.random.split(k, len(EVAL_SPLITS))
        return {s: eval_metrics(ks, task, params, s, eval_batches) for s, ks in zip(EVAL_SPLITS, keys)}

    def run():
        out = []
        for k_seed in jax.random.split(key, seeds):
            k_init, k_train = jax.random.split(k_seed)
            params = task.init(k_init)
            state = opt.init(params)
            losses, evals = [], [evaluate_all(params, k_init)]
            for t, k in enumerate(jax.random.split(k_train, steps)):
                params, state, loss = step(params, state, k)
                losses.append(loss)
                if (t + 1) % eval_every == 0:
                    evals.append(evaluate_all(params, k))
            out.append((losses, evals))
        return jax.block_until_ready(out)

    return run


def median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per seed")
    parser.add_argument(
        "--seeds", type=int, default=8, help="seeds (vmapped by evaluate, looped by the baseline)"
    )
    parser.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    args = parser.parse_args()
    tasks = {
        "quadratic": get_family("quadratic", dims=(10,)),
        "logistic_regression": get_family("logistic_regression", datasets=("iris",), batch_sizes=(32,)),
        "mlp": get_family("mlp", datasets=("digits",), widths=(32,), depths=(1,), batch_sizes=(32,)),
        "conv1d": get_family("conv1d"),
    }
    opt = optax.adam(1e-3)
    key = jax.random.key(0)
    work = args.steps * args.seeds
    table = Table(
        title=f"lopt.evaluate vs a Python loop of jitted steps: {args.seeds} seeds x {args.steps} steps, "
        f"Adam, evaluations every {args.eval_every} steps (seed-steps per second, median of 3)"
    )
    for col in ("task", "params", "evaluate (vmapped seeds)", "Python loop", "ratio"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for family in tasks.values():
        task = family.task(family.sample(jax.random.key(1)))
        fast = functools.partial(
            evaluate, key, task, opt, num_steps=args.steps, num_seeds=args.seeds, eval_every=args.eval_every
        )
        slow = python_loop(task, opt, key, args.steps, args.seeds, args.eval_every)
        fast(), slow()  # compile both
        t_fast, t_slow = median_seconds(fast), median_seconds(slow)
        table.add_row(
            task.name,
            f"{task.num_params():,}",
            f"{work / t_fast:,.0f}",
            f"{work / t_slow:,.0f}",
            f"{t_slow / t_fast:.1f}x",
        )
        print(
            f"{task.name}: evaluate {work / t_fast:,.0f} steps/s, loop {work / t_slow:,.0f} steps/s, "
            f"ratio {t_slow / t_fast:.1f}x",
            flush=True,
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
