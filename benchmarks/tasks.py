"""Training cost of a representative task of every family, against this machine's matmul rate.

For each family: jitted Adam training steps per second under `lax.scan`, XLA's FLOP count of one
step, the achieved FLOP rate and its ratio to the measured float32 matmul rate (1024x1024x1024).
Small tasks are dominated by per-op overhead, so their ratio is tiny by nature; the ratio says
how much of the machine a task can use, not how good the code is.

Run: .venv/bin/python benchmarks/tasks.py [--steps 500]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from lopt.tasks import profile
from lopt.tasks.registry import TASKS


def matmul_flops_per_second(n: int = 1024, repeats: int = 20) -> float:
    """Median float32 FLOP/s of an (n, n) @ (n, n) matmul on this machine."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per timed lax.scan run")
    args = parser.parse_args()
    peak = matmul_flops_per_second()
    console = Console(width=160)
    table = Table(
        title=f"Adam training steps, {jax.devices()[0].device_kind}, matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    for col in (
        "family",
        "representative task",
        "params",
        "steps/s",
        "compile s",
        "MFLOP/step",
        "GFLOP/s",
        "of matmul",
    ):
        table.add_column(col, justify="right" if col not in ("family", "representative task") else "left")
    for name, cls in TASKS.items():
        task = profile.representative(cls())
        sps, compile_s = profile.steps_per_second(task, args.steps)
        flops = profile.flops_per_step(task)
        rate = flops * sps
        table.add_row(
            name,
            task.name,
            f"{task.num_params():,}",
            f"{sps:,.0f}",
            f"{compile_s:.1f}",
            f"{flops / 1e6:.3f}",
            f"{rate / 1e9:.2f}",
            f"{rate / peak:.1%}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
