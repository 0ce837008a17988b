"""Classic two-dimensional optimization test functions, from a random start, with gradient noise.

The params are one point ``{"xy": (2,)}``; the task is to walk it to the function's minimum.
The functions (standard definitions, as collected in Jamil & Yang 2013, "A literature survey of
benchmark functions for global optimization problems"):

- ``rosenbrock``: (1 - x)^2 + 100 (y - x^2)^2, a curved narrow valley (Rosenbrock 1960).
- ``beale``: (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2, flat plateaus and
  steep walls.
- ``booth``: (x + 2y - 7)^2 + (2x + y - 5)^2, a convex quadratic (condition number 9).
- ``himmelblau``: (x^2 + y - 11)^2 + (x + y^2 - 7)^2, four global minima (Himmelblau 1972).
- ``saddle``: x^2 - y^2 + y^4 / 4, a saddle point at the origin (value 0, zero gradient, Hessian
  diag(2, -2)) with a quartic term that bounds it below, so there are two global minima at
  (0, ±√2) with value -1: an optimizer must leave the saddle's neighbourhood to make progress.
- ``rastrigin``: 20 + Σ_i (x_i^2 - 10 cos(2π x_i)), a bowl covered with a lattice of local minima
  (Rastrigin 1974; the 2-D case of Mühlenbein et al. 1991).

`FUNCTIONS` holds each function with its usual domain (where the start is drawn uniformly) and
its known global minimizers and minimum value.

The train split carries gradient noise: a batch is a draw ξ ~ N(0, I_2) and the loss is
f(xy) + σ ξ·(xy - stop_gradient(xy)), whose value is exactly f(xy) and whose gradient is
∇f(xy) + σ ξ. The other splits have ξ = 0, so their loss is the noiseless f.

References: Rosenbrock 1960; Beale 1958; Himmelblau 1972, "Applied Nonlinear Programming";
Rastrigin 1974; the collections of Jamil & Yang 2013 and Surjanovic & Bingham (sfu.ca/~ssurjano).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import check_choice, check_interval, check_subset


def rosenbrock(xy: jax.Array) -> jax.Array:
    """(1 - x)^2 + 100 (y - x^2)^2; xy: (2,) -> scalar."""
    x, y = xy[0], xy[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def beale(xy: jax.Array) -> jax.Array:
    """(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2."""
    x, y = xy[0], xy[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def booth(xy: jax.Array) -> jax.Array:
    """(x + 2y - 7)^2 + (2x + y - 5)^2."""
    x, y = xy[0], xy[1]
    return (x + 2.0 * y - 7.0) ** 2 + (2.0 * x + y - 5.0) ** 2


def himmelblau(xy: jax.Array) -> jax.Array:
    """(x^2 + y - 11)^2 + (x + y^2 - 7)^2."""
    x, y = xy[0], xy[1]
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


def saddle(xy: jax.Array) -> jax.Array:
    """x^2 - y^2 + y^4 / 4: a saddle at the origin, bounded below by the quartic term."""
    x, y = xy[0], xy[1]
    return x**2 - y**2 + 0.25 * y**4


def rastrigin(xy: jax.Array) -> jax.Array:
    """20 + Σ_i (x_i^2 - 10 cos(2π x_i))."""
    return 20.0 + jnp.sum(xy**2 - 10.0 * jnp.cos(2.0 * math.pi * xy))


class Function2D(NamedTuple):
    """A test function with its usual domain and its known global minima."""

    fn: Callable[[jax.Array], jax.Array]  # xy (2,) -> scalar
    domain: tuple[tuple[float, float], tuple[float, float]]  # ((x_lo, x_hi), (y_lo, y_hi)) of the start
    minimizers: tuple[tuple[float, float], ...]  # every global minimizer (x, y)
    minimum: float  # the global minimum value


_SQRT2 = math.sqrt(2.0)

FUNCTIONS: dict[str, Function2D] = {
    "rosenbrock": Function2D(rosenbrock, ((-2.0, 2.0), (-1.0, 3.0)), ((1.0, 1.0),), 0.0),
    "beale": Function2D(beale, ((-4.5, 4.5), (-4.5, 4.5)), ((3.0, 0.5),), 0.0),
    "booth": Function2D(booth, ((-10.0, 10.0), (-10.0, 10.0)), ((1.0, 3.0),), 0.0),
    "himmelblau": Function2D(
        himmelblau,
        ((-5.0, 5.0), (-5.0, 5.0)),
        (  # (3, 2) exactly; the other three by Newton's method in float64
            (3.0, 2.0),
            (-2.805118086953, 3.131312518251),
            (-3.779310253378, -3.283185991286),
            (3.584428340330, -1.848126526964),
        ),
        0.0,
    ),
    "saddle": Function2D(saddle, ((-2.0, 2.0), (-2.0, 2.0)), ((0.0, _SQRT2), (0.0, -_SQRT2)), -1.0),
    "rastrigin": Function2D(rastrigin, ((-5.12, 5.12), (-5.12, 5.12)), ((0.0, 0.0),), 0.0),
}


@dataclasses.dataclass(frozen=True)
class Functions2DStatic:
    """Structure of one 2-D task: which function."""

    function: str  # a key of FUNCTIONS

    def __post_init__(self):
        check_choice("Functions2DStatic.function", self.function, FUNCTIONS)


@dataclasses.dataclass(frozen=True)
class Functions2D(TaskFamily):
    """2-D test functions: the function is static; the start point and gradient noise are dynamic."""

    name = "functions2d"

    functions: tuple[str, ...] = tuple(FUNCTIONS)  # choices for the function
    noise: tuple[float, float] = (0.0, 1.0)  # train-split gradient-noise scale σ ~ U(a, b)

    def __post_init__(self):
        check_subset("Functions2D.functions", self.functions, FUNCTIONS)
        check_interval("Functions2D.noise", self.noise, 0.0, 100.0)

    def sample_static(self, key):
        return Functions2DStatic(function=str(host_rng(key).choice(self.functions)))

    def sample_dynamic(self, key, static):
        k_start, k_noise = jax.random.split(key)
        (x_lo, x_hi), (y_lo, y_hi) = FUNCTIONS[static.function].domain
        lo = jnp.array([x_lo, y_lo], jnp.float32)  # (2,)
        hi = jnp.array([x_hi, y_hi], jnp.float32)  # (2,)
        return {
            "xy0": jax.random.uniform(k_start, (2,), jnp.float32, lo, hi),  # (2,) start point
            "noise": jax.random.uniform(k_noise, (), jnp.float32, *self.noise),
        }

    def static_extremes(self):
        # Every function has 2 params; return the first and the last of the space.
        return Functions2DStatic(self.functions[0]), Functions2DStatic(self.functions[-1])

    def describe(self, static):
        return static.function

    def minimum(self, static) -> tuple[tuple[tuple[float, float], ...], float]:
        """The known global minimizers and minimum value of ``static``'s function."""
        f = FUNCTIONS[static.function]
        return f.minimizers, f.minimum

    def init(self, key, task: Task):
        return {"xy": task.dynamic["xy0"]}

    def batch(self, key, split, task: Task):
        if split == "train":
            return {"xi": jax.random.normal(key, (2,), jnp.float32)}  # (2,)
        return {"xi": jnp.zeros((2,), jnp.float32)}  # (2,)

    def loss(self, params, key, batch, task: Task):
        xy = params["xy"]  # (2,)
        # Zero in value, σ ξ in gradient: the reported loss stays the exact f.
        noise = task.dynamic["noise"] * jnp.dot(batch["xi"], xy - jax.lax.stop_gradient(xy))
        return FUNCTIONS[task.static.function].fn(xy) + noise
