"""Lookahead around any optimizer, as a drop-in optax transformation (plain params in and out).

    opt = lookahead(BASELINES["adam"].make(), k=5, alpha=0.5)
    updates, state = opt.update(grads, state, params, loss=loss)    # extras reach the inner optimizer
    params = optax.apply_updates(params, updates)

Unlike `optax.lookahead`, which asks the caller to carry a (fast, slow) parameter pair, the slow
weights live in the optimizer state, so the wrapper composes with `optax.chain`, `lax.scan`,
`vmap` and checkpointing like any other optimizer.

References: Zhang, Lucas, Hinton, Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back",
arXiv:1907.08610.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.validate import ConfigError, check_range


class LookaheadState(NamedTuple):
    """State of `lookahead`: the inner optimizer's state, the slow weights φ and the step count."""

    inner_state: Any  # the wrapped optimizer's state
    slow: Any  # φ: same pytree, shapes and dtypes as params
    count: jax.Array  # int32 scalar: updates so far (saturating); a sync happens when count % k == 0


def lookahead(
    optimizer: optax.GradientTransformation, k: int = 5, alpha: float | jax.Array = 0.5
) -> optax.GradientTransformationExtraArgs:
    r"""Lookahead: every ``k`` steps, pull the slow weights towards the fast ones by ``alpha``.

    With θ the params (fast weights), φ the slow weights (φ_0 = θ_0) and the inner optimizer's
    update u_t, each call computes the fast proposal and, on every k-th call, a sync:

    .. math::
        \theta'_t &= \theta_t + u_t \\
        \text{if } (t+1) \bmod k = 0:\quad \phi &\leftarrow \phi + \alpha(\theta'_t - \phi),
            \quad \theta_{t+1} = \phi \\
        \text{else:}\quad \theta_{t+1} &= \theta'_t

    The returned update is u_t between syncs and φ_new − θ_t on a sync step, so applying it with
    `optax.apply_updates` sets the params to the new slow weights. The inner optimizer's state is
    kept across syncs (the paper's default; it is not reset).

    Float rounding: updates are deltas, so after a sync the params are fl(θ + fl(φ − θ)), not φ
    itself. This is exact whenever φ and θ are within a factor of two of each other (Sterbenz's
    lemma; the usual case, as φ is an average of recent fast weights) and otherwise off by at most
    about one ulp of max(|θ|, |φ|), e.g. for weights crossing zero. No choice of delta does better
    in general: when φ − θ is not representable, φ need not be reachable as θ + x for any float x.
    The exact φ is kept in the state and used by the next sync, so the error does not accumulate.

    Put `lookahead` last in a chain (``optax.chain(clip, lookahead(opt))``): its sync update is an
    absolute reset, which a later transformation (a scale, say) would distort.

    Args:
      optimizer: any optax transformation, hand-designed or learned; keyword extras passed to
        ``update`` (``loss=``, ``valid_loss=``, ...) are forwarded to it.
      k: sync period, a static Python int >= 1.
      alpha: slow-weight step size in [0, 1]; may be a traced scalar (to vmap over it).

    Returns:
      An `optax.GradientTransformationExtraArgs` whose state is a `LookaheadState`.

    References: Zhang, Lucas, Hinton, Ba 2019, arXiv:1907.08610.
    """
    k = _check_period(k)
    if not isinstance(alpha, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        check_range("lookahead alpha", float(np.asarray(alpha)), 0.0, 1.0)
    inner = optax.with_extra_args_support(optimizer)

    def init_fn(params) -> LookaheadState:
        return LookaheadState(
            inner_state=inner.init(params),
            slow=jax.tree.map(lambda p: jnp.array(p, copy=True), params),  # its own buffer (donation-safe)
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state: LookaheadState, params=None, **extra_args):
        if params is None:
            raise ValueError("lookahead needs params: call update(grads, state, params).")
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        count = optax.safe_int32_increment(state.count)
        new_updates, slow = _sync(inner_updates, state.slow, params, jnp.asarray(count) % k == 0, alpha)
        return new_updates, LookaheadState(inner_state=inner_state, slow=slow, count=count)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_period(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"lookahead k={k!r} must be a static Python int >= 1 (it sets the sync period).")
    if k < 1:
        raise ConfigError(f"lookahead k={k} is out of range: it must be >= 1 (sync every k steps).")
    return int(k)


def _sync(inner_updates: Any, slow: Any, params: Any, sync: jax.Array, alpha: float | jax.Array):
    """(updates, slow weights) of a step: u and φ between syncs; on a sync (``sync``, a () bool)
    φ ← φ + α(θ' − φ) with θ' = θ + u, and the update φ − θ."""
    fast = optax.apply_updates(params, inner_updates)  # θ' = θ + u, in the params' dtypes

    def new_slow(phi, theta_fast):
        moved = (phi + alpha * (theta_fast - phi)).astype(phi.dtype)  # φ + α(θ' − φ)
        return jnp.where(sync, moved, phi)

    slow = jax.tree.map(new_slow, slow, fast)

    def out(u, phi, theta):
        reset = (phi - theta).astype(u.dtype)  # θ + (φ − θ) = φ, up to rounding (see docstring)
        return jnp.where(sync, reset, u)

    return jax.tree.map(out, inner_updates, slow, params), slow
