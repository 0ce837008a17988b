"""Meta-training throughput: PES with the `mlp` learned optimizer, against the reference figures.

For each configuration (one static task group of P tasks, truncation K = 50): the time to the
first outer step (task groups, init, trace, compile and the first step, from a cold start of
this configuration), the outer steps per second (median over rounds of jitted outer steps,
state not donated, as `lopt meta-train` runs them) and the inner steps per second, counting both
members of every antithetic pair like the reference: inner/outer step = 2 P K. XLA's cost
analysis of one inner step of one task (train batch, loss and gradient, optimizer update, meta
loss on an outer-valid batch) times the inner-step rate, divided by this machine's measured
float32 matmul rate, is the fraction of the FLOP floor reached.

Reference: google/learned_optimization (PES, its MLP optimizer, truncation 50) on this machine
(docs/design.md): 43k inner steps/s for 8 tasks of the 10-d quadratics, 102k for 32, 4.3k for 32 of
dimension 1000; ~20 s of compilation. Targets: >= 3x those rates; first outer step <= 10 s.
The reference's quadratics are isotropic, sum((x - c)^2): O(d) per step; the ``iso*`` rows run
that family (`IsotropicQuadratic`, defined here) and are the like-for-like comparison. lopt's own
``quadratic`` family is rotated and noisy (a dense d x d rotation per task: O(d^2) per step, 4 MB
per task read 3-4 times per inner step at d = 1000, so memory-bound there); its rows are for
information. "init+compile s" is the wall time of `MetaTrainer.compile` (the init and outer-step
programs compile side by side); "first step s" adds building the task groups and the first step.
Its MLP-on-digits figure (1,060 inner steps/s) is for 4 static groups x 2 tasks with widths 16-64,
depth 1-2, batch 32/128; ``--digits-mix`` runs that configuration (~1 min of compilation here).

Run: .venv/bin/python benchmarks/meta_throughput.py [--rounds 7] [--steps 20] [--only q10-8 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.console import Console
from rich.table import Table

from lopt.config import MetaTrainConfig
from lopt.estimators.registry import get_estimator
from lopt.meta_train import MetaTrainer, outer_optimizer
from lopt.optimizers.learned import get_learned
from lopt.tasks.base import TaskFamily
from lopt.tasks.quadratic import QuadraticStatic

DIGITS_SMALL = {
    "datasets": ["digits"],
    "depths": [1],
    "widths": [32],
    "activations": ["relu"],
    "batch_sizes": [128],
}
DIGITS_MIX = {"datasets": ["digits"], "depths": [1, 2], "widths": [16, 32, 64], "batch_sizes": [32, 128]}


@dataclasses.dataclass(frozen=True)
class IsotropicQuadratic(TaskFamily):
    """The reference's quadratics (learned_optimization's ``FixedDimQuadraticFamily``): f(x) = Σ (x − c)²
    with c ~ N(0, I) per task and x_0 ~ N(0, I); O(d) per step, no data. For like-for-like rows only."""

    name = "isotropic_quadratic"
    dim: int = 10

    def sample_static(self, key):
        return QuadraticStatic(self.dim)

    def sample_dynamic(self, key, static):
        k_center, k_x0 = jax.random.split(key)
        return {
            "center": jax.random.normal(k_center, (static.dim,)),
            "x0": jax.random.normal(k_x0, (static.dim,)),
        }

    def static_extremes(self):
        return QuadraticStatic(self.dim), QuadraticStatic(self.dim)

    def init(self, key, task):
        return {"x": task.dynamic["x0"]}

    def batch(self, key, split, task):
        return {}

    def loss(self, params, key, batch, task):
        return jnp.sum(jnp.square(params["x"] - task.dynamic["center"]))


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    family: str  # a TASKS name, or "isotropic" (`IsotropicQuadratic`, space {"dim": d})
    space: dict
    num_particles: int
    num_groups: int = 1
    reference: float | None = None  # reference inner steps/s on this machine
    reference_note: str = ""


CASES = (
    Case(
        "iso10-8",
        "reference family: 10-d isotropic quadratics, 8 tasks",
        "isotropic",
        {"dim": 10},
        8,
        reference=43_000,
    ),
    Case(
        "iso10-32",
        "reference family: 10-d isotropic quadratics, 32 tasks",
        "isotropic",
        {"dim": 10},
        32,
        reference=102_000,
    ),
    Case(
        "iso1000-32",
        "reference family: 1000-d isotropic quadratics, 32 tasks",
        "isotropic",
        {"dim": 1000},
        32,
        reference=4_300,
    ),
    Case(
        "q10-8",
        "lopt quadratic (rotated, noisy): 10-d, 8 tasks",
        "quadratic",
        {"dims": [10]},
        8,
        reference=43_000,
    ),
    Case("q10-32", "lopt quadratic: 10-d, 32 tasks", "quadratic", {"dims": [10]}, 32, reference=102_000),
    Case(
        "q1000-32",
        "lopt quadratic: 1000-d, 32 tasks (O(d^2) per step)",
        "quadratic",
        {"dims": [1000]},
        32,
        reference=4_300,
    ),
    Case(
        "digits-8",
        "MLP on digits (8x8, 32 relu, bs128), 8 tasks",
        "mlp",
        DIGITS_SMALL,
        8,
        reference=1_060,
        reference_note="ref: 4 statics x 2 tasks",
    ),
    Case(
        "digits-mix",
        "MLP on digits, 4 statics x 2 tasks (as the reference)",
        "mlp",
        DIGITS_MIX,
        2,
        num_groups=4,
        reference=1_060,
    ),
)


# The objective of the v2 runs (issue 12's bundle), named here rather than read from
# `MetaTrainConfig`'s defaults so that the recorded rates keep their meaning when a default changes.
BUNDLE_OBJECTIVE = {
    "objective": "log",
    "step_weights": "ramp",
    "shaping": "zscore",
    "drop_diverged": True,
}
LEGACY_OBJECTIVE = {
    "objective": "relative",
    "step_weights": "uniform",
    "shaping": "none",
    "drop_diverged": False,
}


def make_trainer(case: Case, legacy: bool = False) -> MetaTrainer:
    """PES, K = 50, horizons 100-1000, default outer AdamW and the objective of the v2 runs (log,
    ramp weights, zscore shaping, dropped diverged pairs; ``legacy``: the former L/L0, uniform
    weights, no shaping, diverged pairs kept); L_ref = 0 (its value costs nothing)."""
    objective = dict(LEGACY_OBJECTIVE if legacy else BUNDLE_OBJECTIVE)
    if case.family != "isotropic":
        cfg = MetaTrainConfig(
            family=case.family,
            space=json.dumps(case.space),
            num_groups=case.num_groups,
            num_particles=case.num_particles,
            truncation_length=50,
            estimator="pes",
            horizon=(100, 1000),
            loss_reference="zero",
            validate_every=0,
            **objective,
        )
        return MetaTrainer.from_config(cfg)
    learned = get_learned("mlp")()
    family = IsotropicQuadratic(case.space["dim"])
    est = get_estimator(
        "pes",
        learned=learned,
        family=family,
        static=family.sample_static(None),
        num_particles=case.num_particles,
        truncation_length=50,
        horizon=(100, 1000),
        **objective,
    )
    return MetaTrainer(
        learned, (est,), (1.0,), outer_optimizer(MetaTrainConfig()), ({"sigma": jnp.float32(0.01)},)
    )


def matmul_flops_per_second(n: int = 1024, repeats: int = 20) -> float:
    """Best float32 FLOP/s of an (n, n) @ (n, n) matmul on this machine."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, a))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, a))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def inner_step_flops(trainer: MetaTrainer) -> float:
    """XLA's FLOP count of one inner step of one task, averaged over the groups' particles."""
    total, particles = 0.0, 0
    theta = trainer.learned.init(jax.random.key(0))
    for est in trainer.estimators:
        unroller = est.unroller
        data = unroller.data()
        task = unroller.task(est.family.sample_dynamic(jax.random.key(1), est.static), data)
        params = task.init(jax.random.key(2))
        opt = unroller.optimizer(theta)

        def step(params, opt_state, key, task=task, opt=opt, meta_split=est.meta_split):
            k_batch, k_loss, k_meta_batch, k_meta = jax.random.split(key, 4)
            loss, grads = jax.value_and_grad(task.loss)(params, k_loss, task.batch(k_batch, "train"))
            updates, opt_state = opt.update(
                grads, opt_state, params, loss=loss, valid_loss=jnp.float32(jnp.nan)
            )
            params = optax.apply_updates(params, updates)
            return params, opt_state, task.loss(params, k_meta, task.batch(k_meta_batch, meta_split))

        cost = jax.jit(step).lower(params, opt.init(params), jax.random.key(3)).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        total += float(cost["flops"]) * est.num_particles
        particles += est.num_particles
    return total / particles


def measure(case: Case, rounds: int, steps: int, legacy: bool = False) -> dict:
    t0 = time.perf_counter()
    trainer = make_trainer(case, legacy)
    t1 = time.perf_counter()
    state, compiled = trainer.compile(jax.random.key(0))  # init and the outer step, compiled side by side
    data = trainer.data()
    t2 = time.perf_counter()
    state, metrics = compiled(state, data, trainer.hparams)
    jax.block_until_ready(metrics)
    t3 = time.perf_counter()
    t = time.perf_counter()
    for _ in range(3):  # warm-up; sets the round length to about 2 s (at most ``steps`` outer steps)
        state, metrics = compiled(state, data, trainer.hparams)
    jax.block_until_ready(metrics)
    per_round = int(np.clip(2.0 / ((time.perf_counter() - t) / 3), 2, steps))
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            state, metrics = compiled(state, data, trainer.hparams)
        jax.block_until_ready(metrics)
        rates.append(per_round / (time.perf_counter() - t))
    outer = float(np.median(rates))
    per_outer = trainer.inner_steps_per_outer_step()
    assert per_outer == 2 * 50 * case.num_particles * case.num_groups
    return {
        "case": case,
        "groups": trainer.describe(),
        "first_step": t3 - t0,
        "compile": t2 - t1,
        "outer": outer,
        "inner": outer * per_outer,
        "flops": inner_step_flops(trainer),
        "meta_loss": float(metrics["meta_loss"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per configuration (median)")
    parser.add_argument("--steps", type=int, default=20, help="outer steps per timed round")
    parser.add_argument("--only", nargs="*", default=None, help="configurations to run (names)")
    parser.add_argument(
        "--digits-mix", action="store_true", help="also run the reference's digits configuration"
    )
    parser.add_argument(
        "--compare-legacy",
        action="store_true",
        help="also time each configuration with the former objective (L/L0, uniform, no shaping)",
    )
    args = parser.parse_args()
    names = args.only or [c.name for c in CASES if c.name != "digits-mix" or args.digits_mix]
    console = Console(width=200)
    peak = matmul_flops_per_second()
    load = os.getloadavg()[0]
    table = Table(
        title=f"PES meta-training throughput, mlp optimizer, K=50, cpu; matmul {peak / 1e9:.1f} GFLOP/s; "
        f"load average {load:.1f}"
    )
    for col in (
        "configuration",
        "inner/outer",
        "first step s",
        "init+compile s",
        "outer/s",
        "inner steps/s",
        "reference",
        "x ref",
        "kFLOP/inner",
        "GFLOP/s",
        "of matmul",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    rates = {}
    for case, legacy in [
        (c, lg) for c in CASES for lg in ((False, True) if args.compare_legacy else (False,))
    ]:
        if case.name not in names:
            continue
        r = measure(case, args.rounds, args.steps, legacy)
        rates[case.name, legacy] = r["inner"]
        gflops = r["flops"] * r["inner"] / 1e9
        ref = case.reference
        label = f"{case.name}: {case.description}" + (" [former objective]" if legacy else "")
        if legacy:
            label += f" (default objective: {rates[case.name, False] / r['inner']:.2f}x this)"
        table.add_row(
            label,
            f"{2 * 50 * case.num_particles * case.num_groups:,}",
            f"{r['first_step']:.1f}",
            f"{r['compile']:.1f}",
            f"{r['outer']:,.1f}",
            f"{r['inner']:,.0f}",
            f"{ref:,.0f}" + (f" ({case.reference_note})" if case.reference_note else "") if ref else "-",
            f"{r['inner'] / ref:.1f}x" if ref else "-",
            f"{r['flops'] / 1e3:,.1f}",
            f"{gflops:.2f}",
            f"{gflops * 1e9 / peak:.1%}",
        )
        console.print(f"{case.name}: groups {r['groups']}, meta-loss {r['meta_loss']:.3f}")
    console.print(table)
    console.print(
        "Reference (google/learned_optimization, this machine): ~20 s of compilation before the first step."
    )


if __name__ == "__main__":
    main()
