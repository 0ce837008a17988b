"""RealNVP normalizing flows for density estimation on 2-D toy densities and 8x8 digits.

The flow f maps data x ∈ R^D to latents z = f(x) with a standard normal base density, so

    log p(x) = log N(f(x); 0, I) + log |det ∂f/∂x|.

f is a stack of affine coupling layers (RealNVP, not MAF). Each layer splits the coordinates
into a conditioning half c and a transformed half t, and alternates the halves from layer to
layer (2-D: coordinate 0 / coordinate 1; digits: the two colours of the 8x8 checkerboard):

    y_c = x_c,   y_t = x_t ⊙ exp(s(x_c)) + m(x_c),   log |det| = Σ s(x_c),
    s = a ⊙ tanh(ŝ),  (ŝ, m) = MLP(x_c)  (two ReLU hidden layers),  a a learned vector (init 1),

as in the reference RealNVP implementation (scale·tanh keeps early steps stable). The inverse is
x_t = (y_t - m(y_c)) ⊙ exp(-s(y_c)). The hidden layers get LeCun-normal weights times the sampled
init scale; the output layer of every coupling network starts at zero, so the flow starts as the
identity (as in Glow, Kingma & Dhariwal 2018): random output layers compound through the layers
(|z| ~ 5e3 at 8 layers and init scale 2), which makes a poor and badly conditioned start.

Losses: on the 2-D densities, the negative log-likelihood in nats per example (averaged over the
batch). On digits, the integer grey levels k ∈ {0, ..., 16} (recovered from the uint8 images as
round(x · 16 / 255)) are dequantized inside `batch` with u ~ U[0, 1) drawn from the batch key,
y = (k + u) / 17 ∈ [0, 1]^64, and the loss is the continuous negative log-likelihood of y in
nats per dimension, -log p(y) / 64. (-log P(k) / 64 ≤ loss + log 17 by Jensen.)

References: Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP"; the 2-D
densities of Grathwohl et al. 2019 (FFJORD); uniform dequantization as in Theis et al. 2016.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import lopt.data
from lopt.tasks import _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import ConfigError, check_choice, check_interval, check_range, check_subset

DENSITIES = ("moons", "circles", "eight_gaussians", "checkerboard")
DATASETS = (*DENSITIES, "digits")
DIGIT_LEVELS = 17  # sklearn digits have integer grey levels 0..16


@dataclasses.dataclass(frozen=True)
class FlowStatic:
    """Structure of one flow task."""

    dataset: str  # one of DATASETS
    layers: int  # number of affine coupling layers
    hidden: int  # width of the two hidden layers of every coupling network
    batch_size: int  # examples per batch

    def __post_init__(self):
        check_choice("FlowStatic.dataset", self.dataset, DATASETS)
        check_range("FlowStatic.layers", self.layers, 1, 32)
        check_range("FlowStatic.hidden", self.hidden, 1, 4096)
        check_range("FlowStatic.batch_size", self.batch_size, 1, 8192)

    @property
    def dim(self) -> int:
        """Data dimension D (2, or 64 for digits)."""
        return 64 if self.dataset == "digits" else 2


@dataclasses.dataclass(frozen=True)
class Flow(TaskFamily):
    """RealNVP flows: dataset, number of coupling layers, hidden width and batch size are sampled."""

    name = "flow"

    datasets: tuple[str, ...] = DATASETS  # choices of dataset
    layers: tuple[int, ...] = (2, 4, 6, 8)  # choices of the number of coupling layers
    hiddens: tuple[int, ...] = (16, 32, 64, 128)  # choices of coupling-network width
    batch_sizes: tuple[int, ...] = (32, 64, 128)  # choices of batch size
    init_scale: tuple[float, float] = (0.5, 2.0)  # init-scale multiplier ~ log-uniform in [a, b]

    def __post_init__(self):
        check_subset("Flow.datasets", self.datasets, DATASETS)
        for name, values, hi in (
            ("layers", self.layers, 32),
            ("hiddens", self.hiddens, 4096),
            ("batch_sizes", self.batch_sizes, 8192),
        ):
            if not values:
                raise ConfigError(f"Flow.{name} is empty: give at least one value in [1, {hi}].")
            for v in values:
                check_range(f"Flow.{name}", v, 1, hi)
        check_interval("Flow.init_scale", self.init_scale, 1e-3, 1e3)

    # --- sampling ------------------------------------------------------------------------------
    def sample_static(self, key):
        rng = host_rng(key)
        return FlowStatic(
            dataset=str(rng.choice(self.datasets)),
            layers=int(rng.choice(self.layers)),
            hidden=int(rng.choice(self.hiddens)),
            batch_size=int(rng.choice(self.batch_sizes)),
        )

    def sample_dynamic(self, key, static):
        return {"init_scale": _nn.log_uniform(key, *self.init_scale)}

    def static_extremes(self):
        densities = [d for d in self.datasets if d != "digits"]
        small_data = densities[0] if densities else "digits"
        big_data = "digits" if "digits" in self.datasets else densities[0]
        bs = min(self.batch_sizes)
        small = FlowStatic(small_data, min(self.layers), min(self.hiddens), bs)
        big = FlowStatic(big_data, max(self.layers), max(self.hiddens), bs)
        return small, big

    def describe(self, static):
        s = static
        return f"{s.dataset}, realnvp {s.layers}x{s.hidden}-{s.hidden}, bs{s.batch_size}"

    # --- building ------------------------------------------------------------------------------
    def load_data(self, static):
        return lopt.data.device_arrays(static.dataset)

    def init(self, key, task: Task):
        s = task.static
        scale = task.dynamic["init_scale"]
        params = []
        for key_layer, (cond, trans) in zip(jax.random.split(key, s.layers), partitions(s)):
            sizes = (len(cond), s.hidden, s.hidden, 2 * len(trans))
            net = _nn.mlp_init(key_layer, sizes, scale)
            net[-1]["w"] = jnp.zeros_like(net[-1]["w"])  # each layer starts as the identity (Glow)
            params.append({"net": net, "scale": jnp.ones((len(trans),), jnp.float32)})
        return params

    def batch(self, key, split, task: Task):
        key_rows, key_noise = jax.random.split(key)
        x = _nn.sample_rows(key_rows, {"x": task.data[split]["x"]}, task.static.batch_size)["x"]
        if task.static.dataset != "digits":
            return {"x": x}  # (B, 2) float32
        grey = x.reshape(x.shape[0], -1).astype(jnp.float32)  # (B, 64) in 0..255
        levels = jnp.round(grey * ((DIGIT_LEVELS - 1) / 255.0))  # (B, 64) integer levels 0..16
        u = jax.random.uniform(key_noise, levels.shape, jnp.float32)  # (B, 64) in [0, 1)
        return {"x": (levels + u) / DIGIT_LEVELS}  # (B, 64) in [0, 1] (float32 rounds 16.99999994 up)

    def loss(self, params, key, batch, task: Task):
        nll = -jnp.mean(log_prob(params, batch["x"], task.static))
        return nll / task.static.dim if task.static.dataset == "digits" else nll


# --- the flow -------------------------------------------------------------------------------------
def halves(static: FlowStatic) -> tuple[np.ndarray, np.ndarray]:
    """The two coordinate halves (A, B): 2-D, coordinates 0 and 1; digits, the checkerboard colours."""
    if static.dim == 2:
        return np.array([0]), np.array([1])
    side = math.isqrt(static.dim)
    colour = (np.arange(side)[:, None] + np.arange(side)[None, :]).reshape(-1) % 2  # (D,) checkerboard
    return np.flatnonzero(colour == 0), np.flatnonzero(colour == 1)


def partitions(static: FlowStatic) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, the (conditioning, transformed) coordinate indices: (A, B), (B, A), (A, B), ..."""
    a, b = halves(static)
    return [(a, b) if i % 2 == 0 else (b, a) for i in range(static.layers)]


def _shift_and_log_scale(p: dict, xc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Coupling network: conditioning half xc (B, Dc) -> log-scale s and shift m, each (B, Dt)."""
    h = _nn.mlp_apply(p["net"], xc, "relu")  # (B, 2 Dt)
    raw_s, shift = jnp.split(h, 2, axis=-1)  # (B, Dt), (B, Dt)
    return p["scale"][None, :] * jnp.tanh(raw_s), shift


# The layers work on the two halves as contiguous blocks (one gather in, one gather out) rather
# than scattering into x at every layer; the map is the same.
def _split(x: jax.Array, static: FlowStatic) -> list[jax.Array]:
    a, b = halves(static)
    return [x[:, a], x[:, b]]  # (B, D/2) each


def _merge(parts: list[jax.Array], static: FlowStatic) -> jax.Array:
    order = np.argsort(np.concatenate(halves(static)))  # undoes the split's permutation
    return jnp.concatenate(parts, axis=-1)[:, order]  # (B, D)


def forward(params: list, x: jax.Array, static: FlowStatic) -> tuple[jax.Array, jax.Array]:
    """Data to latent: z = f(x) (B, D) and log |det ∂f/∂x| (B,)."""
    parts = _split(x, static)  # [x_A, x_B]
    logdet = jnp.zeros(x.shape[:1], x.dtype)  # (B,)
    for i, p in enumerate(params):
        c, t = i % 2, 1 - i % 2  # layer 0 conditions on A and moves B, layer 1 the reverse, ...
        log_s, shift = _shift_and_log_scale(p, parts[c])  # (B, Dt)
        parts[t] = parts[t] * jnp.exp(log_s) + shift
        logdet = logdet + jnp.sum(log_s, axis=-1)
    return _merge(parts, static), logdet


def inverse(params: list, z: jax.Array, static: FlowStatic) -> jax.Array:
    """Latent to data: x = f⁻¹(z), (B, D) -> (B, D)."""
    parts = _split(z, static)
    for i in reversed(range(len(params))):
        c, t = i % 2, 1 - i % 2
        log_s, shift = _shift_and_log_scale(params[i], parts[c])  # (B, Dt)
        parts[t] = (parts[t] - shift) * jnp.exp(-log_s)
    return _merge(parts, static)


def log_prob(params: list, x: jax.Array, static: FlowStatic) -> jax.Array:
    """log p(x) in nats, (B, D) -> (B,)."""
    z, logdet = forward(params, x, static)  # (B, D), (B,)
    log_base = -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)  # (B,)
    return log_base + logdet


def sample(params: list, key: jax.Array, n: int, static: FlowStatic) -> jax.Array:
    """``n`` samples from the flow, (n, D)."""
    return inverse(params, jax.random.normal(key, (n, static.dim), jnp.float32), static)
