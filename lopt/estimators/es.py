r"""`es`: antithetic evolution strategies over full unrolls.

Each estimate starts P fresh tasks, trains each twice -- with θ + ε_p and with θ − ε_p, on the
same task, initialization and batches (common random numbers) -- for a whole episode of H_p steps
(log-uniform in the horizon bounds), and returns

.. math::
    \hat g = \frac{1}{P}\sum_{p=1}^{P} \frac{\epsilon_p}{2\sigma^2}\big(J_p(\theta+\epsilon_p) - J_p(\theta-\epsilon_p)\big),
    \qquad \epsilon_p \sim \mathcal N(0, \sigma^2 I),

J_p the weighted mean normalized meta-loss over the episode's steps (Σ_t ω_t ℓ_t / H_p,
`lopt.unroll`). It is an unbiased estimate of the gradient of the Gaussian-smoothed objective
E_ε[J(θ + ε)], with no truncation bias, at the price of a whole episode per estimate (no state carries over between estimates).

The scan runs horizon[1] steps; a particle with a shorter horizon restarts on a new task after it
and those steps are masked out, so set ``horizon=(H, H)`` to waste nothing. ``truncation_length``
and ``stagger`` are unused.

References: Salimans et al. 2017, "Evolution strategies as a scalable alternative to reinforcement
learning"; Metz et al. 2020, arXiv:2009.11243 (antithetic ES for learned optimizers).
"""

from __future__ import annotations

import dataclasses
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
from lopt.unroll import first_segment


class ESState(NamedTuple):
    """Full-unroll ES keeps no state between estimates."""


class ES(GradientEstimator):
    """Antithetic ES over full unrolls from fresh tasks; see the module docstring."""

    name = "es"

    def inner_steps_per_estimate(self) -> int:
        return self.num_unrolls() * self.horizon[1]

    def init(self, key, theta, hparams) -> ESState:
        del key, theta, hparams
        return ESState()

    def estimate(self, key, theta, state, hparams, *, data=None):
        unroller = dataclasses.replace(self.unroller, stagger=False)
        data = unroller.data() if data is None else data
        p, sigma = self.num_particles, hparams["sigma"]
        k_noise, k_unroll = jax.random.split(key)
        scale = leaf_scales(theta, self.sigma_scale)  # (D,) s: ε = σ s z
        noise = sigma * scale[None] * flat_normal(k_noise, theta, p)  # (P, D)
        thetas = antithetic_thetas(theta, noise)  # (2P, ...)
        inner = unroller.init(thetas, 2 * p, theta_axis=0)  # every particle starts a fresh episode
        _, out = unroller.unroll(
            k_unroll, inner, thetas, self.horizon[1], theta_axis=0, antithetic=True, data=data
        )
        mask = first_segment(out.done)  # (K, 2P): the steps of each particle's episode
        steps = jnp.sum(mask, axis=0).astype(jnp.float32)  # (2P,) H_p
        j = jnp.sum(jnp.where(mask, out.weight * out.meta_loss, 0.0), axis=0) / steps  # (2P,) J_p(θ ± ε_p)
        weights = (j[:p] - j[p:]) / (2.0 * sigma**2)  # (P,)
        live = None
        if self.drop_diverged:  # a pair with a non-finite loss in its episode contributes nothing
            live = jnp.all(jnp.where(mask[:, :p], out.finite[:, :p] & out.finite[:, p:], True), axis=0)
            weights = jnp.where(live, weights, 0.0)
        weights, _ = shape_pairs(weights, jnp.zeros_like(weights), self.shaping, live)
        grad, zeroed = finite_mean_rows(weights[:, None] * noise / jnp.square(scale)[None], theta)
        metrics = unroll_metrics(out, zeroed, mask)
        metrics["num_dropped"] = jnp.int32(0) if live is None else jnp.sum(~live, dtype=jnp.int32)
        return grad, state, metrics
