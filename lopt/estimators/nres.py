r"""`nres`: Noise-Reuse Evolution Strategies (antithetic), online and unbiased.

Like `pes`, but each particle draws one perturbation ε ~ N(0, σ²I) per episode and reuses it for
every truncation of that episode, so the estimate of a truncation is

.. math::
    \hat g = \frac{1}{P}\sum_p \frac{\epsilon_p}{2\sigma^2}\,\big(J^{+}_{p} - J^{-}_{p}\big)

and, when episodes begin and end at truncation boundaries, the sum over an episode's truncations
is exactly full-unroll antithetic ES with that ε. Its variance does not grow with the number of
truncations (PES's accumulated ξ does), which Li et al. show is lower than PES's for the same
compute. An episode that begins inside a truncation has
already been trained with the old ε for a few steps; it gets its own draw at the next truncation
and, for those early steps' influence, the weight ξ = ε_old + ε_new (see `lopt.estimators._online`).

References: Li, Harrison, Sohl-Dickstein, Smith, Metz 2023, "Noise-reuse in online evolution
strategies" (NeurIPS), arXiv:2304.12180.
"""

from __future__ import annotations

from lopt.estimators._online import OnlineESState, online_estimate, online_init
from lopt.estimators.base import GradientEstimator


class NRES(GradientEstimator):
    """Antithetic Noise-Reuse ES; see the module docstring. State: `OnlineESState`."""

    name = "nres"

    def init(self, key, theta, hparams) -> OnlineESState:
        del key, hparams  # the particles start their episodes (fresh tasks) at their first step
        return online_init(self, theta)

    def estimate(self, key, theta, state, hparams, *, data=None):
        return online_estimate(self, key, theta, state, hparams, data, reuse_noise=True)
