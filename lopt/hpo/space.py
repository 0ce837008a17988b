r"""Hyperparameters of an optax baseline as an unconstrained pytree, and the optimizer they build.

    space = HParamSpace.build("adam", ("learning_rate",), start={"learning_rate": 1e-3})
    opt = HParamOptimizer(space)             # init(key) -> theta, transform(theta) -> optax
    theta = opt.init(key)                    # {"learning_rate": log(1e-3)}: unconstrained floats
    updates, state = opt.transform(theta).update(grads, state, params)   # theta may be traced

theta holds one float32 scalar u per tuned hyperparameter, in the space where its range is
multiplicative:

.. math::
    \text{scale (learning rate, eps, weight decay, L2, ...)}:&\quad \lambda = e^{u},
        \qquad u \in [\log \ell, \log h] \\
    \text{decay rate (momentum, } \beta_1, \beta_2, \rho\text{)}:&\quad \lambda = 1 - e^{u},
        \qquad u \in [\log(1 - h), \log(1 - \ell)]

with [ℓ, h] the hyperparameter's valid range (`Baseline.ranges`, or a narrower range given by the
user); a lower bound of 0 is floored at `LOG_FLOOR` for scales and 1 − h at `DECAY_FLOOR` for
decays. ``values(theta)`` clips u to its interval before mapping, so no θ -- not an ES
perturbation, not an outer step -- ever builds an optimizer outside the valid range (the gradient
is zero beyond a bound; `project` puts θ back on it after an outer step).

`HParamOptimizer` has the learned-optimizer contract (`lopt.optimizers.learned`): ``init(key) ->
theta``, ``transform(theta) -> optax``, so the meta-training engine (`lopt.unroll`, the ES / PES /
NRES estimators) tunes hyperparameters unchanged, with θ = these log-hyperparameters.

References: Bengio 2000, "Gradient-based optimization of hyperparameters" (log-space
parametrization); Maclaurin, Duvenaud, Adams 2015, "Gradient-based hyperparameter optimization
through reversible learning".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.optimizers.baselines import get_baseline
from lopt.validate import ConfigError

DECAYS = ("momentum", "b1", "b2", "decay")  # rates in [0, 1): tuned as log(1 − λ)
LOG_FLOOR = 1e-8  # a scale whose range starts at 0 is searched from here
DECAY_FLOOR = 1e-6  # a decay whose range ends at 1 is searched up to 1 − this


def kind(name: str) -> str:
    """``"decay"`` (u = log(1 − λ)) for the decay rates in `DECAYS`, else ``"log"`` (u = log λ)."""
    return "decay" if name in DECAYS else "log"


def to_unconstrained(name: str, value: float) -> float:
    """u of the module docstring for a concrete value."""
    return math.log(1.0 - value) if kind(name) == "decay" else math.log(value)


def from_unconstrained(name: str, u: Any) -> Any:
    """λ of the module docstring (no clipping)."""
    return 1.0 - jnp.exp(u) if kind(name) == "decay" else jnp.exp(u)


@dataclasses.dataclass(frozen=True)
class HParamSpace:
    """The tuned hyperparameters of one baseline: names, start values and valid ranges.

    All fields are static (hashable tuples of Python numbers); build it with `HParamSpace.build`,
    which validates names, ranges and start values with messages that say what to change.
    """

    optimizer: str  # a `lopt.optimizers.BASELINES` name, e.g. "adam"
    names: tuple[str, ...]  # the tuned hyperparameters, e.g. ("learning_rate", "weight_decay")
    start: tuple[float, ...]  # their start values (one per name)
    ranges: tuple[tuple[float, float], ...]  # their search ranges [lo, hi] (inside the valid ranges)
    fixed: tuple[tuple[str, float], ...] = ()  # values of untuned hyperparameters (else defaults)

    @classmethod
    def build(
        cls,
        optimizer: str,
        names: tuple[str, ...] | list[str],
        start: Mapping[str, float] | None = None,
        ranges: Mapping[str, tuple[float, float]] | None = None,
        fixed: Mapping[str, float] | None = None,
    ) -> HParamSpace:
        """The space of ``names`` of baseline ``optimizer``.

        ``start`` defaults to the baseline's defaults (a decay range never contains 1 and a zero
        default of a scale is replaced by the geometric middle of its range); ``ranges`` default to
        the baseline's valid ranges and must lie inside them and contain the start value.
        """
        baseline = get_baseline(optimizer)
        names = tuple(names)
        start, ranges, fixed = dict(start or {}), dict(ranges or {}), dict(fixed or {})
        valid = ", ".join(baseline.defaults)
        if not names:
            raise ConfigError(f"no hparams to tune: give at least one of {optimizer}'s hparams: {valid}.")
        for name in (*names, *start, *ranges, *fixed):
            if name not in baseline.defaults:
                raise ConfigError(f"{optimizer} has no hparam {name!r}; valid hparams are: {valid}.")
        for name in (*start, *ranges):
            if name not in names:
                raise ConfigError(
                    f"{name!r} has a start value or range but is not tuned; add it to the hparams."
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"hparams {list(names)} name one hyperparameter twice.")
        rows = []
        for name in names:
            vlo, vhi = baseline.ranges[name]
            lo, hi = (float(x) for x in ranges.get(name, (vlo, vhi)))
            if not vlo <= lo < hi <= vhi:
                raise ConfigError(
                    f"{optimizer}: range {name}=[{lo:g}, {hi:g}] must satisfy {vlo:g} <= lo < hi <= {vhi:g} "
                    f"(the valid range of {name})."
                )
            if kind(name) == "decay":
                hi = min(hi, 1.0 - DECAY_FLOOR)
            else:
                lo = max(lo, LOG_FLOOR)
            value = float(start.get(name, baseline.defaults[name]))
            if name not in start and kind(name) == "log" and value <= 0.0:
                value = math.sqrt(lo * hi)  # a default of 0 (no L2): start in the middle (log scale)
            if not lo <= value <= hi:
                raise ConfigError(
                    f"{optimizer}: the start value {name}={value:g} is outside its range [{lo:g}, {hi:g}]; "
                    f"widen the range of {name} or give a start value inside it."
                )
            rows.append((value, (lo, hi)))
        baseline.resolve(fixed)  # validates the fixed values
        return cls(
            optimizer,
            names,
            tuple(v for v, _ in rows),
            tuple(r for _, r in rows),
            tuple(sorted((k, float(v)) for k, v in fixed.items())),
        )

    # --- theta <-> hyperparameters -----------------------------------------------------------
    def bounds(self) -> dict[str, tuple[float, float]]:
        """name -> [u_lo, u_hi], the interval of theta's entry."""
        out = {}
        for name, (lo, hi) in zip(self.names, self.ranges):
            a, b = to_unconstrained(name, lo), to_unconstrained(name, hi)
            out[name] = (min(a, b), max(a, b))
        return out

    def init(self) -> dict[str, jax.Array]:
        """theta at the start values: ``{name: float32 u}``."""
        return {n: jnp.float32(to_unconstrained(n, v)) for n, v in zip(self.names, self.start)}

    def project(self, theta: Mapping[str, Any]) -> dict[str, jax.Array]:
        """theta with each entry clipped to its interval (`bounds`)."""
        return {n: jnp.clip(theta[n], *b) for n, b in self.bounds().items()}

    def values(self, theta: Mapping[str, Any]) -> dict[str, jax.Array]:
        """The tuned hyperparameters λ of ``theta`` (clipped into their ranges); differentiable."""
        return {n: from_unconstrained(n, u) for n, u in self.project(theta).items()}

    def hparams(self, theta: Mapping[str, Any]) -> dict[str, Any]:
        """Every hyperparameter ``make`` needs: the fixed ones, then `values`."""
        return {**dict(self.fixed), **self.values(theta)}

    def make(self, theta: Mapping[str, Any]) -> optax.GradientTransformationExtraArgs:
        """The baseline built with ``hparams(theta)``."""
        return get_baseline(self.optimizer).make(self.hparams(theta))

    def describe(self, theta: Mapping[str, Any]) -> dict[str, float]:
        """Concrete hyperparameter values of ``theta`` as Python floats (for logs and results.json)."""
        return {n: float(np.asarray(v)) for n, v in self.values(theta).items()}


@dataclasses.dataclass(frozen=True)
class HParamOptimizer:
    """A "learned optimizer" whose theta is a baseline's log-hyperparameters (`HParamSpace`).

    It meets the contract `lopt.unroll.Unroller` and the estimators need (``init(key) -> theta``,
    ``transform(theta) -> optax``), so ES / PES / NRES tune hyperparameters as they meta-train.
    """

    space: HParamSpace

    @property
    def name(self) -> str:
        return f"hparams({self.space.optimizer}: {', '.join(self.space.names)})"

    def init(self, key: jax.Array) -> dict[str, jax.Array]:
        del key  # deterministic: the start values
        return self.space.init()

    def transform(self, theta: Mapping[str, Any]) -> optax.GradientTransformationExtraArgs:
        return self.space.make(theta)
