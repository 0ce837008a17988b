"""The fused learned optimizers agree with straightforward reference implementations, to float32 tolerance.

The references below follow the equations of the module docstrings the plain way: every feature is
materialized, stacked into an [n, F] matrix, normalized column-wise by its root mean square,
concatenated with the tiled per-tensor inputs and pushed through the MLP with matmuls; the
per-tensor statistics use two-pass means and variances; nothing is folded or reordered for speed.
They are run on a small tree (a matrix, a vector, a scalar) for several steps from a random theta
(init + N(0, 0.5²) noise, so that every part of the network matters), with loss and validation-loss
histories, and every update must match.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.optimizers.learned import HierarchicalOptimizer, MLPOptimizer
from lopt.optimizers.learned.features import STEP_TIMESCALES

pytestmark = pytest.mark.strict_promotion

EPS_V, EPS_N = 1e-24, 1e-30
STEPS = 6


def tree():
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    return {"a": jax.random.normal(k1, (5, 3)), "b": 0.3 * jax.random.normal(k2, (7,)), "c": jnp.float32(0.7)}


def grads_at(step):
    """A made-up gradient sequence with tensors of very different scales."""
    key = jax.random.fold_in(jax.random.key(11), step)
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "a": jax.random.normal(k1, (5, 3)),
        "b": 1e-3 * jax.random.normal(k2, (7,)),
        "c": 10.0 * jax.random.normal(k3, ()),
    }


def random_theta(learned, key=0):
    theta = learned.init(jax.random.key(key))
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(key + 100), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


def mlp_forward(theta_mlp, inputs):
    """inputs (n, I) -> (n, 2) with ReLU hidden layers."""
    h = inputs
    i = 0
    while f"l{i}" in theta_mlp:
        h = jax.nn.relu(h @ theta_mlp[f"l{i}"]["w"] + theta_mlp[f"l{i}"]["b"][None, :])
        i += 1
    return h @ theta_mlp["out"]["w"] + theta_mlp["out"]["b"][None, :]


def features(cfg, g, p, ms, vs):
    """(n, F) un-normalized features and the new accumulators, for flat g, p (n,)."""
    ms = [b * m + (1 - b) * g for b, m in zip(cfg.mom_decays, ms)]
    vs = [c * v + (1 - c) * g * g for c, v in zip(cfg.rms_decays, vs)]
    rs = [1.0 / jnp.sqrt(v + EPS_V) for v in vs]
    cols = [g, p, *ms, *rs, *[m * r for m in ms for r in rs]]
    return jnp.stack(cols, axis=1), ms, vs


def normalize(x):
    return x / jnp.sqrt(jnp.mean(x**2, axis=0, keepdims=True) + EPS_N)


def step_update(cfg, theta, x_norm, tensor_inputs, extra_bias=None):
    n = x_norm.shape[0]
    inputs = jnp.concatenate([x_norm, jnp.tile(tensor_inputs[None, :], (n, 1))], axis=1)
    mlp = dict(theta["mlp"])
    if extra_bias is not None:
        mlp["l0"] = {"w": mlp["l0"]["w"], "b": mlp["l0"]["b"] + extra_bias}
    out = mlp_forward(mlp, inputs)
    direction = out[:, 0] + x_norm @ theta["skip"]
    return -direction * jnp.exp(out[:, 1] * cfg.exp_mult) * cfg.step_mult


def reference_mlp(learned, theta, params, steps):
    cfg = learned.config
    names = list(params)
    ms = {k: [jnp.zeros(params[k].size)] * len(cfg.mom_decays) for k in names}
    vs = {k: [jnp.zeros(params[k].size)] * len(cfg.rms_decays) for k in names}
    all_updates = []
    for t in range(steps):
        grads, updates = grads_at(t), {}
        emb = jnp.tanh(t / jnp.asarray(STEP_TIMESCALES))
        for k in names:
            x, ms[k], vs[k] = features(cfg, grads[k].reshape(-1), params[k].reshape(-1), ms[k], vs[k])
            updates[k] = step_update(cfg, theta, normalize(x), emb).reshape(params[k].shape)
        all_updates.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return all_updates


def clip_log_abs(x):
    return jnp.clip(jnp.log(jnp.abs(x) + 1e-8), -5.0, 5.0)


def mean_var(x):
    mean = jnp.mean(x)
    return mean, jnp.mean((x - mean) ** 2)


def zscore(x, mean, var):
    return jnp.clip((x - mean) / jnp.sqrt(var + 1e-8), -5.0, 5.0)


def reference_hierarchical(learned, theta, params, steps, losses, valid_losses):
    cfg = learned.config
    names = list(params)  # jax.tree.leaves order of a dict: sorted keys
    T = len(names)
    ms = {k: [jnp.zeros(params[k].size)] * len(cfg.mom_decays) for k in names}
    vs = {k: [jnp.zeros(params[k].size)] * len(cfg.rms_decays) for k in names}
    h = jnp.zeros((T, cfg.lstm_hidden))
    c = jnp.zeros((T, cfg.lstm_hidden))
    message = theta["message0"]
    clip_ema = 1.0 - 0.99
    train_hist, valid_hist = [], []
    train_mean = train_var = 0.0
    valid_mean = 0.0
    train_feat = valid_feat = 0.0
    all_updates = []
    for t in range(steps):
        grads = grads_at(t)
        # loss features
        if losses[t] is not None:
            train_hist.append(losses[t])
            train_mean = 0.9 * train_mean + 0.1 * losses[t]
            train_var = 0.9 * train_var + 0.1 * (train_mean - losses[t]) ** 2
        cor = 1.0 / (1.0 - 0.9 ** len(train_hist)) if train_hist else 0.0
        if losses[t] is not None:
            train_feat = zscore(losses[t], train_mean * cor, train_var * cor)
        if valid_losses[t] is not None:
            valid_hist.append(valid_losses[t])
            valid_mean = 0.95 * valid_mean + 0.05 * valid_losses[t]
            if train_hist:
                valid_feat = zscore(
                    valid_mean / (1 - 0.95 ** len(valid_hist)), train_mean * cor, train_var * cor
                )
        # dynamic clipping
        clip = clip_ema / (1 - 0.99 ** (t + 1)) * 10.0
        rows, xs = [], {}
        mean_sqs = []
        for k in names:
            g = jnp.clip(grads[k].reshape(-1), -clip, clip)
            p = params[k].reshape(-1)
            x, ms[k], vs[k] = features(cfg, g, p, ms[k], vs[k])
            xs[k] = x
            mean_sqs.append(jnp.mean(g**2))
            stats = []
            for arr in (jnp.concatenate(ms[k]), jnp.concatenate(vs[k]), p):
                mean, var = mean_var(arr)
                stats += [clip_log_abs(mean), jnp.sign(mean), clip_log_abs(var)]
            shape = params[k].shape
            dims = [1] * (4 - len(shape)) + list(shape)
            rows.append(
                jnp.concatenate(
                    [
                        jnp.stack(stats),
                        jnp.stack([clip_log_abs(jnp.linalg.norm(g)), clip_log_abs(jnp.linalg.norm(p))]),
                        jnp.asarray([1.0 if len(shape) == 0 else -1.0] + [math.log(d) - 1.0 for d in dims]),
                        jnp.stack([jnp.float32(train_feat), jnp.float32(valid_feat)]),
                        message,
                    ]
                )
            )
        z = jnp.stack(rows)  # (T, I)
        gates = (
            jnp.concatenate([z, h], axis=1) @ jnp.concatenate([theta["lstm"]["wx"], theta["lstm"]["wh"]])
            + theta["lstm"]["b"][None, :]
        )
        hl = cfg.lstm_hidden
        i_g, f_g, g_g, o_g = (gates[:, j * hl : (j + 1) * hl] for j in range(4))
        c = jax.nn.sigmoid(f_g) * c + jax.nn.sigmoid(i_g) * jnp.tanh(g_g)
        h = jax.nn.sigmoid(o_g) * jnp.tanh(c)
        message = jnp.mean(h @ theta["to_message"]["w"] + theta["to_message"]["b"][None, :], axis=0)
        to_mlp = h @ theta["to_mlp"]["w"] + theta["to_mlp"]["b"][None, :]
        emb = jnp.tanh(t / jnp.asarray(STEP_TIMESCALES))
        updates = {}
        for i, k in enumerate(names):
            p = params[k].reshape(-1)
            tensor_inputs = jnp.concatenate(
                [
                    emb,
                    jnp.stack(
                        [
                            clip_log_abs(jnp.linalg.norm(p)),
                            jnp.float32(math.log(p.size)),
                            jnp.float32(math.log(T)),
                        ]
                    ),
                ]
            )
            updates[k] = step_update(cfg, theta, normalize(xs[k]), tensor_inputs, to_mlp[i]).reshape(
                params[k].shape
            )
        clip_ema = 0.99 * clip_ema + 0.01 * jnp.sqrt(1e-8 + sum(mean_sqs) / T)
        all_updates.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return all_updates


def run(opt, params, steps, losses=None, valid_losses=None):
    state = opt.init(params)
    out = []
    for t in range(steps):
        kw = {}
        if losses is not None and losses[t] is not None:
            kw["loss"] = jnp.float32(losses[t])
        if valid_losses is not None and valid_losses[t] is not None:
            kw["valid_loss"] = jnp.float32(valid_losses[t])
        updates, state = opt.update(grads_at(t), state, params, **kw)
        out.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return out


def assert_updates_close(fast, ref):
    for t, (a, b) in enumerate(zip(fast, ref)):
        for k in a:
            scale = float(jnp.max(jnp.abs(b[k])))
            np.testing.assert_allclose(
                np.asarray(a[k]),
                np.asarray(b[k]),
                rtol=2e-4,
                atol=2e-5 * scale,
                err_msg=f"step {t}, tensor {k}",
            )


@pytest.mark.parametrize("hidden", [(4, 4), (8,)])
def test_mlp_matches_reference(hidden):
    learned = MLPOptimizer(hidden=hidden)
    theta = random_theta(learned)
    fast = run(learned.transform(theta), tree(), STEPS)
    assert_updates_close(fast, reference_mlp(learned, theta, tree(), STEPS))


def test_hierarchical_matches_reference():
    learned = HierarchicalOptimizer()
    theta = random_theta(learned)
    losses = [3.0, 2.5, None, 2.0, 2.2, 1.5]
    valid_losses = [None, 2.8, None, None, 2.4, None]
    fast = run(learned.transform(theta), tree(), STEPS, losses, valid_losses)
    assert_updates_close(fast, reference_hierarchical(learned, theta, tree(), STEPS, losses, valid_losses))
