"""Measure a task's training cost: jitted Adam steps per second under `lax.scan`, FLOPs per step.

Used by `lopt tasks list` and `benchmarks/tasks.py`.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import optax

from lopt.tasks.base import Task, TaskConfig, TaskFamily


def representative(family: TaskFamily, seed: int = 0) -> Task:
    """A fixed, reproducible task of ``family`` (the one sampled from ``seed``)."""
    return family.task(family.sample(jax.random.key(seed)))


def _train_fn(num_steps: int):
    opt = optax.adam(1e-3)

    def run(task: Task, key: jax.Array):
        k_init, k_steps = jax.random.split(key)
        params = task.init(k_init)

        def step(carry, k):
            params, state = carry
            k_batch, k_loss = jax.random.split(k)
            loss, grads = jax.value_and_grad(task.loss)(params, k_loss, task.batch(k_batch, "train"))
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        _, losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_steps, num_steps))
        return losses

    return jax.jit(run)


def steps_per_second(task: Task, num_steps: int = 200, repeats: int = 3) -> tuple[float, float]:
    """(median Adam training steps per second over ``repeats`` runs of ``num_steps``, compile seconds)."""
    run = _train_fn(num_steps)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = run.lower(task, key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(task, jax.random.fold_in(key, r)))
        times.append(time.perf_counter() - t0)
    return num_steps / float(np.median(times)), compile_s


def flops_per_step(task: Task, compile: bool = True) -> float:
    """FLOPs of one Adam training step (batch sampling, forward, backward, update), from XLA's
    cost analysis of the compiled step (``compile=False``: of the lowered step, no compilation,
    about a tenth of a second); NaN when the backend does not report it."""
    opt = optax.adam(1e-3)

    def step(task, key, params, state):
        k_batch, k_loss = jax.random.split(key)
        grads = jax.grad(task.loss)(params, k_loss, task.batch(k_batch, "train"))
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = task.init(jax.random.key(0))
    lowered = jax.jit(step).lower(task, jax.random.key(0), params, opt.init(params))
    cost = (lowered.compile() if compile else lowered).cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def param_range(family: TaskFamily) -> tuple[int, int]:
    """Fewest and most parameters over the family's sampling space (from `static_extremes`)."""
    small, large = family.static_extremes()
    counts = []
    for static in (small, large):
        dynamic = family.sample_dynamic(jax.random.key(0), static)
        task = family.task(TaskConfig(static, dynamic))
        counts.append(task.num_params())
    return min(counts), max(counts)
