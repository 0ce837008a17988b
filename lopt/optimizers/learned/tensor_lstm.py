r"""The per-tensor LSTM both hierarchical optimizers share (`hierarchical`, `hierarchical_v2`).

Per step: dynamic gradient clipping g ← clip(g, ±10·ĉ), ĉ a bias-corrected running average
(decay 0.99) of √(mean over tensors of mean g²); the loss features (`loss_features`); then, over
the tensors k at once, (h_k, c_k) ← LSTM(z_k, h_k, c_k) on each tensor's statistics z_k, the
features every tensor shares and the message μ, and μ ← mean_k (W_μ h_k + b_μ) for the next step.

    theta = {**lstm_init(keys, inputs, hidden, mlp_width, message_size), ...}
    state = State(count=..., moms=..., rmss=..., **lstm_state(theta, num_tensors, hidden))
    clip = clip_threshold(state.clip_ema, state.count)
    h, c, message, to_mlp = lstm_step(theta, rows, shared, state.lstm_h, state.lstm_c, state.message)

References: Metz, Maheswaranathan, Freeman, Poole, Sohl-Dickstein 2020, arXiv:2009.11243.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.optimizers.learned import features as F
from lopt.optimizers.learned.base import Theta, as_f32
from lopt.optimizers.learned.mlp import rebuild

CLIP_DECAY, CLIP_MULT = 0.99, 10.0
TRAIN_DECAY, VALID_DECAY = 0.9, 0.95


def lstm_init(
    keys: Sequence[jax.Array], inputs: int, hidden: int, mlp_width: int, message_size: int
) -> Theta:
    """The LSTM's weights and its two read-outs (to the MLP's first bias, to the message), and the
    first message; ``keys``: for the input weights, the recurrent weights, the two read-outs, μ₀."""
    k_x, k_h, k_to_mlp, k_message, k_message0 = keys
    return {
        "lstm": {
            "wx": F.dense_init(k_x, inputs, 4 * hidden)["w"],
            "wh": F.dense_init(k_h, hidden, 4 * hidden)["w"],
            "b": jnp.zeros((4 * hidden,), jnp.float32),
        },
        "to_mlp": F.dense_init(k_to_mlp, hidden, mlp_width),
        "to_message": F.dense_init(k_message, hidden, message_size),
        "message0": 0.1 * jax.random.normal(k_message0, (message_size,), jnp.float32),
    }


def lstm_state(theta: Theta, num_tensors: int, hidden: int) -> dict[str, jax.Array]:
    """The initial state fields besides the step count and the accumulators."""
    return {
        "lstm_h": jnp.zeros((num_tensors, hidden), jnp.float32),
        "lstm_c": jnp.zeros((num_tensors, hidden), jnp.float32),
        "message": jnp.asarray(theta["message0"], jnp.float32),
        "clip_ema": jnp.asarray(1.0 - CLIP_DECAY, jnp.float32),
        "train_stats": jnp.zeros((3,), jnp.float32),
        "valid_stats": jnp.zeros((2,), jnp.float32),
        "loss_feats": jnp.zeros((2,), jnp.float32),
    }


def clip_threshold(clip_ema: jax.Array, count: jax.Array) -> jax.Array:
    """10·ĉ: the bias-corrected running gradient RMS times ``CLIP_MULT``."""
    t_clip = (count + 1).astype(jnp.float32)
    return clip_ema / (1.0 - jnp.power(jnp.float32(CLIP_DECAY), t_clip)) * CLIP_MULT


def clipped_mean_square(g: jax.Array, clip: jax.Array) -> jax.Array:
    """mean clip(g)², as Σ min(g², clip²) / n: written apart from the clipped g so that it is not a
    shared temporary."""
    return jnp.sum(jnp.minimum(as_f32(g) * as_f32(g), clip * clip)) / max(g.size, 1)


def next_clip_ema(clip_ema: jax.Array, mean_sq: list[jax.Array]) -> jax.Array:
    """The running average of √(mean over tensors of mean clip(g)²)."""
    avg_sq = sum(mean_sq) / max(len(mean_sq), 1)
    return clip_ema * CLIP_DECAY + jnp.sqrt(1e-8 + avg_sq) * (1.0 - CLIP_DECAY)


def lstm_step(
    theta: Theta,
    rows: list[jax.Array],
    shared: Sequence[jax.Array],
    h: jax.Array,
    c: jax.Array,
    message: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(h, c, next message, the MLP's per-tensor bias) after one LSTM step over the tensors:
    ``rows`` holds each tensor's statistics, ``shared`` the vectors every tensor sees (the message last)."""
    num_tensors = len(rows)
    x = jnp.concatenate(
        [
            jnp.stack(rows),  # (T, S)
            *[jnp.broadcast_to(v, (num_tensors, v.shape[0])) for v in (*shared, message)],
        ],
        axis=1,
    )  # (T, lstm_inputs)
    h, c = lstm_cell(theta["lstm"], x, h, c)  # (T, Hl) each
    message = jnp.mean(h @ theta["to_message"]["w"] + theta["to_message"]["b"][None, :], axis=0)  # (M,)
    to_mlp = h @ theta["to_mlp"]["w"] + theta["to_mlp"]["b"][None, :]  # (T, H0)
    return h, c, message, to_mlp


def per_tensor_stats(
    tensor_stats: Callable, g_leaves: list, p_leaves: list, state: Any, clip: jax.Array
) -> tuple[list, list[jax.Array], list[jax.Array]]:
    """``tensor_stats(g, p, accumulators, clip) -> (stats, z, mean clip(g)²)`` over the tensors:
    (the stats, the LSTM's input rows, the mean squares)."""
    acc_leaves = list(zip(*[jax.tree.leaves(t) for t in state.moms + state.rmss]))
    per_tensor, rows, mean_sq = [], [], []
    for g, p, acc in zip(g_leaves, p_leaves, acc_leaves):
        stats, z, mean_g2 = tensor_stats(g, p, acc, clip)
        per_tensor.append(stats)
        rows.append(z)
        mean_sq.append(mean_g2)
    return per_tensor, rows, mean_sq


def next_state(state: Any, per_tensor: list, lstm: tuple, mean_sq: list[jax.Array], loss_stats: tuple) -> Any:
    """The state after a step, of ``state``'s type: the count, each tensor's new accumulators
    (``stats.moms``, ``stats.rmss``), the LSTM's (h, c, message), the clip and loss statistics."""
    h, c, message = lstm
    train_stats, valid_stats, loss_feats = loss_stats
    return type(state)(
        count=optax.safe_int32_increment(state.count),
        moms=_rebuild_accumulators(state.moms, [s.moms for s in per_tensor]),
        rmss=_rebuild_accumulators(state.rmss, [s.rmss for s in per_tensor]),
        lstm_h=h,
        lstm_c=c,
        message=message,
        clip_ema=next_clip_ema(state.clip_ema, mean_sq),
        train_stats=train_stats,
        valid_stats=valid_stats,
        loss_feats=loss_feats,
    )


def _rebuild_accumulators(old: tuple, per_tensor: list[tuple]) -> tuple:
    """Accumulator trees (one per decay) from each tensor's tuple of new accumulators."""
    return tuple(rebuild(old[j], [a[j] for a in per_tensor]) for j in range(len(old)))


def shape_features(shape: tuple[int, ...]) -> np.ndarray:
    """(5,): rank feature (+1 scalar, −1 otherwise) and log of the last 4 dims (leading ones merged), −1."""
    dims = [1] * 4 + list(shape)
    dims = [math.prod(dims[: len(dims) - 3])] + dims[len(dims) - 3 :]
    return np.asarray([1.0 if len(shape) == 0 else -1.0] + [math.log(d) - 1.0 for d in dims], np.float32)


def lstm_cell(theta: dict, x: jax.Array, h: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A standard LSTM cell over a batch of tensors: x (T, I), h and c (T, H)."""
    gates = x @ theta["wx"] + h @ theta["wh"] + theta["b"][None, :]  # (T, 4H)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def loss_features(state: Any, loss: Any, valid_loss: Any) -> tuple[jax.Array, ...]:
    """(train_stats, valid_stats, loss_feats) after this step's optional losses (see `hierarchical`)."""
    loss, has_loss = F.fresh(loss)
    valid, has_valid = F.fresh(valid_loss)
    t_mean, t_var, t_count = state.train_stats[0], state.train_stats[1], state.train_stats[2]
    n_mean, n_var = F.ema_update(t_mean, t_var, loss, TRAIN_DECAY)
    t_mean, t_var = jnp.where(has_loss, n_mean, t_mean), jnp.where(has_loss, n_var, t_var)
    t_count = t_count + has_loss.astype(jnp.float32)
    cor_mean, cor_var = F.debias(t_mean, TRAIN_DECAY, t_count), F.debias(t_var, TRAIN_DECAY, t_count)
    v_mean, v_count = state.valid_stats[0], state.valid_stats[1]
    v_mean = jnp.where(has_valid, VALID_DECAY * v_mean + (1.0 - VALID_DECAY) * valid, v_mean)
    v_count = v_count + has_valid.astype(jnp.float32)
    train_feat = jnp.where(has_loss, F.zscore(loss, cor_mean, cor_var), state.loss_feats[0])
    valid_now = F.zscore(F.debias(v_mean, VALID_DECAY, v_count), cor_mean, cor_var)
    valid_feat = jnp.where(has_valid & (t_count > 0), valid_now, state.loss_feats[1])
    return (
        jnp.stack([t_mean, t_var, t_count]),
        jnp.stack([v_mean, v_count]),
        jnp.stack([train_feat, valid_feat]),
    )
