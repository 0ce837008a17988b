r"""The outer step of meta-training, pure: estimate the meta-gradient on every task group, average,
update theta.

An outer step estimates the meta-gradient on every task group (a group is one static task
structure whose P particles the estimator vmaps; groups that share structure are merged into one
with more particles), averages the groups' estimates with weights proportional to their particle
counts (each group's meta-loss is already normalized per task), and applies the outer optimizer:

.. math::
    g = \sum_i w_i\, \hat g_i(\theta), \qquad (u, s) = \text{opt.update}(g, s, \theta,\
    \text{loss}=\textstyle\sum_i w_i J_i), \qquad \theta \leftarrow \theta + u

The outer optimizer is an optax transformation -- by default AdamW after global-norm clipping,
with linear warmup and cosine decay -- or a learned optimizer's ``transform(theta_outer)`` with
theta as its params (a learned optimizer training a learned optimizer). If g or the new theta has
a NaN or an infinity the update is skipped (theta and the outer optimizer state are kept; the
estimator states advance) and counted: theta never holds a non-finite value.

Everything random comes from the state's key, so two runs of one config give bitwise identical
thetas, and a run resumed from a checkpoint continues exactly (`lopt.checkpoint`).

References: Metz et al. 2020, "Tasks, stability, architecture, and compute: training more
effective learned optimizers, and using them to train themselves", arXiv:2009.11243.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.estimators.base import PHASE_BINS

PyTree = Any


class OuterState(NamedTuple):
    """The whole state of meta-training (a checkpoint holds exactly this)."""

    theta: PyTree  # the learned optimizer's meta-parameters
    opt_state: PyTree  # the outer optimizer's state
    estimator_states: tuple  # one estimator state per task group
    step: jax.Array  # int32: outer steps taken
    key: jax.Array  # the run's PRNG key, split at every step
    num_skipped: jax.Array  # int32: outer updates skipped for a non-finite meta-gradient or theta


# --- the outer step (pure) ------------------------------------------------------------------------


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    # one op, not one per leaf
    return jnp.all(jnp.isfinite(jnp.concatenate(leaves))) if leaves else jnp.bool_(True)


def _tree_where(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def estimate_groups(
    key: jax.Array,
    theta: PyTree,
    states: tuple,
    data: tuple,
    hparams: tuple,
    estimators: tuple,
    weights: tuple,
    per_step: int = 0,
) -> tuple[PyTree, tuple, dict[str, jax.Array]]:
    """(weighted mean meta-gradient, new estimator states, metrics) over the task groups.

    ``per_step`` = S in (0, G): only S groups, drawn uniformly without replacement from ``key``,
    are estimated (one `lax.switch` per slot, so a step costs S groups, not G); the others' states
    wait unchanged. Their estimates are weighted (G/S)·w_i, which keeps the mean unbiased for
    Σ_i w_i ĝ_i; ``meta_loss_groups`` is NaN for the groups not drawn. 0 (or >= G): every group.
    """
    num = len(estimators)
    if 0 < per_step < num:
        return _estimate_sampled(key, theta, states, data, hparams, estimators, weights, per_step)
    keys = jax.random.split(key, num)
    grads, new_states, group = [], [], []
    for est, k, s, d, h in zip(estimators, keys, states, data, hparams):
        g, s, m = est.estimate(k, theta, s, h, data=d)
        grads.append(g)
        new_states.append(s)
        group.append(m)
    grad, metrics = combine_groups(grads, group, weights)
    return grad, tuple(new_states), metrics


def combine_groups(grads: list, group: list, weights: tuple) -> tuple[PyTree, dict[str, jax.Array]]:
    """(Σ_i w_i ĝ_i, metrics) of every group's estimate and metrics, in group order: the averaging of
    `estimate_groups`, also used by a learner over estimates that workers computed (`lopt.distributed`)."""
    grad = jax.tree.map(lambda *gs: sum(w * g for w, g in zip(weights, gs)), *grads)  # Σ_i w_i ĝ_i
    losses = jnp.stack([m["meta_loss"] for m in group])  # (G,)
    w = jnp.asarray(weights, jnp.float32)
    metrics = {
        "meta_loss": jnp.sum(w * losses),
        "meta_loss_weighted": jnp.sum(w * jnp.stack([_get(m, "meta_loss_weighted") for m in group])),
        "meta_loss_groups": losses,
        **{name: sum(_get(m, name) for m in group) for name in _SUMMED},
    }
    return grad, _phase_mean(metrics)


_SUMMED = (
    "inner_steps",
    "num_nonfinite",
    "num_zeroed",
    "num_resets",
    "num_dropped",
    "phase_sum",
    "phase_count",
)


def _zero_summed() -> dict[str, jax.Array]:
    bins = jnp.zeros((PHASE_BINS,), jnp.float32)
    return {name: bins if name.startswith("phase") else jnp.int32(0) for name in _SUMMED}


def _get(m: dict[str, jax.Array], name: str) -> jax.Array:
    """Metric ``name`` of an estimate; an estimator that does not report it counts as 0 (meta_loss_weighted:
    its meta_loss)."""
    if name in m:
        return m[name]
    if name == "meta_loss_weighted":
        return m["meta_loss"]
    return _zero_summed()[name]


def _phase_mean(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``meta_loss_phase`` (PHASE_BINS,): mean ℓ by episode phase over every group estimated (NaN: none)."""
    count = metrics["phase_count"]
    return {
        **metrics,
        "meta_loss_phase": jnp.where(count > 0, metrics["phase_sum"] / jnp.maximum(count, 1), jnp.nan),
    }


def _estimate_sampled(key, theta, states, data, hparams, estimators, weights, per_step):
    """`estimate_groups` on S groups drawn without replacement: Σ_{i∈S} (G/S) w_i ĝ_i."""
    num = len(estimators)
    k_pick, k_est = jax.random.split(key)
    picks = jax.random.choice(k_pick, num, (per_step,), replace=False)  # (S,) distinct group indices
    scale = jnp.asarray(weights, jnp.float32) * (num / per_step)  # (G,)

    def branch(i):
        def run(k, states):
            g, s, m = estimators[i].estimate(k, theta, states[i], hparams[i], data=data[i])
            return g, states[:i] + (s,) + states[i + 1 :], m

        return run

    branches = [branch(i) for i in range(num)]

    def slot(carry, pick_key):
        # one lax.switch inside a scan over the S slots: each group's program is compiled once, not S times
        grad, states, losses, meta_loss, weighted, summed = carry
        i, k = pick_key
        g, states, m = jax.lax.switch(i, branches, k, states)
        grad = jax.tree.map(lambda acc, x: acc + scale[i] * x, grad, g)
        losses = losses.at[i].set(m["meta_loss"])
        meta_loss = meta_loss + scale[i] * m["meta_loss"]
        weighted = weighted + scale[i] * _get(m, "meta_loss_weighted")
        summed = {name: summed[name] + _get(m, name) for name in _SUMMED}
        return (grad, states, losses, meta_loss, weighted, summed), None

    init = (
        jax.tree.map(jnp.zeros_like, theta),
        states,
        jnp.full((num,), jnp.nan, jnp.float32),
        jnp.float32(0.0),
        jnp.float32(0.0),
        _zero_summed(),
    )
    carry, _ = jax.lax.scan(slot, init, (picks, jax.random.split(k_est, per_step)))
    grad, states, losses, meta_loss, weighted, summed = carry
    metrics = {"meta_loss": meta_loss, "meta_loss_weighted": weighted, "meta_loss_groups": losses, **summed}
    return grad, states, _phase_mean(metrics)


def apply_outer(
    state: OuterState, grad: PyTree, meta_loss: jax.Array, outer_opt: optax.GradientTransformationExtraArgs
) -> tuple[PyTree, PyTree, jax.Array, dict[str, jax.Array]]:
    """(theta, outer optimizer state, skipped, metrics) after one update; skipped (bool) when the
    gradient or the updated theta is not finite, and then theta and the state are the old ones."""
    grad_ok = _all_finite(grad)
    safe = _tree_where(grad_ok, grad, jax.tree.map(jnp.zeros_like, grad))
    updates, opt_state = outer_opt.update(safe, state.opt_state, state.theta, loss=meta_loss)
    theta = optax.apply_updates(state.theta, updates)
    ok = grad_ok & _all_finite(theta) & _all_finite(opt_state)
    metrics = {"grad_norm": optax.tree.norm(grad), "update_norm": optax.tree.norm(updates)}
    return _tree_where(ok, theta, state.theta), _tree_where(ok, opt_state, state.opt_state), ~ok, metrics


def outer_step(
    state: OuterState,
    data: tuple,
    hparams: tuple,
    *,
    estimators: tuple,
    weights: tuple,
    outer_opt,
    per_step: int = 0,
) -> tuple[OuterState, dict[str, jax.Array]]:
    """One outer step: estimate on every group, average, update theta (skipping non-finite updates)."""
    key, k_est = jax.random.split(state.key)
    grad, est_states, metrics = estimate_groups(
        k_est, state.theta, state.estimator_states, data, hparams, estimators, weights, per_step
    )
    theta, opt_state, skipped, outer_metrics = apply_outer(state, grad, metrics["meta_loss"], outer_opt)
    num_skipped = state.num_skipped + skipped.astype(jnp.int32)
    new = OuterState(theta, opt_state, est_states, state.step + 1, key, num_skipped)
    metrics = {**metrics, **outer_metrics, "skipped": skipped.astype(jnp.int32), "num_skipped": num_skipped}
    return new, metrics
