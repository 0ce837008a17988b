r"""Hypergradients by differentiating through the whole inner training run (reverse mode).

With w_0 the initial params, w_{t+1} = w_t + u_t(g_t, s_t; λ) the optimizer's steps on training
batches and L_V the mean loss of w_T on ``num_batches`` batches of the meta split, the
hypergradient is

.. math::
    \frac{d L_V(w_T)}{d u} = \frac{\partial L_V}{\partial w_T}\,
        \prod_{t=T-1}^{0} \frac{\partial w_{t+1}}{\partial w_t} \cdots \frac{\partial w_{t+1}}{\partial u}
    \quad(\text{summed over } t)

computed by `jax.value_and_grad` through `lax.scan`: exact for the sampled batches, memory linear
in T (every step's params and optimizer state are kept for the backward pass), and, over long
horizons, prone to the exploding gradients of chaotic unrolls (Metz et al. 2019) -- which is why
the truncated, implicit and ES methods exist.

References: Maclaurin, Duvenaud, Adams 2015 (ICML); Franceschi, Donini, Frasconi, Pontil 2017,
"Forward and reverse gradient-based hyperparameter optimization" (ICML); Grosse, CSC2541
"Neural net training dynamics", lecture on bilevel optimization.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.hpo.space import HParamSpace
from lopt.tasks.base import Task

PyTree = Any


class InnerState(NamedTuple):
    """One inner training run's state."""

    params: PyTree  # w_t
    opt_state: PyTree  # s_t
    step: jax.Array  # int32 t


def inner_init(key: jax.Array, task: Task, space: HParamSpace, theta: PyTree) -> InnerState:
    """w_0 from ``key`` and the optimizer state of ``space.make(theta)``."""
    params = task.init(key)
    return InnerState(params, space.make(theta).init(params), jnp.zeros([], jnp.int32))


def inner_steps(
    key: jax.Array, task: Task, space: HParamSpace, theta: PyTree, state: InnerState, num_steps: int
) -> tuple[InnerState, jax.Array]:
    """``num_steps`` optimizer steps on training batches (`lax.scan`); returns the state and the
    (num_steps,) training losses. The training loss reaches the optimizer as ``loss=``."""
    opt = space.make(theta)

    def step(state, k):
        k_batch, k_loss = jax.random.split(k)
        loss, grads = jax.value_and_grad(task.loss)(state.params, k_loss, task.batch(k_batch, "train"))
        updates, opt_state = opt.update(grads, state.opt_state, state.params, loss=loss)
        return InnerState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), loss

    return jax.lax.scan(step, state, jax.random.split(key, num_steps))


def meta_loss(
    key: jax.Array, task: Task, params: PyTree, split: str = "outer_valid", num_batches: int = 4
) -> jax.Array:
    """L_V: the mean loss of ``params`` on ``num_batches`` batches of ``split``."""

    def one(k):
        k_batch, k_loss = jax.random.split(k)
        return task.loss(params, k_loss, task.batch(k_batch, split))

    return jnp.mean(jax.vmap(one)(jax.random.split(key, num_batches)))


def unrolled_loss(
    key: jax.Array,
    task: Task,
    space: HParamSpace,
    theta: PyTree,
    num_steps: int,
    split: str = "outer_valid",
    num_batches: int = 4,
) -> jax.Array:
    """L_V(w_T(theta)) of a whole run of ``num_steps`` from fresh params (keys split from ``key``)."""
    k_init, k_train, k_meta = jax.random.split(key, 3)
    state, _ = inner_steps(k_train, task, space, theta, inner_init(k_init, task, space, theta), num_steps)
    return meta_loss(k_meta, task, state.params, split, num_batches)


def unrolled_hypergrad(
    key: jax.Array,
    task: Task,
    space: HParamSpace,
    theta: PyTree,
    num_steps: int,
    split: str = "outer_valid",
    num_batches: int = 4,
) -> tuple[jax.Array, PyTree]:
    """(L_V, dL_V/dtheta) through the whole run of `unrolled_loss` (jit with static ``task``-free
    arguments: ``space``, ``num_steps``, ``split``, ``num_batches``)."""
    return jax.value_and_grad(unrolled_loss, argnums=3)(
        key, task, space, theta, num_steps, split, num_batches
    )
