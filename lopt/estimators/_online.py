r"""Online antithetic ES over truncations, shared by `pes` and `nres`.

Both keep, per particle p, the perturbation ε_p applied in the current truncation and the sum ξ_p
of the independent perturbations the particle's *current episode* has been trained with. A
truncation's losses ℓ_{p,t} are functions of every perturbation applied earlier in the episode,
so (Vicol et al. 2021, with antithetic pairs) the unbiased per-step weight is that sum:

.. math::
    \hat g = \frac{1}{P}\sum_p \frac{1}{2\sigma^2 K}\sum_{t=1}^{K} w_{p,t}\,\omega_{p,t}
             \big(\ell^{+}_{p,t} - \ell^{-}_{p,t}\big),\qquad
    w_{p,t} = \begin{cases} \xi_p & \text{t in the episode that was running at the start} \\
                            \epsilon_p & \text{t in an episode that began in this truncation}\end{cases}

ℓ± from θ ± ε_p (same task, batches and restarts: resets do not depend on theta), ω_{p,t} the
step weight of `lopt.unroll` (theta-free, so the estimate stays unbiased for the weighted
objective). Two options make the estimate robust at the cost of that exactness: ``drop_diverged``
zeroes a pair's terms from its first non-finite loss until its episode restarts (a diverged twin
otherwise scores the clip value for the rest of its episode), and ``shaping="zscore"``
(`shape_pairs`) normalizes the per-pair sums by their spread over the population. After the
truncation ξ_p ← ξ_p if no episode ended, ε_p if one began during it, 0 if the last one ended with
the truncation's last step. The two estimators differ only in when a new ε is drawn:

- PES draws a new ε_p every truncation: ξ accumulates one draw per truncation of the episode.
- NRES draws a new ε_p only for a new episode (at the first truncation after one began) and
  reuses it for all of that episode's truncations, so ξ_p holds at most two draws (the one in use
  when the episode began mid-truncation, and its own). Reusing the noise keeps the estimator
  unbiased and removes PES's variance growth with the number of truncations (Li et al. 2023).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.estimators.base import (
    GradientEstimator,
    antithetic_thetas,
    finite_mean_rows,
    flat_normal,
    leaf_scales,
    shape_pairs,
    unroll_metrics,
)
from lopt.unroll import UnrollState, first_segment


class OnlineESState(NamedTuple):
    """State of `pes` and `nres` (perturbations flat: D = theta's number of floats)."""

    unroll: UnrollState  # (2P, ...): [θ + ε particles, then θ − ε particles]
    accum: jax.Array  # (P, D) ξ: sum of the perturbations the current episode has seen
    noise: jax.Array  # (P, D) ε: the perturbation applied in the last truncation
    redraw: jax.Array  # (P,) bool: draw a new ε at the next truncation (NRES; PES always draws)
    diverged: jax.Array  # (P,) bool: the pair's current episode has had a non-finite loss
    scale: jax.Array  # (D,) per-coordinate perturbation scale s (`leaf_scales` of the theta at init)


def online_init(est: GradientEstimator, theta) -> OnlineESState:
    p = est.num_particles
    inner = est.unroller.init(theta, 2 * p)  # not started: each begins an episode at its first step
    zeros = jnp.zeros_like(flat_normal(jax.random.key(0), theta, p))
    scale = leaf_scales(theta, est.sigma_scale)
    return OnlineESState(inner, zeros, zeros, jnp.ones((p,), bool), jnp.zeros((p,), bool), scale)


def online_estimate(
    est: GradientEstimator, key, theta, state: OnlineESState, hparams, data, reuse_noise: bool
):
    unroller = est.unroller
    data = unroller.data() if data is None else data
    p, k, sigma = est.num_particles, est.truncation_length, hparams["sigma"]
    k_noise, k_unroll = jax.random.split(key)
    draw = sigma * state.scale[None] * flat_normal(k_noise, theta, p)  # (P, D): ε = σ s z
    redraw = (state.redraw if reuse_noise else jnp.ones((p,), bool))[:, None]  # (P, 1)
    noise = jnp.where(redraw, draw, state.noise)  # (P, D)
    accum = jnp.where(redraw, state.accum + draw, state.accum)  # ξ including ε
    thetas = antithetic_thetas(theta, noise)  # (2P, ...)
    inner, out = unroller.unroll(k_unroll, state.unroll, thetas, k, theta_axis=0, antithetic=True, data=data)

    diff = (out.meta_loss[:, :p] - out.meta_loss[:, p:]) * out.weight[:, :p]  # (K, P): ω (ℓ+ − ℓ−)
    done = out.done[:, :p]  # (K, P), equal for both members of a pair
    bad, diverged = episode_diverged(out.finite[:, :p] & out.finite[:, p:], done, state.diverged)
    if est.drop_diverged:
        diff = jnp.where(bad, 0.0, diff)
    first = first_segment(done)  # (K, P)
    c = 1.0 / (2.0 * sigma**2 * k)
    a = jnp.sum(jnp.where(first, diff, 0.0), axis=0) * c  # (P,) weight of ξ
    b = jnp.sum(jnp.where(first, 0.0, diff), axis=0) * c  # (P,) weight of ε (episodes begun here)
    live = ~jnp.all(bad, axis=0) if est.drop_diverged else None
    a, b = shape_pairs(a, b, est.shaping, live)
    grad, zeroed = finite_mean_rows(
        (a[:, None] * accum + b[:, None] * noise) / jnp.square(state.scale)[None], theta
    )

    ended, ended_last = jnp.any(done, axis=0), done[-1]  # (P,), (P,)
    new_accum = jnp.where(ended[:, None], jnp.where(ended_last[:, None], 0.0, noise), accum)
    new_state = OnlineESState(inner, new_accum, noise, ended, diverged, state.scale)
    metrics = unroll_metrics(out, zeroed)
    metrics["num_dropped"] = (
        jnp.sum(jnp.any(bad, axis=0), dtype=jnp.int32) if est.drop_diverged else jnp.int32(0)
    )
    return grad, new_state, metrics


def episode_diverged(ok: jax.Array, done: jax.Array, start: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(bad (K, P), carried (P,)): ``bad[t]`` -- the episode running at step t has had a step with
    ``ok`` False at or before t (``start``: it already had, for the episode running at the start);
    an episode that ends with ``done[t]`` clears the flag for the next one.

    Vectorized (no scan over K): the count of failures since the current episode began is the
    running count minus its value at the episode's first step, found with a cumulative max."""
    fails = jnp.cumsum((~ok).astype(jnp.int32), axis=0)  # (K, P) failures so far
    before = fails - (~ok).astype(jnp.int32)  # exclusive: failures before step t
    begins = jnp.concatenate([jnp.ones_like(done[:1]), done[:-1]], axis=0)  # step t starts an episode
    base = jax.lax.cummax(jnp.where(begins, before, 0), axis=0)  # failures before the episode's start
    first = jnp.cumsum(done.astype(jnp.int32), axis=0) - done.astype(jnp.int32) == 0  # the starting episode
    bad = (fails - base > 0) | (first & start[None])
    return bad, jnp.where(done[-1], False, bad[-1])
