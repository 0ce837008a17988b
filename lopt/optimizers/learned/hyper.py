r"""Learned-hyperparameter baselines: hand-designed update rules whose hyperparameters are theta.

Sanity checks for meta-training (an estimator that cannot tune one learning rate will not train an
MLP optimizer) and the simplest learned optimizers to beat.

Per-tensor learning rates use a fixed number of slots, so ``init(key)`` needs no params template:
the k-th leaf of the flattened params tree (``jax.tree.leaves`` order) uses slot ``k % num_slots``,
with η_k = exp(log_lr + offset[k % num_slots]). Trees with at most ``num_slots`` tensors (default
32) get one learning rate each; larger trees share slots cyclically. Offsets start at 0.

References: Metz et al. 2020, arXiv:2009.11243 (learned-hparam baselines); Kingma & Ba 2015 (Adam);
Sutskever et al. 2013 (momentum).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.optimizers.learned.base import LearnedOptimizer, Theta, as_f32, tensor_slot


def _per_tensor_lr(theta: Theta, num_slots: int, index: int) -> jax.Array:
    return jnp.exp(theta["log_lr"] + theta["log_lr_offsets"][tensor_slot(index, num_slots)])


def _scaled(updates: Any, theta: Theta, num_slots: int, sign: float = -1.0) -> Any:
    """u_k ← sign · η_k · u_k for the k-th leaf, in the leaf's dtype."""
    leaves, treedef = jax.tree.flatten(updates)
    out = [
        (sign * _per_tensor_lr(theta, num_slots, k) * as_f32(u)).astype(u.dtype) for k, u in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, out)


@dataclasses.dataclass(frozen=True)
class AdamLRConfig:
    """Static part of `AdamLR`."""

    b1: float = 0.9  # Adam's first-moment decay
    b2: float = 0.999  # Adam's second-moment decay
    eps: float = 1e-8  # Adam's ε
    init_lr: float = 1e-3  # initial global learning rate exp(log_lr)
    num_slots: int = 32  # per-tensor learning-rate offsets (leaf k uses slot k % num_slots)


class AdamLR(LearnedOptimizer):
    r"""Adam with learned per-tensor learning rates: u_k = −exp(log_lr + δ_{k mod S}) · m̂/(√v̂ + ε).

    State: 2 floats per parameter (Adam's m and v, in the params' dtype as optax keeps them).
    """

    name = "adam_lr"
    version = 1
    config_class = AdamLRConfig

    def init(self, key: jax.Array) -> Theta:
        del key  # deterministic
        return {
            "log_lr": jnp.asarray(math.log(self.config.init_lr), jnp.float32),
            "log_lr_offsets": jnp.zeros((self.config.num_slots,), jnp.float32),
        }

    def state_floats_per_param(self) -> int:
        return 2

    def transform(self, theta: Theta, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        del num_steps  # not horizon-aware: the same rule for any run length
        cfg = self.config
        adam = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)

        def update_fn(grads, state, params=None, **extra):
            del extra
            updates, state = adam.update(grads, state, params)
            return _scaled(updates, theta, cfg.num_slots), state

        return optax.GradientTransformationExtraArgs(adam.init, update_fn)


@dataclasses.dataclass(frozen=True)
class SGDMConfig:
    """Static part of `SGDM`."""

    init_lr: float = 1e-3  # initial global learning rate exp(log_lr) (x 1/(1 - 0.9) with momentum)
    init_momentum: float = 0.9  # initial momentum sigmoid(momentum_logit)
    num_slots: int = 32  # per-tensor learning-rate offsets (leaf k uses slot k % num_slots)


class SGDMState(NamedTuple):
    """State of `SGDM`."""

    velocity: Any  # params-like float32 tree


class SGDM(LearnedOptimizer):
    r"""SGD with learned momentum and per-tensor learning rates.

    μ = sigmoid(momentum_logit); v ← μ v + g; u_k = −exp(log_lr + δ_{k mod S}) v_k.
    State: 1 float32 per parameter.
    """

    name = "sgdm"
    version = 1
    config_class = SGDMConfig

    def init(self, key: jax.Array) -> Theta:
        del key  # deterministic
        mu = self.config.init_momentum
        return {
            "log_lr": jnp.asarray(math.log(self.config.init_lr), jnp.float32),
            "log_lr_offsets": jnp.zeros((self.config.num_slots,), jnp.float32),
            "momentum_logit": jnp.asarray(math.log(mu / (1.0 - mu)), jnp.float32),
        }

    def state_floats_per_param(self) -> int:
        return 1

    def transform(self, theta: Theta, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        del num_steps  # not horizon-aware: the same rule for any run length
        cfg = self.config

        def init_fn(params):
            return SGDMState(jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params))

        def update_fn(grads, state, params=None, **extra):
            del params, extra
            mu = jax.nn.sigmoid(theta["momentum_logit"])
            velocity = jax.tree.map(lambda v, g: mu * v + as_f32(g), state.velocity, grads)
            out = jax.tree.map(lambda v, g: v.astype(g.dtype), velocity, grads)
            return _scaled(out, theta, cfg.num_slots), SGDMState(velocity)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
