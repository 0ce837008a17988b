r"""Online hyperparameter tuning by truncated unrolls: hyperparameters updated every K steps of
one training run.

The run is cut into windows of K steps. At window j, from the current inner state (w_t, s_t)
treated as a constant, the hypergradient of the meta-loss K steps later is taken through those K
steps only,

.. math::
    \hat g_j = \frac{\partial L_V(w_{t+K})}{\partial u}\Big|_{w_t,\,s_t\ \text{fixed}},
    \qquad u \leftarrow \Pi\big(u - \text{Adam}(\hat g_j)\big),

and training continues from w_{t+K} with the new hyperparameters (Π: `HParamSpace.project`). One
run of T steps gives T / K hyperparameter updates for the price of one training run plus the
backward passes (about 2-3x a forward step each). The price of the truncation is *bias*: ĝ_j
ignores the effect of u on everything after t + K, so a short K favours hyperparameters that lower
the loss soon -- for learning rates, ones that are too small (the short-horizon bias, Wu et al.
2018; see `lopt.studies.short_horizon`).

References: Franceschi et al. 2017 (ICML), "real-time" hyperparameter optimization; Baydin et al.
2018, "Online learning rate adaptation with hypergradient descent" (ICLR; K = 1); Wu, Ren, Liao,
Grosse 2018, "Understanding short-horizon bias in stochastic meta-optimization" (ICLR).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.hpo.space import HParamSpace
from lopt.hpo.unrolled import InnerState, inner_init, inner_steps, meta_loss
from lopt.tasks.base import Task

PyTree = Any


def truncated_loss(
    key: jax.Array,
    task: Task,
    space: HParamSpace,
    theta: PyTree,
    state: InnerState,
    truncation: int,
    split: str = "outer_valid",
    num_batches: int = 4,
) -> tuple[jax.Array, tuple[InnerState, jax.Array]]:
    """L_V(w_{t+K}) after K = ``truncation`` steps from ``state`` (held constant), with the new
    state and the K training losses as auxiliary outputs."""
    k_train, k_meta = jax.random.split(key)
    state = jax.lax.stop_gradient(state)
    new, losses = inner_steps(k_train, task, space, theta, state, truncation)
    return meta_loss(k_meta, task, new.params, split, num_batches), (new, losses)


def truncated_hypergrad(
    key: jax.Array,
    task: Task,
    space: HParamSpace,
    theta: PyTree,
    state: InnerState,
    truncation: int,
    split: str = "outer_valid",
    num_batches: int = 4,
) -> tuple[jax.Array, PyTree, InnerState, jax.Array]:
    """(L_V, ĝ, new inner state, training losses (K,)) of one window of the module docstring."""
    (loss, (new, losses)), grad = jax.value_and_grad(truncated_loss, argnums=3, has_aux=True)(
        key, task, space, theta, state, truncation, split, num_batches
    )
    return loss, grad, new, losses


class OnlineTrace(NamedTuple):
    """What `online_tune` returns; W = num_steps // truncation windows."""

    theta: PyTree  # (W, ...) theta used in each window (before its update)
    final_theta: PyTree  # theta after the last update
    meta_loss: jax.Array  # (W,) L_V at the end of each window
    train_loss: jax.Array  # (W, K) training losses
    state: InnerState  # the inner state at the end of the run


def online_tune(
    key: jax.Array,
    task: Task,
    space: HParamSpace,
    theta: PyTree,
    *,
    num_steps: int,
    truncation: int,
    outer_lr: float = 0.05,
    split: str = "outer_valid",
    num_batches: int = 4,
) -> OnlineTrace:
    """One training run of ``num_steps`` (a multiple of ``truncation``), tuning ``theta`` online:
    Adam with ``outer_lr`` (in units of u, i.e. log-hyperparameter per update) on each window's
    hypergradient. Jit with ``space``, ``num_steps``, ``truncation``, ``split``, ``num_batches``
    static."""
    if num_steps % truncation:
        raise ValueError(f"num_steps={num_steps} must be a multiple of truncation={truncation}.")
    k_init, k_run = jax.random.split(key)
    outer = optax.adam(outer_lr)

    def window(carry, k):
        theta, outer_state, state = carry
        loss, grad, state, losses = truncated_hypergrad(
            k, task, space, theta, state, truncation, split, num_batches
        )
        grad = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grad)  # a diverged window: no step
        updates, outer_state = outer.update(grad, outer_state, theta)
        new_theta = space.project(optax.apply_updates(theta, updates))
        return (new_theta, outer_state, state), (theta, loss, losses)

    carry = (theta, outer.init(theta), inner_init(k_init, task, space, theta))
    (final, _, state), (thetas, losses, train) = jax.lax.scan(
        window, carry, jax.random.split(k_run, num_steps // truncation)
    )
    return OnlineTrace(thetas, final, losses, train, state)
