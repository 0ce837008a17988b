r"""The two halves of an outer step, apart: a worker's estimate on its groups, the learner's update.

A single-process outer step (`lopt.meta_train.outer.outer_step`) is, for version v of theta
(the theta after v updates) and the run's key k_v,

.. math::
    (k_{v+1}, k^\text{est}) = \text{split}(k_v), \quad (k_1..k_G) = \text{split}(k^\text{est}, G),
    \quad \hat g_i = \text{estimate}_i(k_i, \theta_v, s_i), \quad
    \theta_{v+1} = \text{apply\_outer}(\textstyle\sum_i w_i \hat g_i)

Here the learner derives the group keys (`group_keys`), a worker runs ``estimate_i`` for the
groups it owns (`WorkerProgram`), and the learner averages and applies (`LearnerProgram`) with
`combine_groups` and `apply_outer`, the very functions of the single-process step, so with every
group's estimate of version v in hand the update is bitwise the single-process one. A group
estimated again on the same version (asynchronous mode, ``n`` > 0) draws its keys from
``fold_in(k_est, n)``.

Nothing here imports Ray: these are the pure functions that the actors call.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.meta_train.outer import OuterState, apply_outer, combine_groups
from lopt.meta_train.trainer import MetaTrainer

PyTree = Any


def _group_keys(key: jax.Array, num_groups: int, repeat: jax.Array) -> jax.Array:
    _, k_est = jax.random.split(key)
    k_est = jax.lax.cond(repeat > 0, lambda k: jax.random.fold_in(k, repeat), lambda k: k, k_est)
    return jax.random.key_data(jax.random.split(k_est, num_groups))  # (G, 2) uint32


@functools.partial(jax.jit, static_argnums=1)
def _group_keys_jit(key, num_groups, repeat):
    return _group_keys(key, num_groups, repeat)


def group_keys(key: jax.Array, num_groups: int, repeat: int = 0) -> np.ndarray:
    """(G, 2) uint32 key data of every group's estimate for the theta whose run key is ``key``;
    ``repeat`` = n > 0: the n-th extra estimate on that same theta (asynchronous mode)."""
    return np.asarray(_group_keys_jit(key, num_groups, jnp.int32(repeat)))


@dataclasses.dataclass(frozen=True)
class WorkerProgram:
    """The estimates of some of a trainer's groups (``groups``: their indices), jitted."""

    trainer: MetaTrainer
    groups: tuple[int, ...]

    def __post_init__(self):
        if not self.groups or any(not 0 <= g < len(self.trainer.estimators) for g in self.groups):
            raise ValueError(
                f"groups {self.groups}: indices into {len(self.trainer.estimators)} task groups."
            )
        estimators = tuple(self.trainer.estimators[g] for g in self.groups)
        object.__setattr__(self, "_run", jax.jit(functools.partial(_estimate, estimators=estimators)))
        object.__setattr__(self, "_data", tuple(est.unroller.data() for est in estimators))
        object.__setattr__(self, "_hparams", tuple(self.trainer.hparams[g] for g in self.groups))

    def estimate(self, keys: np.ndarray, theta: PyTree, states: tuple) -> tuple[tuple, tuple, tuple]:
        """(per-group estimates, new states, per-group metrics) for key data ``keys`` (len(groups), 2):
        one jitted program over the worker's groups, as the single-process step runs them. The
        estimates and metrics come back as host (numpy) arrays, the states stay on the device."""
        stacked, states, metrics = self._run(keys, theta, states, self._data, self._hparams)  # pyright: ignore[reportAttributeAccessIssue]
        stacked, metrics = jax.device_get((stacked, metrics))  # the states are ready with them: one program
        grads = tuple(jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(len(self.groups)))
        return grads, states, metrics

    def fresh_states(self, key: jax.Array, theta: PyTree) -> tuple:
        """Fresh estimator states of the groups (particles that start new episodes at their next estimate)."""
        keys = jax.random.split(key, len(self.groups))
        return tuple(
            self.trainer.estimators[g].init(k, theta, self.trainer.hparams[g])
            for g, k in zip(self.groups, keys)
        )


def _estimate(key_data, theta, states, data, hparams, *, estimators):
    keys = jax.random.wrap_key_data(key_data)  # inside the program: no dispatch of its own
    out = [
        est.estimate(k, theta, s, h, data=d)
        for est, k, s, d, h in zip(estimators, keys, states, data, hparams)
    ]
    grads, new_states, metrics = zip(*out)
    # the estimates as one stacked output per leaf: with one output per group and leaf, XLA ran the
    # groups' computations with less parallelism (mlp_digits, 2 cores: 1.13 s a call at a CPU share
    # of 1.64, against 0.94 s at 1.81 stacked, as fast as the single-process step); same values
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    return stacked, tuple(new_states), tuple(metrics)


@dataclasses.dataclass(frozen=True)
class LearnerProgram:
    """The learner's update from every group's estimate, jitted; the state it takes and returns has
    empty ``estimator_states`` (the workers hold them)."""

    trainer: MetaTrainer

    def __post_init__(self):
        fn = functools.partial(_update, weights=self.trainer.weights, outer_opt=self.trainer.outer_opt)
        object.__setattr__(self, "_run", jax.jit(fn))

    def update(self, state: OuterState, grads: tuple, metrics: tuple) -> tuple[OuterState, dict]:
        """(state after one update, metrics) from one estimate per group, in group order."""
        return self._run(state, grads, metrics)  # pyright: ignore[reportAttributeAccessIssue]


def _update(state: OuterState, grads, group_metrics, *, weights, outer_opt):
    # the same operations as outer_step, with the estimates as inputs
    key, _ = jax.random.split(state.key)
    grad, metrics = combine_groups(list(grads), list(group_metrics), weights)
    theta, opt_state, skipped, outer_metrics = apply_outer(state, grad, metrics["meta_loss"], outer_opt)
    num_skipped = state.num_skipped + skipped.astype(jnp.int32)
    new = OuterState(theta, opt_state, state.estimator_states, state.step + 1, key, num_skipped)
    metrics = {**metrics, **outer_metrics, "skipped": skipped.astype(jnp.int32), "num_skipped": num_skipped}
    return new, metrics


def check_estimate(grad: PyTree, theta: PyTree) -> str:
    """Why an estimate cannot be applied to ``theta`` ("" when it can): another tree structure, a
    leaf of another shape or dtype, or a NaN or infinity."""
    g_leaves, g_def = jax.tree.flatten(grad)
    t_leaves, t_def = jax.tree.flatten(theta)
    if g_def != t_def:
        return f"tree structure {g_def} is not theta's {t_def}"
    for i, (g, t) in enumerate(zip(g_leaves, t_leaves)):
        g = np.asarray(g)
        if g.shape != np.shape(t) or g.dtype != np.asarray(t).dtype:
            return (
                f"leaf {i} is {g.dtype}{list(g.shape)}, theta's is {np.asarray(t).dtype}{list(np.shape(t))}"
            )
        if not np.all(np.isfinite(g)):
            return f"leaf {i} holds a NaN or an infinity"
    return ""
