r"""`hierarchical`: Metz et al. 2020's optimizer -- a per-tensor LSTM feeding a per-parameter MLP.

Each step, per tensor k (all in float32):

1. Dynamic gradient clipping: g ← clip(g, ±10·ĉ), ĉ a bias-corrected running average (decay
   0.99) of √(mean over tensors of mean g²) of past clipped gradients.
2. Accumulators and normalized per-parameter features x̂, exactly as in `mlp` (`features`).
3. The LSTM's input z_k: clipped log-magnitudes and signs of the means, and clipped log
   variances, of the momenta, second moments and parameters; clipped log-norms of g and θ;
   rank (±1 for scalar) and log-shape (4 dims); the training- and validation-loss features; and
   the message μ. (h_k, c_k) ← LSTM(z_k, h_k, c_k).
4. Message: μ ← mean_k (W_μ h_k + b_μ), read by every tensor's LSTM at the next step
   (DeepSets-style communication between tensors).
5. The per-parameter MLP of `mlp`, whose per-tensor inputs are the step embedding, clipped
   log‖θ_k‖, log n_k, log(#tensors) and the LSTM's output W_h h_k + b_h, which all enter the
   first layer's bias: u = −d·exp(s·c_exp)·c_step.
6. With ``log_step_mult`` c_lr > 0 (our addition; see `mlp`), the step of tensor k is also
   multiplied by exp(c_lr·(λ + w·h_k + b)): a learned global log step λ plus a per-tensor one
   read off the LSTM, which sees the loss features and can back off (both 0 at init).

Loss features. ``update(..., loss=, valid_loss=)``: the training loss updates a running mean and
variance (decay 0.9, bias-corrected) and the feature is its z-score clipped to ±5; a validation
loss updates its own running mean (decay 0.95) and the feature is that mean's z-score against
the training-loss statistics (the generalization gap in units of training-loss noise). Pass
``valid_loss`` whenever the loop has a fresh one; without it (None, or a non-finite value such as
``jnp.where(fresh, v, jnp.nan)`` inside `lax.scan`) each feature holds its last value, 0 at the start.

Differences from the reference (learned_optimization's rnn_mlp_lopt): no per-parameter MLP →
LSTM message (it would add 16 outputs per parameter); the MLP lacks log|θ|; smaller widths
(LSTM 32, MLP (4, 4)) and fewer timescales by default, for speed; a linear skip initialized to the
Adam-like feature (see `mlp`); features normalized with a tiny ε so small gradients are normalized
too; the validation loss arrives as a keyword of ``update`` rather than a separate call.

Invariances: none to gradient scale, by design (the LSTM sees log-norms, the clipping is
absolute); the update is equivariant to reordering the tensors of the tree and to permuting the
entries within a tensor.

State per parameter: ``len(mom_decays) + len(rms_decays)`` float32 (default 4 + 2 = 6; the
reference: 10); per tensor: the LSTM's (h, c); global: the message, clip and loss statistics.

References: Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein 2020, "Tasks, stability,
architecture, and compute: Training more effective learned optimizers, and using them to train
themselves", arXiv:2009.11243.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.optimizers.learned import features as F
from lopt.optimizers.learned.base import LearnedOptimizer, Theta, as_f32
from lopt.optimizers.learned.mlp import global_log_step, init_accumulators, rebuild, skip_init, tensor_update
from lopt.optimizers.learned.tensor_lstm import (
    CLIP_DECAY,
    CLIP_MULT,
    TRAIN_DECAY,
    VALID_DECAY,
    clip_threshold,
    clipped_mean_square,
    loss_features,
    lstm_cell,
    lstm_init,
    lstm_state,
    lstm_step,
    next_state,
    per_tensor_stats,
    shape_features,
)

__all__ = [  # besides this module's own names, the LSTM's pieces that were defined here before
    "CLIP_DECAY",
    "CLIP_MULT",
    "LSTM_STAT_NAMES",
    "MLP_TENSOR_NAMES",
    "TRAIN_DECAY",
    "VALID_DECAY",
    "HierarchicalConfig",
    "HierarchicalOptimizer",
    "HierarchicalState",
    "loss_features",
    "lstm_cell",
    "shape_features",
    "stat_triple",
]

LSTM_STAT_NAMES = (
    "mean_m_mag",
    "mean_m_sign",
    "var_m",
    "mean_v_mag",
    "mean_v_sign",
    "var_v",
    "mean_p_mag",
    "mean_p_sign",
    "var_p",
    "norm_g",
    "norm_p",
    "is_scalar",
    "shape0",
    "shape1",
    "shape2",
    "shape3",
    "train_loss",
    "valid_loss",
)
MLP_TENSOR_NAMES = tuple(f"step_tanh{t:g}" for t in F.STEP_TIMESCALES) + ("norm_p", "log_n", "log_tensors")


@dataclasses.dataclass(frozen=True)
class HierarchicalConfig:
    """Static architecture of `HierarchicalOptimizer`."""

    mom_decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)  # momentum timescales; 1 float/param each
    rms_decays: tuple[float, ...] = (0.99, 0.999)  # second-moment timescales; 1 float/param each
    hidden: tuple[int, ...] = (4, 4)  # per-parameter MLP widths (the reference: (32, 32))
    lstm_hidden: int = 32  # per-tensor LSTM width (the reference: 64)
    message_size: int = 16  # size of the message averaged over tensors (the reference: 18)
    step_mult: float = 1e-3  # c_step: the typical step per parameter of an untrained optimizer
    exp_mult: float = 1e-3  # c_exp: magnitude output scale inside exp
    out_scale: float = 0.01  # init std of the MLP's output layer relative to the skip's unit weight
    log_step_mult: float = 0.0  # c_lr > 0: learned log step per tensor, c_lr·(λ + w·h_k + b); 0: none

    @property
    def spec(self) -> F.FeatureSpec:
        return F.FeatureSpec(self.mom_decays, self.rms_decays)


class HierarchicalState(NamedTuple):
    """State of the `hierarchical` optimizer."""

    count: jax.Array  # int32 scalar: steps taken
    moms: tuple  # params-like float32 trees, one per momentum decay
    rmss: tuple  # params-like float32 trees, one per rms decay
    lstm_h: jax.Array  # (tensors, lstm_hidden) LSTM output
    lstm_c: jax.Array  # (tensors, lstm_hidden) LSTM cell
    message: jax.Array  # (message_size,) mean over tensors of the last LSTM projection
    clip_ema: jax.Array  # scalar: running average of gradient RMS (un-bias-corrected)
    train_stats: jax.Array  # (3,): running mean, variance, count of the training loss
    valid_stats: jax.Array  # (2,): running mean, count of the validation loss
    loss_feats: jax.Array  # (2,): the last training- and validation-loss features


def stat_triple(mean: jax.Array, mean_sq: jax.Array) -> list[jax.Array]:
    """Clipped log|mean|, sign(mean), clipped log var, from the mean and the mean square."""
    var = jnp.maximum(mean_sq - mean * mean, 0.0)
    return [F.clip_log_abs(mean), jnp.sign(mean), F.clip_log_abs(var)]


class HierarchicalOptimizer(LearnedOptimizer):
    """Per-tensor LSTM + per-parameter MLP (Metz et al. 2020); see the module docstring."""

    name = "hierarchical"
    version = 1
    config_class = HierarchicalConfig

    def lstm_inputs(self) -> int:
        return len(LSTM_STAT_NAMES) + self.config.message_size

    def mlp_inputs(self) -> int:
        return self.config.spec.count + len(MLP_TENSOR_NAMES)

    def state_floats_per_param(self) -> int:
        return self.config.spec.state_floats

    def init(self, key: jax.Array) -> Theta:
        cfg = self.config
        k_lstm_x, k_lstm_h, k_mlp, k_to_mlp, k_msg, k_msg0 = jax.random.split(key, 6)
        lstm_keys = (k_lstm_x, k_lstm_h, k_to_mlp, k_msg, k_msg0)
        return {
            **lstm_init(lstm_keys, self.lstm_inputs(), cfg.lstm_hidden, cfg.hidden[0], cfg.message_size),
            "mlp": F.mlp_init(k_mlp, self.mlp_inputs(), cfg.hidden, cfg.out_scale),
            "skip": skip_init(cfg.spec),
            **self._log_step_init(),
        }

    def _log_step_init(self) -> Theta:
        if self.config.log_step_mult <= 0:
            return {}
        hl = self.config.lstm_hidden
        zeros = {"w": jnp.zeros((hl, 1), jnp.float32), "b": jnp.zeros((1,), jnp.float32)}
        return {"log_step": jnp.zeros((), jnp.float32), "to_step": zeros}

    def transform(self, theta: Theta, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        del num_steps  # not horizon-aware: the same rule for any run length
        cfg = self.config

        def init_fn(params: Any) -> HierarchicalState:
            moms, rmss = init_accumulators(cfg.spec, params)
            num_tensors = len(jax.tree.leaves(params))
            return HierarchicalState(
                count=jnp.zeros([], jnp.int32),
                moms=moms,
                rmss=rmss,
                **lstm_state(theta, num_tensors, cfg.lstm_hidden),
            )

        def update_fn(
            grads: Any, state: HierarchicalState, params: Any = None, *, loss=None, valid_loss=None, **extra
        ):
            del extra
            if params is None:
                raise ValueError(
                    "the hierarchical learned optimizer needs params: call update(grads, state, params)."
                )
            return hierarchical_update(cfg, theta, grads, state, params, loss, valid_loss)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _TensorStats(NamedTuple):
    """What step 2 computes for one tensor and the MLP step (5) reads."""

    feats: list  # the normalized per-parameter features
    scale: jax.Array  # (F,) their per-tensor scales
    moms: tuple  # the new momenta
    rmss: tuple  # the new second moments
    norm_p: jax.Array  # clipped log‖θ_k‖
    log_n: float  # log of the tensor's size


def hierarchical_update(
    cfg: HierarchicalConfig, theta: Theta, grads: Any, state: HierarchicalState, params: Any, loss, valid_loss
) -> tuple[Any, HierarchicalState]:
    """One step of the optimizer (steps 1-6 of the module docstring): (updates, new state)."""
    train_stats, valid_stats, loss_feats = loss_features(state, loss, valid_loss)
    g_leaves, p_leaves = jax.tree.leaves(grads), jax.tree.leaves(params)
    clip = clip_threshold(state.clip_ema, state.count)  # 1. dynamic clipping against the gradient RMS
    tensor_stats = functools.partial(_tensor_stats, cfg)
    per_tensor, lstm_x, mean_sq = per_tensor_stats(tensor_stats, g_leaves, p_leaves, state, clip)
    # 3. the per-tensor LSTM, batched over tensors; 4. the message for the next step; 5. the MLP's bias
    h, c, message, to_mlp = lstm_step(theta, lstm_x, [loss_feats], state.lstm_h, state.lstm_c, state.message)
    log_step = global_log_step(cfg.log_step_mult, theta)
    if log_step is not None:  # 6. per tensor: c_lr·(λ + w·h_k + b)
        log_step = log_step + cfg.log_step_mult * (
            (h @ theta["to_step"]["w"])[:, 0] + theta["to_step"]["b"][0]
        )
    emb = F.step_embedding(state.count)
    log_tensors = jnp.full((1,), math.log(max(len(g_leaves), 1)), jnp.float32)
    updates = []
    for i, (stats, p) in enumerate(zip(per_tensor, p_leaves)):
        tensor_inputs = jnp.concatenate(
            [emb, jnp.stack([stats.norm_p, jnp.float32(stats.log_n)]), log_tensors]
        )
        updates.append(
            tensor_update(
                theta["mlp"],
                theta["skip"],
                stats.feats,
                stats.scale,
                tensor_inputs,
                cfg.step_mult,
                cfg.exp_mult,
                p.dtype,
                extra_bias=to_mlp[i],
                log_step=None if log_step is None else log_step[i],
            )
        )
    loss_stats = (train_stats, valid_stats, loss_feats)
    return rebuild(grads, updates), next_state(state, per_tensor, (h, c, message), mean_sq, loss_stats)


def _tensor_stats(
    cfg: HierarchicalConfig, g: jax.Array, p: jax.Array, acc: tuple, clip: jax.Array
) -> tuple[_TensorStats, jax.Array, jax.Array]:
    """One tensor's accumulators and features (2.), its LSTM input z_k (3.) and mean clip(g)²."""
    spec, k = cfg.spec, len(cfg.mom_decays)
    g32, p32 = jnp.clip(as_f32(g), -clip, clip), as_f32(p)
    moms, rmss = F.update_accumulators(spec, g32, acc[:k], acc[k:])
    feats = F.param_features(g32, p32, moms, rmss)
    n = max(g.size, 1)
    mean_g2 = clipped_mean_square(g, clip)
    second = F.second_moments(g32, p32, moms, rmss, mean_g2)  # (F,) mean x_f²: g², θ², m_i², ...
    mean_m = sum(jnp.sum(m) for m in moms) / (n * k)
    mean_m2 = jnp.sum(second[2 : 2 + k]) / k
    mean_v = sum(jnp.sum(v) for v in rmss) / (n * len(rmss))
    mean_v2 = sum(F.dot_self(v) for v in rmss) / (n * len(rmss))
    norm_p = F.clip_log_abs(jnp.sqrt(second[1] * n))
    z = [
        *stat_triple(mean_m, mean_m2),
        *stat_triple(mean_v, mean_v2),
        *stat_triple(jnp.sum(p32) / n, second[1]),
        F.clip_log_abs(jnp.sqrt(mean_g2 * n)),
        norm_p,
        *jnp.asarray(shape_features(jnp.shape(g))),
    ]
    return _TensorStats(feats, F.scales(second), moms, rmss, norm_p, math.log(n)), jnp.stack(z), mean_g2
