r"""Baselines assembled from optax pieces, each with its learning-rate schedule: ``adam8p``
(TaskSet's Adam8p), ``adam_cosine`` (warmup + cosine over the run, horizon-aware) and
``nadamw_cosine`` (opt_list's NAdamW), with `bind_num_steps` for a horizon-aware optimizer in your
own loop. `lopt.optimizers.baselines` registers them (``BASELINES``) beside optax's own optimizers.

Conventions as in `lopt.optimizers.baselines`: g_t the gradient at step t = 0, 1, ..., θ the
params, η the learning rate, updates u_t with θ_{t+1} = θ_t + u_t.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

# --- adam8p --------------------------------------------------------------------------------------


def adam8p_schedule(
    learning_rate: Any, linear_decay: Any, exponential_decay: Any
) -> Callable[[jax.Array], jax.Array]:
    """η_t = η · max(0, 1 − linear_decay · t) · exp(−exponential_decay · t), t = 0, 1, ..."""

    def schedule(count: jax.Array) -> jax.Array:
        t = jnp.asarray(count, jnp.float32)
        return learning_rate * jnp.maximum(0.0, 1.0 - linear_decay * t) * jnp.exp(-exponential_decay * t)

    return schedule


def _add_l1(l1: Any) -> optax.GradientTransformation:
    """g ← g + l1 · sign(θ): the (sub)gradient of l1 · ‖θ‖₁."""

    if isinstance(l1, (int, float)) and l1 == 0:  # a concrete zero: skip the work, as optax does for L2
        return optax.identity()

    def add(updates, params):
        if params is None:
            raise ValueError("adam8p's L1 term needs params: call update(grads, state, params).")
        return jax.tree.map(lambda g, p: g + (l1 * jnp.sign(p)).astype(g.dtype), updates, params)

    return optax.stateless(add)


def adam8p(
    learning_rate: Any = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    l1: Any = 0.0,
    l2: Any = 0.0,
    linear_decay: Any = 0.0,
    exponential_decay: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with L1/L2 regularization and linear + exponential learning-rate decay (TaskSet's Adam8p).

    .. math::
        \tilde g_t &= g_t + l_1\,\mathrm{sign}(\theta_t) + l_2\,\theta_t \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\tilde g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\tilde g_t^2 \\
        \eta_t &= \eta \cdot \max(0, 1 - d_\text{lin}\, t)\cdot e^{-d_\text{exp}\, t}
            \quad (d_\text{lin}, d_\text{exp} = \text{linear\_decay}, \text{exponential\_decay}) \\
        u_t &= -\eta_t\,\frac{m_t/(1-\beta_1^{t+1})}{\sqrt{v_t/(1-\beta_2^{t+1})} + \epsilon}

    Differences from the TaskSet code: TaskSet adds l2·‖θ‖² to the loss, so its gradient term is
    2·l2·θ (our l2 is twice theirs); it also uses sqrt(v̂ + 1e-10) and rescales t by
    10000 / training_steps. With l1 = l2 = linear_decay = exponential_decay = 0 this is `optax.adam`.

    References: Metz, Maheswaranathan, Sun, Freeman, Poole, Sohl-Dickstein 2020, "Using a thousand
    optimization tasks to learn hyperparameter search strategies", arXiv:2002.11887.
    """
    return optax.chain(
        _add_l1(l1),
        optax.add_decayed_weights(l2),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(adam8p_schedule(learning_rate, linear_decay, exponential_decay)),
    )


# --- adam_cosine ----------------------------------------------------------------------------------


def adam_cosine(
    learning_rate: Any = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    warmup: Any = 0.05,
    final: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with a linear warmup and a cosine decay over the run: η_t = η·s((t + 1)/T).

    s is the shape of the v2 learned optimizers (`lopt.optimizers.learned.schedule`): linear warmup
    over the first ``warmup`` of training, then cosine decay to ``final``·η at t = T − 1. T reaches
    it the way it reaches a horizon-aware learned optimizer: ``update(..., num_steps=T)``, which
    lopt's evaluation and unroller pass; without it the update raises.
    """
    from lopt.optimizers.learned import schedule

    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def init_fn(params):
        return (adam.init(params), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, num_steps=None, **extra):
        del extra
        if num_steps is None:
            raise ValueError(
                "adam_cosine schedules its learning rate over the run: pass update(..., num_steps=T) "
                "(lopt's evaluation does), or use adam with an optax schedule."
            )
        adam_state, count = state
        direction, adam_state = adam.update(updates, adam_state, params)
        lr = learning_rate * schedule.shape(schedule.fraction(count, num_steps), warmup, final)
        out = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), direction)
        return out, (adam_state, optax.safe_int32_increment(count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def bind_num_steps(tx: optax.GradientTransformation, num_steps: int) -> optax.GradientTransformationExtraArgs:
    """``tx`` told that runs last ``num_steps`` steps: ``update`` gets ``num_steps=`` unless the caller
    passes its own. For your own training loop around a horizon-aware optimizer (`adam_cosine`, the
    v2 learned optimizers); lopt's evaluation and unroller pass T themselves."""
    tx = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, *, num_steps=None, **extra):
        return tx.update(
            updates, state, params, num_steps=default if num_steps is None else num_steps, **extra
        )

    default = num_steps
    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


# --- NAdamW with warmup, a constant phase and cosine decay (the ordered NAdamW list, lopt.tuning) ---

NADAMW_KEYS = (
    "learning_rate",
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "l2",
    "warmup_fraction",
    "constant_fraction",
    "min_lr_mult",
)


def nadamw_schedule(h: dict) -> Callable[[jax.Array], jax.Array]:
    r"""η_t = η · min(1, (t+1)/(w T)) · (m + (1−m) · ½(1 + cos(π · clip((t − cT)/(T − cT), 0, 1)))),
    with w = warmup_fraction, c = constant_fraction, m = min_lr_mult, T = num_steps."""
    T = jnp.asarray(h["num_steps"], jnp.float32)

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        warm = jnp.minimum(1.0, (t + 1.0) / jnp.maximum(h["warmup_fraction"] * T, 1.0))
        start = h["constant_fraction"] * T
        frac = jnp.clip((t - start) / jnp.maximum(T - start, 1.0), 0.0, 1.0)
        decay = h["min_lr_mult"] + (1.0 - h["min_lr_mult"]) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        return h["learning_rate"] * warm * decay

    return schedule


def nadamw_cosine(h: dict) -> optax.GradientTransformationExtraArgs:
    r"""NAdamW with linear warmup, a constant phase and cosine decay (opt_list's NadamWCosineDecay).

    .. math::
        \tilde g = g + l_2 θ; \quad m, v \text{ as in Adam on } \tilde g; \quad
        u_t = −η_t \left(\frac{β_1 \hat m_t + (1−β_1) \tilde g_t/(1−β_1^{t+1})}{\sqrt{\hat v_t} + ε}
              + wd · θ_t\right)

    with η_t from `nadamw_schedule`. ``h`` holds `NADAMW_KEYS` and ``num_steps``; values may be traced.

    References: Metz, Maheswaranathan, Sun, Freeman, Poole, Sohl-Dickstein 2020, "Using a thousand
    optimization tasks to learn hyperparameter search strategies", arXiv:2002.11887 (opt_list).
    """
    return optax.with_extra_args_support(
        optax.chain(
            optax.add_decayed_weights(h["l2"]),
            optax.scale_by_adam(b1=h["b1"], b2=h["b2"], eps=h["eps"], nesterov=True),
            optax.add_decayed_weights(h["weight_decay"]),
            optax.scale_by_learning_rate(nadamw_schedule(h)),
        )
    )
