r"""The noisy quadratic model (NQM): a diagonal quadratic with gradient noise of covariance H/B, and
the closed-form expected-loss dynamics of SGD with (heavy-ball) momentum on it.

.. math::
    L(x) = \tfrac12 \sum_i h_i x_i^2, \qquad h_i = i^{-p}\ (i = 1..n), \qquad
    \hat L_B(x) = L(x) + \sum_i x_i\, \sqrt{h_i / B}\ \xi_i,\quad \xi \sim \mathcal N(0, I)

A train batch is one draw ξ: the batch loss is an unbiased estimate of L and its gradient is
h ⊙ x + n with n ~ N(0, H/B) -- the NQM's model of minibatch noise, with the batch size B scaling
its covariance (Zhang et al. 2019, after the fact that the gradient covariance of a loss near an
optimum is about its Hessian / B). The other splits are noiseless: their loss is L itself, whose
minimum is 0 at x = 0. Sampled: the spectrum's exponent p (dynamic), the initial point x_0 ~
N(0, s² I) (dynamic; s the init scale), dimension n and batch size B (static).

Closed-form dynamics (`expected_losses`). SGD with momentum as optax writes it,
v_{t+1} = μ v_t + g_t, x_{t+1} = x_t − η_t v_{t+1}, is linear in s = (x, v) per coordinate:

.. math::
    s_{t+1} = A_t s_t + b_t n_t,\quad
    A_t = \begin{pmatrix} 1 - \eta_t h & -\eta_t \mu \\ h & \mu \end{pmatrix},\quad
    b_t = \begin{pmatrix} -\eta_t \\ 1 \end{pmatrix},\quad \operatorname{Var} n_t = \sigma^2 = h / B,

so the second moments M_t = E[s_t s_tᵀ] obey M_{t+1} = A_t M_t A_tᵀ + σ² b_t b_tᵀ exactly, from
M_0 = s_0 s_0ᵀ (v_0 = 0), and E[L(x_t)] = ½ Σ_i h_i (M_t)_{xx,i}. No sampling, any schedule η_t.
Without momentum it sums to the textbook closed form (`sgd_expected_loss`): with r = 1 − η h,

.. math::
    \mathbb E[x_t^2] = r^{2t} x_0^2 + \eta^2 \sigma^2\, \frac{1 - r^{2t}}{1 - r^2}.

References: Zhang, Li, Nado, Martens, Sachdeva, Dahl, Shallue, Grosse 2019, "Which algorithmic
choices matter at which batch sizes? Insights from a noisy quadratic model" (NeurIPS); Wu, Ren,
Liao, Grosse 2018, "Understanding short-horizon bias in stochastic meta-optimization" (ICLR);
Grosse, CSC2541 "Neural net training dynamics", lecture on stochastic optimization.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import check_interval, check_range


@dataclasses.dataclass(frozen=True)
class NQMStatic:
    """Structure of one noisy quadratic."""

    dim: int  # n, the number of coordinates (eigen-directions)
    batch_size: int  # B: the gradient-noise covariance is H / B

    def __post_init__(self):
        check_range("NQMStatic.dim", self.dim, 1, 1_000_000)
        check_range("NQMStatic.batch_size", self.batch_size, 1, 1_000_000)


def curvatures(dim: int, exponent: jax.Array) -> jax.Array:
    """(dim,) h_i = i^(−p), i = 1..dim: the largest curvature is 1."""
    return jnp.arange(1, dim + 1, dtype=jnp.float32) ** (-exponent)


@dataclasses.dataclass(frozen=True)
class NQM(TaskFamily):
    """Noisy quadratic models: dimension and batch size static; spectrum exponent and x_0 dynamic."""

    name = "nqm"

    dims: tuple[int, ...] = (10, 100)  # choices for n
    batch_sizes: tuple[int, ...] = (1, 16, 256)  # choices for B (noise covariance H / B)
    exponent: tuple[float, float] = (1.0, 1.0)  # p ~ U(a, b) of h_i = i^(−p); Zhang et al.: 1
    init_scale: tuple[float, float] = (1.0, 1.0)  # s ~ U(a, b) of x_0 ~ N(0, s² I)

    def __post_init__(self):
        for d in self.dims:
            check_range("NQM.dims", d, 1, 1_000_000)
        for b in self.batch_sizes:
            check_range("NQM.batch_sizes", b, 1, 1_000_000)
        check_interval("NQM.exponent", self.exponent, 0.0, 4.0)
        check_interval("NQM.init_scale", self.init_scale, 1e-3, 1e3)

    def sample_static(self, key):
        rng = host_rng(key)
        return NQMStatic(dim=int(rng.choice(self.dims)), batch_size=int(rng.choice(self.batch_sizes)))

    def sample_dynamic(self, key, static):
        k_exp, k_scale, k_x0 = jax.random.split(key, 3)
        scale = jax.random.uniform(k_scale, (), jnp.float32, *self.init_scale)
        return {
            "exponent": jax.random.uniform(k_exp, (), jnp.float32, *self.exponent),
            "x0": scale * jax.random.normal(k_x0, (static.dim,)),
        }

    def static_extremes(self):
        return (
            NQMStatic(min(self.dims), min(self.batch_sizes)),
            NQMStatic(max(self.dims), max(self.batch_sizes)),
        )

    def describe(self, static):
        return f"dim={static.dim}, bs{static.batch_size}"

    def init(self, key, task: Task):
        del key  # x_0 is part of the task: the closed form starts from it
        return {"x": task.dynamic["x0"]}

    def batch(self, key, split, task: Task):
        n = task.static.dim
        if split == "train":
            return {"xi": jax.random.normal(key, (n,))}
        return {"xi": jnp.zeros((n,))}

    def loss(self, params, key, batch, task: Task):
        h = curvatures(task.static.dim, task.dynamic["exponent"])  # (n,)
        x = params["x"]  # (n,)
        noise = jnp.sqrt(h / task.static.batch_size) * batch["xi"]  # (n,) n ~ N(0, H/B)
        return 0.5 * jnp.sum(h * x**2) + jnp.sum(x * noise)


# --- closed-form dynamics ------------------------------------------------------------------------


class Moments(NamedTuple):
    """Per-coordinate second moments of SGD-with-momentum's state s = (x, v) on the NQM, each (n,)."""

    xx: jax.Array  # E[x²]
    xv: jax.Array  # E[x v]
    vv: jax.Array  # E[v²]


def init_moments(x0: jax.Array) -> Moments:
    """M_0 = s_0 s_0ᵀ with v_0 = 0."""
    zeros = jnp.zeros_like(x0)
    return Moments(x0**2, zeros, zeros)


def evolve(
    h: jax.Array, m: Moments, learning_rates: jax.Array, momentum: float | jax.Array, batch_size: float
) -> tuple[Moments, jax.Array]:
    """M_t -> M_{t+T} under the schedule ``learning_rates`` (T,) (the module docstring's recursion);
    returns the new moments and (T,) E[L(x_{t+1})], ..., E[L(x_{t+T})]."""
    sigma2 = h / batch_size  # (n,)
    mu = jnp.asarray(momentum, jnp.float32)

    def step(m, lr):
        a11, a12, a21, a22 = 1.0 - lr * h, -lr * mu, h, mu
        new = Moments(
            a11**2 * m.xx + 2 * a11 * a12 * m.xv + a12**2 * m.vv + lr**2 * sigma2,
            a11 * a21 * m.xx + (a11 * a22 + a12 * a21) * m.xv + a12 * a22 * m.vv - lr * sigma2,
            a21**2 * m.xx + 2 * a21 * a22 * m.xv + a22**2 * m.vv + sigma2,
        )
        return new, 0.5 * jnp.sum(h * new.xx)

    return jax.lax.scan(step, m, jnp.asarray(learning_rates, jnp.float32))


def expected_losses(
    h: jax.Array, x0: jax.Array, learning_rates: jax.Array, momentum: float | jax.Array, batch_size: float
) -> jax.Array:
    """(T + 1,) E[L(x_t)], t = 0..T, of SGD with momentum μ and the schedule ``learning_rates``
    (T,) from x_0 (the recursion of the module docstring; exact, differentiable in every input)."""
    _, losses = evolve(h, init_moments(x0), learning_rates, momentum, batch_size)
    return jnp.concatenate([(0.5 * jnp.sum(h * x0**2))[None], losses])


def sgd_expected_loss(
    h: jax.Array, x0: jax.Array, learning_rate: jax.Array, batch_size: float, t: int
) -> jax.Array:
    """E[L(x_t)] of plain SGD with a constant rate, in closed form (module docstring)."""
    r2 = (1.0 - learning_rate * h) ** 2  # (n,)
    geo = jnp.where(jnp.abs(1.0 - r2) > 1e-12, (1.0 - r2**t) / (1.0 - r2), float(t))  # Σ_{k<t} r^{2k}
    ex2 = r2**t * x0**2 + learning_rate**2 * (h / batch_size) * geo
    return 0.5 * jnp.sum(h * ex2)


def task_expected_losses(
    task: Task, learning_rates: jax.Array, momentum: float | jax.Array = 0.0
) -> jax.Array:
    """`expected_losses` of an NQM task (its curvatures, x_0 and batch size)."""
    h = curvatures(task.static.dim, task.dynamic["exponent"])
    return expected_losses(h, task.dynamic["x0"], learning_rates, momentum, task.static.batch_size)
