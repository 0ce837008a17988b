"""Quadratic bowls with a sampled dimension, conditioning and gradient noise.

f(x) = 1/2 (x - c)^T A (x - c), with A = Q diag(λ) Q^T, λ log-spaced between 1 and the sampled
condition number, Q a random rotation, and c a random center. A batch is a noise draw ξ, and
the training loss is f(x + σ ξ): its gradient is the exact gradient plus Gaussian noise of scale
σ (in the A-metric). The validation and test splits see noiseless losses, so the optimum is
known: f* = 0 at x = c.

References: the noisy quadratic model (Zhang et al. 2019, "Which algorithmic choices matter at
which batch sizes?"); the quadratic tasks of TaskSet (Metz et al. 2020).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import check_interval, check_range


@dataclasses.dataclass(frozen=True)
class QuadraticStatic:
    """Structure of one quadratic task."""

    dim: int  # number of parameters

    def __post_init__(self):
        check_range("QuadraticStatic.dim", self.dim, 1, 100_000)


@dataclasses.dataclass(frozen=True)
class Quadratic(TaskFamily):
    """Quadratic bowls: dimension, conditioning and noise are sampled."""

    name = "quadratic"

    dims: tuple[int, ...] = (2, 10, 32, 100)  # choices for the dimension
    log10_condition: tuple[float, float] = (0.0, 3.0)  # condition number 10^U(a, b)
    noise: tuple[float, float] = (0.0, 1.0)  # gradient-noise scale σ ~ U(a, b)
    rotate: bool = True  # random rotation Q (False: axis-aligned, diagonal A)

    def __post_init__(self):
        for d in self.dims:
            check_range("Quadratic.dims", d, 1, 100_000)
        check_interval("Quadratic.log10_condition", self.log10_condition, 0.0, 8.0)
        check_interval("Quadratic.noise", self.noise, 0.0, 100.0)

    def sample_static(self, key):
        return QuadraticStatic(dim=int(host_rng(key).choice(self.dims)))

    def sample_dynamic(self, key, static):
        k_cond, k_noise, k_rot, k_center, k_x0 = jax.random.split(key, 5)
        log_cond = jax.random.uniform(k_cond, (), jnp.float32, *self.log10_condition) * math.log(10.0)
        n = static.dim
        frac = jnp.linspace(0.0, 1.0, n) if n > 1 else jnp.zeros((1,))
        eigvals = jnp.exp(frac * log_cond)  # (n,) from 1 to the condition number
        if self.rotate and n > 1:
            q, _ = jnp.linalg.qr(jax.random.normal(k_rot, (n, n)))  # (n, n) orthogonal
        else:
            q = jnp.eye(n)
        return {
            "eigvals": eigvals,
            "rotation": q,
            "center": jax.random.normal(k_center, (n,)),
            "x0": jax.random.normal(k_x0, (n,)),
            "noise": jax.random.uniform(k_noise, (), jnp.float32, *self.noise),
        }

    def static_extremes(self):
        return QuadraticStatic(min(self.dims)), QuadraticStatic(max(self.dims))

    def describe(self, static):
        return f"dim={static.dim}"

    def init(self, key, task: Task):
        return {"x": task.dynamic["x0"]}

    def batch(self, key, split, task: Task):
        n = task.static.dim
        if split == "train":
            return {"xi": jax.random.normal(key, (n,))}
        return {"xi": jnp.zeros((n,))}

    def loss(self, params, key, batch, task: Task):
        d = task.dynamic
        z = d["rotation"].T @ (params["x"] - d["center"])  # (n,) coordinates in the eigenbasis
        z = z + d["noise"] * batch["xi"] / jnp.sqrt(d["eigvals"])
        return 0.5 * jnp.sum(d["eigvals"] * z**2)
