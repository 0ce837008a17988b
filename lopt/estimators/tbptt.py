r"""`tbptt`: truncated backpropagation through time.

Each particle trains its task for K steps per estimate with θ itself and carries its inner state
to the next estimate; the meta-gradient is the exact gradient of the truncation's mean normalized
meta-loss with respect to θ, backpropagated through the K steps only (the carried state is treated
as a constant):

.. math::
    \hat g = \frac{1}{P}\sum_p \nabla_\theta \frac{1}{K}\sum_{t=1}^{K} \ell_{p,t}(\theta;\ s_{p,0})

Cheap and low-variance, but biased: it ignores how θ shaped the state s_{p,0} it starts from and
how its steps shape the losses after the truncation. The textbook failure is the short-horizon
bias (Wu et al. 2018): a truncated objective rewards greedy progress, so on ill-conditioned
problems it prefers learning rates smaller than the ones best for the whole training run.
Long truncations, in turn, make the gradient explode (Metz et al. 2019). Its gradients see through
the normalization's clipping as zero and through non-finite losses as NaN (zeroed and counted).
An optimizer that takes √v or 1/√v of a second moment that is exactly 0 -- a parameter whose
gradient is always 0, such as a weight of an always-blank input pixel -- has an infinite derivative
there, so its TBPTT gradient is NaN (zeroed, counted in ``num_zeroed``); the ES estimators do not
differentiate and are unaffected.

References: Wu, Ren, Liao, Grosse 2018, "Understanding short-horizon bias in stochastic
meta-optimization" (ICLR); Metz et al. 2019, "Understanding and correcting pathologies in the
training of learned optimizers" (ICML).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.estimators.base import GradientEstimator, broadcast, finite_mean, unroll_metrics
from lopt.unroll import UnrollState


class TBPTTState(NamedTuple):
    """State of `tbptt`: the population's inner training."""

    unroll: UnrollState  # (P, ...)


class TBPTT(GradientEstimator):
    """Truncated backprop through K inner steps; see the module docstring."""

    name = "tbptt"

    def default_hparams(self) -> dict[str, jax.Array]:
        return {}

    def num_unrolls(self) -> int:
        return self.num_particles

    def init(self, key, theta, hparams) -> TBPTTState:
        del key, hparams  # the particles start their episodes (fresh tasks) at their first step
        return TBPTTState(self.unroller.init(theta, self.num_particles))

    def estimate(self, key, theta, state, hparams, *, data=None):
        del hparams
        unroller = self.unroller
        data = unroller.data() if data is None else data

        def total_loss(thetas):  # thetas (P, ...): one copy per particle, for per-particle gradients
            inner, out = unroller.unroll(
                key, state.unroll, thetas, self.truncation_length, theta_axis=0, data=data
            )
            return jnp.sum(jnp.mean(out.weight * out.meta_loss, axis=0)), (inner, out)

        grads, (inner, out) = jax.grad(total_loss, has_aux=True)(broadcast(theta, self.num_particles))
        grad, zeroed = finite_mean(grads)
        return grad, TBPTTState(inner), {**unroll_metrics(out, zeroed), "num_dropped": jnp.int32(0)}
