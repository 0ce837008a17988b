r"""`pes`: Persistent Evolution Strategies (antithetic), unbiased over truncated unrolls.

Each particle trains its task with θ + ε_t (and its antithetic twin with θ − ε_t) for K steps per
estimate, a fresh ε_t ~ N(0, σ²I) every truncation, and carries its inner state to the next
estimate. The perturbations accumulate per particle, ξ ← ξ + ε_t, and the gradient weights the
truncation's loss differences by ξ (reset when the episode ends):

.. math::
    \hat g = \frac{1}{P}\sum_p \frac{\xi_p}{2\sigma^2}\,\big(J^{+}_{p} - J^{-}_{p}\big)

J± the mean normalized meta-loss over the truncation (steps after a restart inside the truncation
are weighted by ε_t alone: see `lopt.estimators._online`). Summed over an episode's truncations it
is unbiased for the gradient of the smoothed episode objective, with no truncation bias, unlike
truncated backprop -- at the cost of a variance that grows with the number of truncations.

References: Vicol, Metz, Sohl-Dickstein 2021, "Unbiased gradient estimation in unrolled
computation graphs with persistent evolution strategies" (ICML); Metz et al. 2020, arXiv:2009.11243.
"""

from __future__ import annotations

from lopt.estimators._online import OnlineESState, online_estimate, online_init
from lopt.estimators.base import GradientEstimator


class PES(GradientEstimator):
    """Antithetic PES; see the module docstring. State: `OnlineESState`."""

    name = "pes"

    def init(self, key, theta, hparams) -> OnlineESState:
        del key, hparams  # the particles start their episodes (fresh tasks) at their first step
        return online_init(self, theta)

    def estimate(self, key, theta, state, hparams, *, data=None):
        return online_estimate(self, key, theta, state, hparams, data, reuse_noise=False)
