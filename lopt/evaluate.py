"""Train a task with an optimizer and record its curves: jitted, `lax.scan` over steps, `vmap` over seeds.

    curves = evaluate(key, task, optax.adam(1e-3), num_steps=1000, num_seeds=3, eval_every=100)

`curves.train_loss` has shape (seeds, steps); `curves.eval` maps each evaluation split to a dict
of metrics of shape (seeds, evaluations), measured at steps `curves.eval_steps` (0, E, 2E, ...).
The inner-valid loss is passed to the optimizer as ``valid_loss=`` each time it is measured, and
the training loss as ``loss=`` every step, so learned optimizers see both.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.tasks.base import Task


class Curves(NamedTuple):
    """Training curves of one (task, optimizer) over several seeds."""

    train_loss: jax.Array  # (S, N): training-batch loss before each of the N updates
    eval_steps: jax.Array  # (M,): step at which each evaluation was taken, M = N // E + 1
    eval: dict  # split -> metric name -> (S, M)


def eval_metrics(key: jax.Array, task: Task, params, split: str, num_batches: int) -> dict:
    """Mean metrics of ``params`` over ``num_batches`` batches of ``split``."""

    def one(k):
        k_batch, k_loss = jax.random.split(k)
        return task.metrics(params, k_loss, task.batch(k_batch, split))

    return jax.tree.map(jnp.mean, jax.vmap(one)(jax.random.split(key, num_batches)))


def train_one(
    key: jax.Array,
    task: Task,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    eval_every: int,
    eval_splits: tuple[str, ...] = ("inner_valid", "test"),
    eval_batches: int = 4,
):
    """One seed: returns (final params, train losses (N,), eval metrics split -> name -> (M,)).

    Pure and un-jitted; `evaluate` jits and vmaps it. ``num_steps`` must be a multiple of
    ``eval_every``.
    """
    if num_steps % eval_every:
        raise ValueError(f"num_steps={num_steps} must be a multiple of eval_every={eval_every}.")
    optimizer = optax.with_extra_args_support(optimizer)
    key_init, key_train, key_eval = jax.random.split(key, 3)
    params = task.init(key_init)
    opt_state = optimizer.init(params)

    def evaluate_all(k, params):
        keys = jax.random.split(k, len(eval_splits))
        return {s: eval_metrics(ks, task, params, s, eval_batches) for s, ks in zip(eval_splits, keys)}

    def valid_loss_of(metrics):
        return metrics["inner_valid"]["loss"] if "inner_valid" in metrics else None

    def step(carry, k):
        params, opt_state, valid_loss = carry
        k_batch, k_loss = jax.random.split(k)
        batch = task.batch(k_batch, "train")
        loss, grads = jax.value_and_grad(task.loss)(params, k_loss, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params, loss=loss, valid_loss=valid_loss)
        return (optax.apply_updates(params, updates), opt_state, valid_loss), loss

    def chunk(carry, k):
        k_steps, k_eval = jax.random.split(k)
        carry, losses = jax.lax.scan(step, carry, jax.random.split(k_steps, eval_every))
        metrics = evaluate_all(k_eval, carry[0])
        return (carry[0], carry[1], valid_loss_of(metrics)), (losses, metrics)

    metrics0 = evaluate_all(key_eval, params)
    carry = (params, opt_state, valid_loss_of(metrics0))
    keys = jax.random.split(key_train, num_steps // eval_every)
    (params, _, _), (losses, metrics) = jax.lax.scan(chunk, carry, keys)
    evals = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), metrics0, metrics)
    return params, losses.reshape(-1), evals


@functools.partial(
    jax.jit, static_argnames=("optimizer", "num_steps", "num_seeds", "eval_every", "eval_splits", "eval_batches")
)
def evaluate(
    key: jax.Array,
    task: Task,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    num_seeds: int = 1,
    eval_every: int = 100,
    eval_splits: tuple[str, ...] = ("inner_valid", "test"),
    eval_batches: int = 4,
) -> Curves:
    """Train ``task`` with ``optimizer`` from ``num_seeds`` seeds (vmapped) for ``num_steps`` steps.

    Jitted: ``optimizer`` must be hashable (optax transformations are NamedTuples of functions,
    so build one per learning rate and reuse it to hit the compilation cache); ``task`` is a pytree
    argument, so tasks with the same structure share one compiled program.
    """

    def one(k):
        _, losses, evals = train_one(k, task, optimizer, num_steps, eval_every, eval_splits, eval_batches)
        return losses, evals

    losses, evals = jax.vmap(one)(jax.random.split(key, num_seeds))
    return Curves(losses, jnp.arange(0, num_steps + 1, eval_every), evals)
