"""Small pure-JAX layers shared by the task families (params are plain dicts of arrays)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "swish": jax.nn.swish,
    "sigmoid": jax.nn.sigmoid,
}


def dense_init(key: jax.Array, fan_in: int, fan_out: int, scale: jax.Array | float = 1.0) -> dict:
    """LeCun-normal weights times ``scale`` (a dynamic init-scale multiplier), zero bias."""
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * (scale / math.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def dense(p: dict, x: jax.Array) -> jax.Array:
    """``x @ w + b``; x: (..., fan_in) -> (..., fan_out)."""
    y = x @ p["w"]
    return y + _lead(p["b"], y.ndim)


def mlp_init(key: jax.Array, sizes: tuple[int, ...], scale: jax.Array | float = 1.0) -> list[dict]:
    """Dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [dense_init(k, a, b, scale) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp_apply(layers: list[dict], x: jax.Array, activation: str) -> jax.Array:
    """Dense layers with ``activation`` between them (none after the last)."""
    act = ACTIVATIONS[activation]
    for p in layers[:-1]:
        x = act(dense(p, x))
    return dense(layers[-1], x)


def conv_init(key: jax.Array, kernel: tuple[int, ...], c_in: int, c_out: int, scale=1.0) -> dict:
    """Conv weights (*kernel, c_in, c_out), LeCun-normal times ``scale``, zero bias."""
    fan_in = c_in * math.prod(kernel)
    w = jax.random.normal(key, (*kernel, c_in, c_out), jnp.float32) * (scale / math.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros((c_out,), jnp.float32)}


def conv(p: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    """'SAME' convolution, channels last: x (B, *spatial, C_in) -> (B, *spatial/stride, C_out)."""
    nd = p["w"].ndim - 2
    spec = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[nd]
    y = jax.lax.conv_general_dilated(x, p["w"], (stride,) * nd, "SAME", dimension_numbers=spec)
    return y + _lead(p["b"], y.ndim)


def _lead(b: jax.Array, ndim: int) -> jax.Array:
    """``b`` with leading unit axes up to ``ndim`` (explicit broadcasting, no rank promotion)."""
    return b.reshape((1,) * (ndim - b.ndim) + b.shape)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy of integer ``labels`` (B,) under ``logits`` (B, C)."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to ``labels``."""
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def log_uniform(key: jax.Array, lo: float, hi: float) -> jax.Array:
    """A float32 scalar log-uniform in [lo, hi]."""
    return jnp.exp(jax.random.uniform(key, (), jnp.float32, math.log(lo), math.log(hi)))


def sample_rows(key: jax.Array, arrays: dict, batch_size: int) -> dict:
    """A batch of ``batch_size`` rows sampled with replacement from a dict of equal-length arrays."""
    n = next(iter(arrays.values())).shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {k: v[idx] for k, v in arrays.items()}
