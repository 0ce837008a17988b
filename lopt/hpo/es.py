r"""Hyperparameter hypergradients by the meta-training engine's ES / PES / NRES estimators.

No estimator is written here: `lopt.estimators` estimates the gradient of a meta-loss with
respect to a learned optimizer's theta, and `HParamOptimizer` is a learned optimizer whose theta
is a baseline's log-hyperparameters, so

    est = hparam_estimator("pes", space, FixedTask(family, seed=0), static, num_particles=8,
                           truncation_length=50, horizon=(1000, 1000))
    state = est.init(key_init, theta, {"sigma": 0.1})
    grad, state, metrics = est.estimate(key, theta, state, {"sigma": 0.1})

is PES on the hyperparameters: antithetic perturbations θ ± ε of the log-hyperparameters, each
particle one training run of the task, the gradient of the Gaussian-smoothed meta-loss estimated
from loss differences (no backward pass through the inner run; unbiased over truncations for PES
and NRES). The meta-loss is the engine's: the outer-valid loss relative to its value at
initialization, averaged over the episode's steps with the ``step_weights`` of `lopt.unroll`
("final": the last quarter, close to the final-loss criterion of a grid search).

`FixedTask` pins the family's dynamic values to one task, so the particles tune *this* task
(different batches, same data, init and task values); without it they would tune the static
group's distribution of tasks.

References: Vicol, Metz, Sohl-Dickstein 2021 (PES); Li et al. 2023 (NRES); Salimans et al. 2017 (ES).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from lopt.estimators.base import GradientEstimator
from lopt.estimators.registry import ESTIMATORS, get_estimator
from lopt.hpo.space import HParamOptimizer, HParamSpace
from lopt.tasks.base import TaskFamily
from lopt.validate import ConfigError

ES_METHODS = ("es", "pes", "nres")  # the estimators that need no gradient of the inner run


@dataclasses.dataclass(frozen=True)
class FixedTask(TaskFamily):
    """``family`` with its dynamic values pinned to those sampled from ``seed``: a one-task family.

    Every other method and attribute (``describe``, ``load_data``, sampling-space fields that the
    family's functions read) is the wrapped family's."""

    name: ClassVar[str] = "fixed"

    family: TaskFamily  # the wrapped family
    seed: int = 0  # dynamic values: ``family.sample_dynamic(jax.random.key(seed), static)``

    def __getattr__(self, attr: str) -> Any:  # fields of the wrapped family's space (e.g. feature_noise)
        if attr == "family":
            raise AttributeError(attr)
        return getattr(self.family, attr)

    def sample_static(self, key):
        return self.family.sample_static(key)

    def sample_dynamic(self, key, static):
        del key
        return self.family.sample_dynamic(jax.random.key(self.seed), static)

    def static_extremes(self):
        return self.family.static_extremes()

    def describe(self, static):
        return self.family.describe(static)

    def load_data(self, static):
        return self.family.load_data(static)

    def init(self, key, task):
        return self.family.init(key, task)

    def batch(self, key, split, task):
        return self.family.batch(key, split, task)

    def loss(self, params, key, batch, task):
        return self.family.loss(params, key, batch, task)

    def metrics(self, params, key, batch, task):
        return self.family.metrics(params, key, batch, task)


def hparam_estimator(
    method: str, space: HParamSpace, family: TaskFamily, static: Any, **fields: Any
) -> GradientEstimator:
    """The estimator ``method`` (one of `ES_METHODS`) with theta = ``space``'s log-hyperparameters;
    ``fields`` are `GradientEstimator` fields (num_particles, truncation_length, horizon, ...)."""
    if method not in ES_METHODS:
        valid = ", ".join(ES_METHODS)
        raise ConfigError(
            f"method {method!r} is not an ES estimator ({valid}; registered: {', '.join(ESTIMATORS)})."
        )
    return get_estimator(method, learned=HParamOptimizer(space), family=family, static=static, **fields)
