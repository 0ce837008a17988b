r"""`hierarchical_v2`: a horizon-aware hierarchical optimizer whose update is a normalized,
gradient-odd direction times an explicit step size.

It knows how long it trains: ``transform(theta, num_steps=T)`` (or ``update(..., num_steps=T)``,
which the meta-training unroller passes per particle), and sees the fraction of training done
f = (t + 1)/T (`schedule`), never the absolute step, so a run 10x longer than meta-training stays
inside the features' trained range. Per step, per tensor k (float32):

1. Dynamic gradient clipping and the accumulators of `hierarchical`: momenta m_i, second moments
   v_j (stored as v, from 0).
2. Odd features x = [g, m_i, m_i·rsqrt(v_j + ε_j)], each normalized by its RMS over the tensor, with
   a *relative* ε_j = 1e-12·mean(v_j) (+1e-30): the feature keeps its meaning under any gradient
   scale, and entries whose gradient is always 0 (blank pixels) give 0, not 1e12. Even features
   e_j = sqrt(v_j / mean(v_j)), unit RMS by construction. Neither the parameter nor a bias enters.
3. The per-tensor LSTM of `hierarchical` on features that are even in the gradient (log |mean|
   and log variance of the momenta and second moments, parameter statistics, log-norms, shape),
   the training- and validation-loss features, the fraction features [f, cos πf, s(f)] and the
   message averaged over tensors.
4. The direction, odd in x by construction:
   d = MLP(x, e, c_k) − MLP(−x, e, c_k) + w_skip·x, with c_k the per-tensor inputs (fraction
   features, log size, log #tensors, the LSTM's projection); w_skip starts one-hot at the Adam-like
   m^{0.9}·rsqrt(v^{0.999}), the MLP's output layer small. Then d̂ = d / RMS_tensor(d).
5. The step: u_k = −η · s(f) · exp(ln(r)·tanh(w·h_k + b)) · d̂, with η = η₀·exp(c_lr·λ) the learned
   peak (η₀ = 3e-3 at init, c_lr = 10: λ = 0.35 gives 0.1), s(f) the fixed warmup/cosine shape of
   `schedule` (warmup 5%, final 0.1 of the peak) and a learned per-tensor factor in [1/r, r]
   (r = 10) read off the LSTM (1 at init).

Invariances (tests/test_hierarchical_v2.py): each tensor's update has RMS exactly
η·s(f)·exp(ln r·tanh(w·h_k + b)) (whenever its gradient is not all zero); flipping the sign of
the whole gradient history flips the update exactly (no drift from v, θ or a bias: the update at
a zero gradient history is 0); the normalized per-parameter features are unchanged when a
tensor's gradient history is rescaled by c > 0 (the update is not: the LSTM sees log-norms and
the clipping is absolute); the update is equivariant to permuting a tensor's entries.

State per parameter: ``len(mom_decays) + len(rms_decays)`` float32 (default 6).

References: Metz et al. 2020 (arXiv:2009.11243) for the hierarchy; the normalized update, the
fraction-of-training input and the decoupled schedule follow the small-compute learned
optimizers Celo (Moudgil et al. 2025) and µLO (Thérien et al. 2024).
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
from lopt.optimizers.learned import schedule
from lopt.optimizers.learned.base import LearnedOptimizer, Theta, as_f32
from lopt.optimizers.learned.mlp import rebuild
from lopt.optimizers.learned.tensor_lstm import (
    clip_threshold,
    clipped_mean_square,
    loss_features,
    lstm_init,
    lstm_state,
    lstm_step,
    next_state,
    per_tensor_stats,
    shape_features,
)

EPS_REL = 1e-12  # ε_j = EPS_REL·mean(v_j) + EPS_ABS in rsqrt(v_j + ε_j): relative, so scale-free
EPS_ABS = 1e-30
EPS_DIR = 1e-30  # in d / sqrt(mean d² + EPS_DIR): a zero direction stays 0
LSTM_STAT_NAMES = (
    "mean_m_mag",
    "var_m",
    "mean_v_mag",
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
    "frac",
    "cos_frac",
    "shape_frac",
    "train_loss",
    "valid_loss",
)
MLP_TENSOR_NAMES = ("frac", "cos_frac", "shape_frac", "log_n", "log_tensors")


@dataclasses.dataclass(frozen=True)
class HierarchicalV2Config:
    """Static architecture of `HierarchicalV2`."""

    mom_decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)  # momentum timescales; 1 float/param each
    rms_decays: tuple[float, ...] = (0.99, 0.999)  # second-moment timescales; 1 float/param each
    hidden: tuple[int, ...] = (4, 4)  # per-parameter MLP widths (run twice: the direction is antisymmetrized)
    lstm_hidden: int = 32  # per-tensor LSTM width
    message_size: int = 16  # size of the message averaged over tensors
    peak: float = 3e-3  # η₀: the untrained optimizer's peak per-tensor update RMS
    log_step_mult: float = 10.0  # c_lr: η = η₀·exp(c_lr·λ), λ learned (0 at init)
    tensor_range: float = 10.0  # r: the learned per-tensor factor lies in [1/r, r]
    warmup: float = 0.05  # ω: fraction of training with a linear warmup of the step
    final: float = 0.1  # ρ: the step at the end of training relative to the peak (cosine decay)
    out_scale: float = 0.01  # init std of the MLP's output layer relative to the skip's unit weight

    def odd_names(self) -> list[str]:
        return (
            ["g"]
            + [f"m{b}" for b in self.mom_decays]
            + [f"m{b}*rsqrt_v{c}" for b in self.mom_decays for c in self.rms_decays]
        )

    def even_names(self) -> list[str]:
        return [f"sqrt_v{c}/mean" for c in self.rms_decays]

    def nominal_index(self) -> int:
        """The odd feature closest to Adam's m·rsqrt(v) (β1 0.9, the slowest γ): the initial direction."""
        i = min(
            range(len(self.mom_decays)), key=lambda i: abs(math.log1p(-self.mom_decays[i]) - math.log1p(-0.9))
        )
        return self.odd_names().index(f"m{self.mom_decays[i]}*rsqrt_v{self.rms_decays[-1]}")


class HierarchicalV2State(NamedTuple):
    """State of the `hierarchical_v2` optimizer."""

    count: jax.Array  # int32 scalar: steps taken
    moms: tuple  # params-like float32 trees, one per momentum decay
    rmss: tuple  # params-like float32 trees (v, from 0), one per rms decay
    lstm_h: jax.Array  # (tensors, lstm_hidden)
    lstm_c: jax.Array  # (tensors, lstm_hidden)
    message: jax.Array  # (message_size,)
    clip_ema: jax.Array  # scalar: running average of the gradient RMS (un-bias-corrected)
    train_stats: jax.Array  # (3,): running mean, variance, count of the training loss
    valid_stats: jax.Array  # (2,): running mean, count of the validation loss
    loss_feats: jax.Array  # (2,): the last training- and validation-loss features


def tensor_features(cfg: HierarchicalV2Config, g, moms, rmss, mean_g2):
    """One tensor's odd features, their per-tensor scales ŝ (F_odd,), and the even features."""
    n = max(g.size, 1)
    mean_v = [jnp.sum(v) / n for v in rmss]
    rs = [jax.lax.rsqrt(v + (EPS_REL * mv + EPS_ABS)) for v, mv in zip(rmss, mean_v)]
    odd = [g, *moms, *[m * r for m in moms for r in rs]]
    second = [mean_g2, *[F.dot_self(m) / n for m in moms]]
    second += [
        jnp.sum(m * (m / (v + (EPS_REL * mv + EPS_ABS)))) / n for m in moms for v, mv in zip(rmss, mean_v)
    ]
    even = [jnp.sqrt(v * (1.0 / (mv + EPS_ABS))) for v, mv in zip(rmss, mean_v)]
    return odd, F.scales(jnp.stack(second)), even, mean_v


def direction(mlp: dict, skip: jax.Array, odd, scale, even, bias) -> jax.Array:
    """d = f(x) − f(−x) + w_skip·x̂ over one tensor, f the per-parameter MLP (see the module docstring)."""
    n_odd = len(odd)
    w0 = mlp["l0"]["w"]
    a = F.affine(odd, w0[:n_odd] * scale[:, None], jnp.zeros((w0.shape[1],), jnp.float32))  # odd part
    c = F.affine(even, w0[n_odd : n_odd + len(even)], bias)  # even part (bias holds the per-tensor inputs)
    sides = []
    for sign in (1.0, -1.0):
        h = [jax.nn.relu(ci + sign * ai) for ai, ci in zip(a, c)]
        i = 1
        while f"l{i}" in mlp:
            h = [jax.nn.relu(x) for x in F.affine(h, mlp[f"l{i}"]["w"], mlp[f"l{i}"]["b"])]
            i += 1
        sides.append(F.affine(h, mlp["out"]["w"], jnp.zeros((1,), jnp.float32))[0])
    return sides[0] - sides[1] + sum(x * (skip[f] * scale[f]) for f, x in enumerate(odd))


def normalized(d: jax.Array) -> jax.Array:
    """d / RMS(d) over the tensor (0 stays 0)."""
    return d * jax.lax.rsqrt(F.dot_self(d) / max(d.size, 1) + EPS_DIR)


class HierarchicalV2(LearnedOptimizer):
    """Horizon-aware hierarchical optimizer with a normalized odd direction; see the module docstring."""

    name = "hierarchical_v2"
    version = 1
    config_class = HierarchicalV2Config
    needs_num_steps = True

    def lstm_inputs(self) -> int:
        return len(LSTM_STAT_NAMES) + self.config.message_size

    def mlp_inputs(self) -> int:
        cfg = self.config
        return len(cfg.odd_names()) + len(cfg.even_names()) + len(MLP_TENSOR_NAMES)

    def state_floats_per_param(self) -> int:
        return len(self.config.mom_decays) + len(self.config.rms_decays)

    def init(self, key: jax.Array) -> Theta:
        cfg = self.config
        keys = jax.random.split(key, 6 + len(cfg.hidden))
        hl = cfg.lstm_hidden
        sizes = (self.mlp_inputs(), *cfg.hidden)
        mlp = {f"l{i}": F.dense_init(keys[6 + i], sizes[i], sizes[i + 1]) for i in range(len(cfg.hidden))}
        mlp["out"] = {"w": F.dense_init(keys[5], sizes[-1], 1, scale=cfg.out_scale)["w"]}
        zeros = {"w": jnp.zeros((hl, 1), jnp.float32), "b": jnp.zeros((1,), jnp.float32)}
        return {
            **lstm_init(keys[:5], self.lstm_inputs(), hl, cfg.hidden[0], cfg.message_size),
            "mlp": mlp,
            "skip": jax.nn.one_hot(cfg.nominal_index(), len(cfg.odd_names()), dtype=jnp.float32),
            "log_step": jnp.zeros((), jnp.float32),
            "to_step": zeros,
        }

    def step_size(self, theta: Theta, count: jax.Array, num_steps: jax.Array) -> jax.Array:
        """η·s(f) at step ``count`` of ``num_steps``: the update RMS of a tensor whose factor is 1."""
        cfg = self.config
        f = schedule.fraction(count, num_steps)
        return (
            cfg.peak
            * jnp.exp(cfg.log_step_mult * theta["log_step"])
            * schedule.shape(f, cfg.warmup, cfg.final)
        )

    def transform(self, theta: Theta, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        """The optimizer of ``theta`` for runs of ``num_steps`` steps (``update(..., num_steps=T)`` overrides)."""
        cfg = self.config
        default_steps = num_steps

        def init_fn(params: Any) -> HierarchicalV2State:
            def zeros():  # a fresh buffer per accumulator, so that a jitted step can donate the state
                return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)

            return HierarchicalV2State(
                count=jnp.zeros([], jnp.int32),
                moms=tuple(zeros() for _ in cfg.mom_decays),
                rmss=tuple(zeros() for _ in cfg.rms_decays),
                **lstm_state(theta, len(jax.tree.leaves(params)), cfg.lstm_hidden),
            )

        def update_fn(grads, state, params=None, *, loss=None, valid_loss=None, num_steps=None, **extra):
            del extra
            if params is None:
                raise ValueError("hierarchical_v2 needs params: call update(grads, state, params).")
            total = default_steps if num_steps is None else num_steps
            if total is None:
                raise ValueError(
                    "hierarchical_v2 needs the total number of training steps T: pass num_steps=T to "
                    "transform(theta, num_steps=T) / lopt.pretrained(name, num_steps=T), or to update(...)."
                )
            eta = self.step_size(theta, state.count, total)
            return hierarchical_v2_update(cfg, theta, grads, state, params, loss, valid_loss, total, eta)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _TensorStats(NamedTuple):
    """What one tensor's features (2.) leave for its direction (4.)."""

    odd: list  # the odd features x
    scale: jax.Array  # (F_odd,) their per-tensor scales
    even: list  # the even features e_j
    moms: tuple  # the new momenta
    rmss: tuple  # the new second moments
    log_n: float  # log of the tensor's size


def hierarchical_v2_update(
    cfg: HierarchicalV2Config,
    theta: Theta,
    grads: Any,
    state: HierarchicalV2State,
    params: Any,
    loss: Any,
    valid_loss: Any,
    total: Any,
    eta: jax.Array,
) -> tuple[Any, HierarchicalV2State]:
    """One step (1-5 of the module docstring) of a ``total``-step run at step size ``eta`` = η·s(f)."""
    train_stats, valid_stats, loss_feats = loss_features(state, loss, valid_loss)
    g_leaves, p_leaves = jax.tree.leaves(grads), jax.tree.leaves(params)
    frac = schedule.fraction_features(schedule.fraction(state.count, total), cfg.warmup, cfg.final)
    clip = clip_threshold(state.clip_ema, state.count)
    tensor_stats = functools.partial(_tensor_stats, cfg)
    per_tensor, lstm_x, mean_sq = per_tensor_stats(tensor_stats, g_leaves, p_leaves, state, clip)
    shared = [frac, loss_feats]
    h, c, message, to_mlp = lstm_step(theta, lstm_x, shared, state.lstm_h, state.lstm_c, state.message)
    factor = jnp.exp(
        math.log(cfg.tensor_range) * jnp.tanh((h @ theta["to_step"]["w"])[:, 0] + theta["to_step"]["b"][0])
    )
    w0 = theta["mlp"]["l0"]["w"]
    n_in = len(cfg.odd_names()) + len(cfg.even_names())
    log_tensors = math.log(max(len(g_leaves), 1))
    updates = []
    for i, (stats, p) in enumerate(zip(per_tensor, p_leaves)):
        tensor_in = jnp.concatenate([frac, jnp.asarray([stats.log_n, log_tensors], jnp.float32)])
        bias = theta["mlp"]["l0"]["b"] + tensor_in @ w0[n_in:] + to_mlp[i]
        d = direction(theta["mlp"], theta["skip"], stats.odd, stats.scale, stats.even, bias)
        updates.append((-(eta * factor[i]) * normalized(d)).astype(p.dtype))
    loss_stats = (train_stats, valid_stats, loss_feats)
    return rebuild(grads, updates), next_state(state, per_tensor, (h, c, message), mean_sq, loss_stats)


def _tensor_stats(
    cfg: HierarchicalV2Config, g: jax.Array, p: jax.Array, acc: tuple, clip: jax.Array
) -> tuple[_TensorStats, jax.Array, jax.Array]:
    """One tensor's accumulators and features (1-2.), its LSTM input z_k (3.) and mean clip(g)²."""
    k = len(cfg.mom_decays)
    g32, p32 = jnp.clip(as_f32(g), -clip, clip), as_f32(p)
    moms = tuple(m + (1.0 - b) * (g32 - m) for b, m in zip(cfg.mom_decays, acc[:k]))
    rmss = tuple(c * v + (1.0 - c) * g32 * g32 for c, v in zip(cfg.rms_decays, acc[k:]))
    n = max(g.size, 1)
    mean_g2 = clipped_mean_square(g, clip)
    odd, scale, even, mean_v = tensor_features(cfg, g32, moms, rmss, mean_g2)
    mean_m = sum(jnp.sum(m) for m in moms) / (n * k)
    mean_m2 = sum(F.dot_self(m) for m in moms) / (n * k)
    mv = sum(mean_v) / len(mean_v)
    mean_v2 = sum(F.dot_self(v) for v in rmss) / (n * len(rmss))
    p2 = F.dot_self(p32) / n
    mean_p = jnp.sum(p32) / n
    z = [
        F.clip_log_abs(mean_m),
        F.clip_log_abs(jnp.maximum(mean_m2 - mean_m * mean_m, 0.0)),
        F.clip_log_abs(mv),
        F.clip_log_abs(jnp.maximum(mean_v2 - mv * mv, 0.0)),
        F.clip_log_abs(mean_p),
        jnp.sign(mean_p),
        F.clip_log_abs(jnp.maximum(p2 - mean_p * mean_p, 0.0)),
        F.clip_log_abs(jnp.sqrt(mean_g2 * n)),
        F.clip_log_abs(jnp.sqrt(p2 * n)),
        *jnp.asarray(shape_features(jnp.shape(g))),
    ]
    return _TensorStats(odd, scale, even, moms, rmss, math.log(n)), jnp.stack(z), mean_g2
