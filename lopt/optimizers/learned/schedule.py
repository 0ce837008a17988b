r"""The step-size shape of the v2 learned optimizers: linear warmup, then cosine decay, in the
fraction of training done.

Step t (0-based) of a run of T steps is at fraction f = (t + 1)/T, so the first step has f = 1/T
and the last f = 1; steps past T stay at f = 1 (the final value). With warmup fraction ω and final
value ρ (relative to the peak):

.. math::
    s(f) = \min(1, f/\omega)\cdot\big(\rho + (1-\rho)\,\tfrac12\,(1 + \cos \pi f)\big)

so s(f) → 0 as f → 0, s(½) = ½(1 + ρ) once ω ≤ ½, and s(1) = ρ. Adam's tuned warmup + cosine
schedules have this shape (Loshchilov & Hutter 2017); the learned part is the peak and a bounded
per-tensor factor (`hierarchical_v2`), not the shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def fraction(count: jax.Array, num_steps: jax.Array) -> jax.Array:
    """f = (t + 1)/T, clipped to [0, 1]: the fraction of training done after this step."""
    t = jnp.asarray(count, jnp.float32) + 1.0
    return jnp.clip(t / jnp.maximum(jnp.asarray(num_steps, jnp.float32), 1.0), 0.0, 1.0)


def shape(f: jax.Array, warmup: float, final: float) -> jax.Array:
    """s(f): linear warmup over the first ``warmup`` of training, cosine decay to ``final`` at f = 1."""
    w = jnp.asarray(warmup, jnp.float32)  # may be traced (a tuned hparam)
    warm = jnp.where(w > 0, jnp.minimum(1.0, f / jnp.maximum(w, 1e-12)), 1.0)
    return warm * (final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * f)))


def fraction_features(f: jax.Array, warmup: float, final: float) -> jax.Array:
    """(3,): f, cos(π f) and s(f), the per-tensor inputs that tell the optimizer where it is."""
    return jnp.stack([f, jnp.cos(jnp.pi * f), shape(f, warmup, final)])
