r"""`mlp`: a per-parameter MLP learned optimizer (small_fc_lopt-style, Metz et al. 2020's lower half).

For every parameter, the normalized features x̂ of `features` (gradient, parameter, momenta,
rsqrt of second moments and their products m·rsqrt(v)) and a per-tensor step-count embedding
e(t) = tanh(t/τ) go through a small ReLU MLP with two outputs, plus a linear skip to the direction:

.. math::
    (d', s) &= \mathrm{MLP}_\theta([\hat x, e(t)]), \qquad d = d' + w_\text{skip}\cdot\hat x \\
    u &= -\,d \cdot \exp(s\, c_\text{exp})\cdot c_\text{step}

with small c_step = c_exp = 1e-3, so every step is about c_step per parameter. At ``init`` the
skip picks the Adam-like feature m^{0.9}·rsqrt(v^{0.999}) and the output layer is small, so an
untrained optimizer is close to "normalized Adam with step 1e-3" and descends; meta-training can
move away from that. (The skip is our addition to the reference, which starts from a random MLP.)

With ``log_step_mult`` c_lr > 0, theta also holds a scalar λ (0 at init) and every step is
multiplied by exp(c_lr·λ). Without it the only way to change the overall step size is the
magnitude output, damped by c_exp = 1e-3, or the direction's scale, and an outer optimizer that
moves each weight by ~its learning rate per step needs ~10⁵ steps to make the step 100x larger;
with c_lr = 10 and outer lr 1e-3, λ moves the log step by ~0.01 per outer step. (Our addition.)

Invariances (tested in tests/test_learned.py): the update is unchanged, up to ε, when one tensor's
gradient history is multiplied by c > 0 (each feature is normalized by its second moment over the
tensor) and when the parameter tensor is multiplied by c > 0 (so is θ's feature); it is
equivariant to permuting the entries of a tensor and to reordering the tensors of the tree.

State: ``len(mom_decays) + len(rms_decays)`` float32 per parameter (default 3 + 1 = 4; Adam: 2).

References: Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein 2020, arXiv:2009.11243;
Metz et al. 2022, "Practical tradeoffs between memory, compute, and performance in learned
optimizers", arXiv:2203.11860 (small_fc_lopt).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.optimizers.learned import features as F
from lopt.optimizers.learned.base import LearnedOptimizer, Theta, as_f32


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Static architecture of `MLPOptimizer`."""

    mom_decays: tuple[float, ...] = (0.9, 0.99, 0.999)  # momentum timescales; each costs 1 float/param
    rms_decays: tuple[float, ...] = (0.999,)  # second-moment timescales; each costs 1 float/param
    hidden: tuple[int, ...] = (4, 4)  # per-parameter hidden widths; cost ~ 2·(F·h0 + h0·h1 + ...)
    step_mult: float = 1e-3  # c_step: the typical step per parameter of an untrained optimizer
    exp_mult: float = 1e-3  # c_exp: magnitude output scale inside exp; small keeps steps sane
    out_scale: float = 0.01  # init std of the output layer relative to the skip's unit weight
    log_step_mult: float = 0.0  # c_lr > 0 adds a learned global log step λ: steps × exp(c_lr·λ); 0: none

    @property
    def spec(self) -> F.FeatureSpec:
        return F.FeatureSpec(self.mom_decays, self.rms_decays)


class MLPState(NamedTuple):
    """State of the `mlp` optimizer."""

    count: jax.Array  # int32 scalar: steps taken
    moms: tuple  # one params-like tree of float32 momenta per momentum decay
    rmss: tuple  # one params-like tree of float32 second moments per rms decay


def _zeros_like_f32(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)


def _leaves_by_tensor(tree_tuple: tuple) -> list[tuple]:
    """[(tree_0 leaf k, tree_1 leaf k, ...) for each tensor k]."""
    return list(zip(*[jax.tree.leaves(t) for t in tree_tuple])) if tree_tuple else []


def rebuild(template: Any, leaves: list) -> Any:
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def init_accumulators(spec: F.FeatureSpec, params: Any) -> tuple[tuple, tuple]:
    """Zero momenta; second moments start at ε_v (the state holds v + ε_v, see `features`)."""
    eps = jax.tree.map(lambda p: jnp.full(jnp.shape(p), F.EPS_V, jnp.float32), params)
    return (
        tuple(_zeros_like_f32(params) for _ in spec.mom_decays),
        tuple(jax.tree.map(jnp.copy, eps) for _ in spec.rms_decays),
    )


def tensor_update(
    mlp: dict,
    skip: jax.Array,
    feats: list[jax.Array],
    scale: jax.Array,
    tensor_inputs: jax.Array,
    step_mult: float,
    exp_mult: float,
    dtype: Any,
    extra_bias: jax.Array | None = None,
    log_step: jax.Array | None = None,
) -> jax.Array:
    """One tensor's update from its un-normalized features and their scales ŝ (`features.scales`).

    Shared by `mlp` and `hierarchical`.
    ``tensor_inputs`` (T,) are features constant over the tensor: they feed the first layer through
    rows ``F:`` of its weights, i.e. they only change its bias, as does ``extra_bias`` (H0,).
    ``log_step`` (scalar) is added inside the exp: it scales the whole tensor's step by e^log_step.
    """
    n = len(feats)
    w0, b0 = mlp["l0"]["w"], mlp["l0"]["b"]  # (F + T, H0), (H0,)
    first_w = w0[:n] * scale[:, None]  # (F, H0)
    first_b = b0 + tensor_inputs @ w0[n:]  # (H0,)
    if extra_bias is not None:
        first_b = first_b + extra_bias
    direction, magnitude = F.mlp_elementwise(feats, first_w, first_b, mlp, skip * scale)
    log_mag = magnitude * exp_mult if log_step is None else magnitude * exp_mult + log_step
    step = direction * jnp.exp(log_mag) * step_mult
    return (-step).astype(dtype)


def global_log_step(log_step_mult: float, theta: Theta) -> jax.Array | None:
    """c_lr·λ, the learned global log step, or None for an architecture without one."""
    return log_step_mult * theta["log_step"] if log_step_mult > 0 else None


def skip_init(spec: F.FeatureSpec) -> jax.Array:
    """(F,) one-hot at the Adam-like feature: the untrained direction."""
    return jax.nn.one_hot(spec.nominal_index(), spec.count, dtype=jnp.float32)


class MLPOptimizer(LearnedOptimizer):
    """Per-parameter MLP learned optimizer; see the module docstring for the update rule."""

    name = "mlp"
    version = 1
    config_class = MLPConfig

    def num_inputs(self) -> int:
        """Inputs of the MLP: per-parameter features plus the step embedding."""
        return self.config.spec.count + len(F.STEP_TIMESCALES)

    def init(self, key: jax.Array) -> Theta:
        theta = {
            "mlp": F.mlp_init(key, self.num_inputs(), self.config.hidden, self.config.out_scale),
            "skip": skip_init(self.config.spec),
        }
        if self.config.log_step_mult > 0:
            theta["log_step"] = jnp.zeros((), jnp.float32)
        return theta

    def state_floats_per_param(self) -> int:
        return self.config.spec.state_floats

    def transform(self, theta: Theta, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        del num_steps  # not horizon-aware: the same rule for any run length
        cfg = self.config
        spec = cfg.spec

        def init_fn(params: Any) -> MLPState:
            moms, rmss = init_accumulators(spec, params)
            return MLPState(count=jnp.zeros([], jnp.int32), moms=moms, rmss=rmss)

        def update_fn(grads: Any, state: MLPState, params: Any = None, **extra: Any):
            del extra  # loss, valid_loss, ...: this optimizer does not use them
            if params is None:
                raise ValueError("the mlp learned optimizer needs params: call update(grads, state, params).")
            emb = F.step_embedding(state.count)  # (11,)
            log_step = global_log_step(cfg.log_step_mult, theta)
            k = len(spec.mom_decays)
            per_tensor = zip(
                jax.tree.leaves(grads), jax.tree.leaves(params), _leaves_by_tensor(state.moms + state.rmss)
            )
            out = []
            for g, p, acc in per_tensor:
                g32, p32 = as_f32(g), as_f32(p)
                moms, rmss = F.update_accumulators(spec, g32, acc[:k], acc[k:])
                feats = F.param_features(g32, p32, moms, rmss)
                scale = F.scales(F.second_moments(g32, p32, moms, rmss))
                u = tensor_update(
                    theta["mlp"],
                    theta["skip"],
                    feats,
                    scale,
                    emb,
                    cfg.step_mult,
                    cfg.exp_mult,
                    p.dtype,
                    log_step=log_step,
                )
                out.append((u, moms, rmss))
            updates = rebuild(grads, [u for u, _, _ in out])
            moms = tuple(rebuild(state.moms[i], [o[1][i] for o in out]) for i in range(k))
            rmss = tuple(rebuild(state.rmss[j], [o[2][j] for o in out]) for j in range(len(spec.rms_decays)))
            return updates, MLPState(optax.safe_int32_increment(state.count), moms, rmss)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
