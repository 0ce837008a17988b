"""Train tasks with optimizers and record their curves: jitted, `lax.scan` over steps, `vmap` over
seeds and over hyperparameter settings.

    curves = evaluate(key, task, optax.adam(1e-3), num_steps=1000, num_seeds=3, eval_every=100)
    curves = evaluate_hparams(key, task, {"learning_rate": lrs}, make=get_baseline("adam").make, ...)
    curves = evaluate_learned(key, task, learned, theta, num_steps=1000, num_seeds=3)

`Curves.train_loss` has shape (..., seeds, steps); `Curves.eval` maps each evaluation split to a
dict of metrics of shape (..., seeds, evaluations) taken at steps `Curves.eval_steps`
(0, E, 2E, ..., N). The training loss is passed to the optimizer as ``loss=`` every step. The
inner-valid loss reaches it as in meta-training (`lopt.unroll`): at every step t ≡ 0 (mod
``valid_every``, default 10 = `MetaTrainConfig.valid_every`), t counted from the start of training,
the loss of the params w_t on one ``inner_valid`` batch is measured before the update and passed as
``valid_loss=`` to that step's update only; every other step gets NaN ("no new value"). This is
meta-training's pattern for an episode that starts at a truncation boundary with a truncation
length that is a multiple of ``valid_every`` (an unstaggered particle: measured at its restart and
at truncation steps j ≡ 0 mod E, with the value of w_j fed to update j). The feed is independent of
``eval_every`` and ``eval_splits`` (the recorded metrics, which never feed the optimizer) and draws
its keys apart from the training and evaluation keys, so optimizers that ignore ``valid_loss``
(the baselines) give the same curves whatever ``valid_every``; the measurement sits behind a
`lax.cond` on the step counter, so it costs one batch loss every ``valid_every`` steps.

A run that produces a NaN or infinite training loss is *diverged* at that step: it is recorded in
`Curves.diverged_step` (``num_steps`` when it never diverged), the computation goes on without
raising, and later metrics are NaN. Seeds share their keys across hyperparameter settings
(common random numbers), so settings are compared on the same initializations and batches.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.tasks.base import Task

EVAL_SPLITS = ("inner_valid", "outer_valid", "test")
VALID_FEED_SALT = 0x7A11D  # fold_in salt of the inner-valid feed's keys (apart from every other key)


class Curves(NamedTuple):
    """Training curves; leading axes (..., S) are (hparam settings..., seeds)."""

    train_loss: jax.Array  # (..., S, N): training-batch loss before each of the N updates
    eval_steps: jax.Array  # (M,): step of each evaluation, M = N // E + 1
    eval: dict  # split -> metric name -> (..., S, M)
    diverged_step: jax.Array  # (..., S) int32: first step with a non-finite loss, N if none


def eval_metrics(key: jax.Array, task: Task, params, split: str, num_batches: int) -> dict:
    """Mean metrics of ``params`` over ``num_batches`` batches of ``split``."""

    def one(k):
        k_batch, k_loss = jax.random.split(k)
        return task.metrics(params, k_loss, task.batch(k_batch, split))

    return jax.tree.map(jnp.mean, jax.vmap(one)(jax.random.split(key, num_batches)))


def _no_value(params, key) -> jax.Array:
    return jnp.float32(jnp.nan)


def train_one(
    key: jax.Array,
    task: Task,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    eval_every: int,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
    eval_batches: int = 4,
    valid_every: int = 10,
):
    """One seed, pure and un-jitted: returns (final params, train losses (N,), evals, diverged step).

    ``evals`` maps split -> metric -> (M,). ``num_steps`` must be a multiple of ``eval_every``;
    ``valid_every``: the cadence of the inner-valid loss fed to the optimizer (module docstring).
    """
    if eval_every < 1 or num_steps % eval_every:
        raise ValueError(f"num_steps={num_steps} must be a positive multiple of eval_every={eval_every}.")
    if valid_every < 1:
        raise ValueError(f"valid_every={valid_every} must be at least 1.")
    optimizer = optax.with_extra_args_support(optimizer)
    key_init, key_train, key_eval = jax.random.split(key, 3)
    params = task.init(key_init)
    opt_state = optimizer.init(params)

    def evaluate_all(k, params):
        keys = jax.random.split(k, len(eval_splits))
        return {s: eval_metrics(ks, task, params, s, eval_batches) for s, ks in zip(eval_splits, keys)}

    def inner_valid_loss(params, k):  # one batch, as `Unroller._loss_on(..., "inner_valid")`
        k_batch, k_loss = jax.random.split(jax.random.fold_in(k, VALID_FEED_SALT))
        return task.loss(params, k_loss, task.batch(k_batch, "inner_valid")).astype(jnp.float32)

    def step(carry, k):
        params, opt_state, t, diverged = carry
        k_batch, k_loss = jax.random.split(k)
        batch = task.batch(k_batch, "train")
        loss, grads = jax.value_and_grad(task.loss)(params, k_loss, batch)
        diverged = jnp.where((diverged == num_steps) & ~jnp.isfinite(loss), t, diverged)
        # w_t's inner-valid loss at t ≡ 0 (mod valid_every), fed to this step's update only
        valid = jax.lax.cond(t % valid_every == 0, inner_valid_loss, _no_value, params, k)
        updates, opt_state = optimizer.update(
            grads, opt_state, params, loss=loss, valid_loss=valid, num_steps=jnp.int32(num_steps)
        )
        params = optax.apply_updates(params, updates)
        return (params, opt_state, t + 1, diverged), loss

    def chunk(carry, k):
        k_steps, k_eval = jax.random.split(k)
        carry, losses = jax.lax.scan(step, carry, jax.random.split(k_steps, eval_every))
        metrics = evaluate_all(k_eval, carry[0])
        return carry, (losses, metrics)

    metrics0 = evaluate_all(key_eval, params)
    never = jnp.int32(num_steps)
    carry = (params, opt_state, jnp.int32(0), never)
    keys = jax.random.split(key_train, num_steps // eval_every)
    (params, _, _, diverged), (losses, metrics) = jax.lax.scan(chunk, carry, keys)
    evals = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), metrics0, metrics)
    return params, losses.reshape(-1), evals, diverged


def _seeds(key, task, optimizer, num_steps, num_seeds, eval_every, eval_splits, eval_batches, valid_every):
    def one(k):
        _, losses, evals, diverged = train_one(
            k, task, optimizer, num_steps, eval_every, eval_splits, eval_batches, valid_every
        )
        return losses, evals, diverged

    return jax.vmap(one)(jax.random.split(key, num_seeds))


_STATIC = ("num_steps", "num_seeds", "eval_every", "eval_splits", "eval_batches", "valid_every")


@functools.partial(jax.jit, static_argnames=("optimizer", *_STATIC))
def evaluate(
    key: jax.Array,
    task: Task,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    num_seeds: int = 1,
    eval_every: int = 100,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
    eval_batches: int = 4,
    valid_every: int = 10,
) -> Curves:
    """Train ``task`` with one ``optimizer`` from ``num_seeds`` seeds (vmapped) for ``num_steps``.

    ``optimizer`` is a static argument: build it once and reuse the same object to hit the
    compilation cache. To compare hyperparameter settings, use `evaluate_hparams`, which vmaps
    over them in one compiled program. ``valid_every``: the inner-valid loss is fed to the
    optimizer at steps 0, E, 2E, ... (see the module docstring); it changes no recorded metric.
    """
    losses, evals, diverged = _seeds(
        key, task, optimizer, num_steps, num_seeds, eval_every, eval_splits, eval_batches, valid_every
    )
    return Curves(losses, jnp.arange(0, num_steps + 1, eval_every), evals, diverged)


@functools.partial(jax.jit, static_argnames=("make", *_STATIC))
def evaluate_hparams(
    key: jax.Array,
    task: Task,
    hparams: Any,
    *,
    make: Callable[[Any], optax.GradientTransformation],
    num_steps: int,
    num_seeds: int = 1,
    eval_every: int = 100,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
    eval_batches: int = 4,
    valid_every: int = 10,
) -> Curves:
    """Like `evaluate`, for every setting in ``hparams`` (a pytree whose leaves share a leading
    axis of length C), building each optimizer with ``make(hparams_i)``; vmapped over settings.

    ``make`` is static (e.g. ``get_baseline("adam").make`` or a learned optimizer's ``transform``
    with theta as the hparams); the result has leading axes (C, S).
    """

    def one_setting(h):
        return _seeds(
            key, task, make(h), num_steps, num_seeds, eval_every, eval_splits, eval_batches, valid_every
        )

    losses, evals, diverged = jax.vmap(one_setting)(hparams)
    return Curves(losses, jnp.arange(0, num_steps + 1, eval_every), evals, diverged)


def evaluate_learned(
    key: jax.Array,
    task: Task,
    learned: Any,
    theta: Any,
    *,
    num_steps: int,
    num_seeds: int = 1,
    eval_every: int = 100,
    eval_splits: tuple[str, ...] = EVAL_SPLITS,
    eval_batches: int = 4,
    valid_every: int = 10,
) -> Curves:
    """A learned optimizer ``learned`` with weights ``theta`` on ``task``: the one way lopt evaluates
    a learned optimizer (the demo, `lopt.meta_train.HeldOutEval`, the studies; `lopt eval` runs the
    same optimizer through `lopt.tuning.learned_method`).

    It is `evaluate` of ``learned.transform(theta)``, the optimizer `lopt.pretrained` hands a user,
    with theta a constant of the compiled program (one compilation per theta). Not a vmapped
    setting of `evaluate_hparams`: the hierarchical optimizers' trajectories depend on how XLA
    compiles them (theta constant, an argument, or vmapped differ by ~1% of the loss after 20
    steps), and the numbers reported must be the ones a user gets.
    """
    optimizer = optax.with_extra_args_support(learned.transform(theta))
    return evaluate(
        key,
        task,
        optimizer,
        num_steps=num_steps,
        num_seeds=num_seeds,
        eval_every=eval_every,
        eval_splits=eval_splits,
        eval_batches=eval_batches,
        valid_every=valid_every,
    )


def timed(fn: Callable, *args, **static) -> tuple[Any, dict[str, float]]:
    """Call jitted ``fn(*args, **static)`` (dynamic arguments positional, static ones by keyword)
    once, returning its output and the compile and run wall times in seconds."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args, **static).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()
    return out, {"compile_seconds": t1 - t0, "run_seconds": t2 - t1}


def tidy(curves: Curves, **labels) -> list[dict]:
    """One row per (setting, seed, step): the training loss at every step, and at evaluation steps
    the metrics of every split (``{split}_{metric}``); ``diverged`` marks steps at or after divergence.
    ``labels`` (task, optimizer, hparams...) are copied into every row. Leading setting axes are
    flattened into a ``setting`` column."""
    train = np.asarray(curves.train_loss)
    lead = train.shape[:-2]
    n_set = int(np.prod(lead)) if lead else 1
    train = train.reshape(n_set, *train.shape[-2:])
    div = np.asarray(curves.diverged_step).reshape(n_set, -1)
    evals = {
        f"{split}_{name}": np.asarray(v).reshape(n_set, *np.asarray(v).shape[-2:])
        for split, metrics in curves.eval.items()
        for name, v in metrics.items()
    }
    eval_index = {int(s): i for i, s in enumerate(np.asarray(curves.eval_steps))}
    num_steps = train.shape[-1]
    rows = []
    for c in range(n_set):
        for s in range(train.shape[1]):
            for t in range(num_steps + 1):
                row = dict(
                    labels, setting=c, seed=s, step=t, diverged=bool(t >= div[c, s] and div[c, s] < num_steps)
                )
                row["train_loss"] = float(train[c, s, t]) if t < num_steps else None
                if t in eval_index:
                    for name, v in evals.items():
                        row[name] = float(v[c, s, eval_index[t]])
                rows.append(row)
    return rows
