"""Linear and multinomial logistic regression on small standardised tabular datasets.

Two families over the tabular datasets of `lopt.data` (features standardised, 4 splits):

- ``linear_regression`` (diabetes, 10 features): ŷ = x w + b, loss = mean((ŷ - y)^2) + λ ||w||^2
  (ridge regression; the bias is not penalised), with λ sampled log-uniformly. The minimum over
  a fixed batch has the closed form w* = (X_cᵀ X_c / N + λ I)⁻¹ X_cᵀ y_c / N, b* = ȳ - x̄ w*, where
  X_c, y_c are the centred batch.
- ``logistic_regression`` (breast_cancer, wine, iris): logits = x W + b, loss = the mean softmax
  cross-entropy of the labels (multinomial logistic regression; the binary breast_cancer task
  uses two logits), metrics loss and accuracy.

Sampled: the dataset and batch size (static; ``None`` is the full split, deterministic), an
init-scale multiplier on LeCun-normal weights and, optionally, a feature-noise level σ_x
(dynamic). With feature noise on, train batches see x + σ_x ε with ε ~ N(0, I); the other splits
are noiseless. It is off by default (``feature_noise=(0, 0)``, and then no noise is drawn at all):
on this CPU drawing one normal per batch entry costs more than the model itself (full-batch
breast_cancer: ~1.3k Adam steps/s with noise against ~22k without).

References: Hastie, Tibshirani & Friedman, "The Elements of Statistical Learning" (2009),
sections 3.4.1 (ridge regression) and 4.4 (logistic regression); datasets: Efron et al. 2004
(diabetes), Street et al. 1993 (breast cancer Wisconsin), Forina et al. (wine), Fisher 1936 (iris).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import lopt.data
from lopt.tasks import _nn
from lopt.tasks.base import Task, TaskFamily, host_rng
from lopt.validate import ConfigError, check_choice, check_interval, check_range, check_subset

# (number of features, number of outputs) of each dataset's model: outputs = 1 for regression,
# the number of classes for classification.
SHAPES: dict[str, tuple[int, int]] = {
    "diabetes": (10, 1),
    "breast_cancer": (30, 2),
    "wine": (13, 3),
    "iris": (4, 3),
}
REGRESSION_DATASETS = ("diabetes",)
CLASSIFICATION_DATASETS = ("breast_cancer", "wine", "iris")
MAX_BATCH = 100_000


def _check_batch_size(field: str, batch_size: int | None) -> None:
    if batch_size is not None:
        check_range(field, batch_size, 1, MAX_BATCH)


def _check_common(family: str, batch_sizes, init_scale, feature_noise) -> None:
    """Validation of the fields both families share."""
    if not batch_sizes:
        raise ConfigError(f"{family}.batch_sizes is empty: give at least one size (None = full split).")
    for bs in batch_sizes:
        _check_batch_size(f"{family}.batch_sizes", bs)
    check_interval(f"{family}.init_scale", init_scale, 1e-3, 100.0)
    check_interval(f"{family}.feature_noise", feature_noise, 0.0, 10.0)


def _num_params(dataset: str) -> int:
    d, c = SHAPES[dataset]
    return d * c + c


def _describe(static) -> str:
    bs = "full batch" if static.batch_size is None else f"bs{static.batch_size}"
    return f"{static.dataset}, {bs}"


def _sample_common(key, init_scale, feature_noise) -> dict:
    k_scale, k_noise = jax.random.split(key)
    return {
        "init_scale": _nn.log_uniform(k_scale, *init_scale),
        "feature_noise": jax.random.uniform(k_noise, (), jnp.float32, *feature_noise),
    }


def _affine(params: dict, x: jax.Array) -> jax.Array:
    """``x w + b``: x (B, D) -> (B, C); explicit broadcast of b (tests raise on rank promotion)."""
    return x @ params["w"] + params["b"][None, :]


def _init(key, task: Task) -> dict:
    d, c = SHAPES[task.static.dataset]
    return _nn.dense_init(key, d, c, task.dynamic["init_scale"])  # {"w": (D, C), "b": (C,)}


def _batch(key, split, task: Task) -> dict:
    """Rows of ``split`` (all of them when batch_size is None); train features get noise if it is on."""
    arrays = {"x": task.data[split]["x"], "y": task.data[split]["y"]}  # (N, D), (N,)
    k_rows, k_noise = jax.random.split(key)
    bs = task.static.batch_size
    batch = arrays if bs is None else _nn.sample_rows(k_rows, arrays, bs)  # (B, D), (B,)
    if split == "train" and task.family.feature_noise[1] > 0:  # pyright: ignore[reportAttributeAccessIssue]  # static: skipped when noise is off
        eps = jax.random.normal(k_noise, batch["x"].shape, jnp.float32)  # (B, D)
        batch = {"x": batch["x"] + task.dynamic["feature_noise"] * eps, "y": batch["y"]}
    return batch


@dataclasses.dataclass(frozen=True)
class LinearRegressionStatic:
    """Structure of one linear-regression task."""

    dataset: str  # one of REGRESSION_DATASETS
    batch_size: int | None  # rows per batch; None = the full split

    def __post_init__(self):
        check_choice("LinearRegressionStatic.dataset", self.dataset, REGRESSION_DATASETS)
        _check_batch_size("LinearRegressionStatic.batch_size", self.batch_size)


@dataclasses.dataclass(frozen=True)
class LinearRegression(TaskFamily):
    """Ridge regression: dataset and batch size static; init scale, L2 weight, feature noise dynamic."""

    name = "linear_regression"

    datasets: tuple[str, ...] = REGRESSION_DATASETS  # choices for the dataset
    batch_sizes: tuple[int | None, ...] = (16, 32, 64, None)  # choices; None = full split
    init_scale: tuple[float, float] = (0.5, 2.0)  # weight-init multiplier, log-uniform in [a, b]
    l2: tuple[float, float] = (1e-4, 1e-1)  # ridge weight λ, log-uniform in [a, b]; (0, 0) = none
    feature_noise: tuple[float, float] = (0.0, 0.0)  # train feature-noise σ_x ~ U(a, b); (0, 0) = off

    def __post_init__(self):
        check_subset("LinearRegression.datasets", self.datasets, REGRESSION_DATASETS)
        _check_common("LinearRegression", self.batch_sizes, self.init_scale, self.feature_noise)
        if self.l2 != (0.0, 0.0):
            check_interval("LinearRegression.l2", self.l2, 1e-8, 10.0)

    def sample_static(self, key):
        rng = host_rng(key)
        bs = self.batch_sizes[rng.integers(len(self.batch_sizes))]
        return LinearRegressionStatic(dataset=str(rng.choice(self.datasets)), batch_size=bs)

    def sample_dynamic(self, key, static):
        k_common, k_l2 = jax.random.split(key)
        dynamic = _sample_common(k_common, self.init_scale, self.feature_noise)
        if self.l2 == (0.0, 0.0):
            dynamic["l2"] = jnp.zeros((), jnp.float32)
        else:
            dynamic["l2"] = _nn.log_uniform(k_l2, *self.l2)
        return dynamic

    def static_extremes(self):
        # Parameter count does not depend on the batch size.
        ds = sorted(self.datasets, key=_num_params)
        small = LinearRegressionStatic(ds[0], self.batch_sizes[0])
        return small, LinearRegressionStatic(ds[-1], self.batch_sizes[-1])

    def describe(self, static):
        return _describe(static)

    def load_data(self, static):
        return lopt.data.device_arrays(static.dataset)

    def init(self, key, task: Task):
        return _init(key, task)

    def batch(self, key, split, task: Task):
        return _batch(key, split, task)

    def loss(self, params, key, batch, task: Task):
        return self.metrics(params, key, batch, task)["loss"]

    def metrics(self, params, key, batch, task: Task):
        pred = _affine(params, batch["x"])[:, 0]  # (B,)
        mse = jnp.mean((pred - batch["y"]) ** 2)
        return {"loss": mse + task.dynamic["l2"] * jnp.sum(params["w"] ** 2), "mse": mse}


@dataclasses.dataclass(frozen=True)
class LogisticRegressionStatic:
    """Structure of one logistic-regression task."""

    dataset: str  # one of CLASSIFICATION_DATASETS
    batch_size: int | None  # rows per batch; None = the full split

    def __post_init__(self):
        check_choice("LogisticRegressionStatic.dataset", self.dataset, CLASSIFICATION_DATASETS)
        _check_batch_size("LogisticRegressionStatic.batch_size", self.batch_size)


@dataclasses.dataclass(frozen=True)
class LogisticRegression(TaskFamily):
    """Multinomial logistic regression: dataset and batch size static; init scale, feature noise dynamic."""

    name = "logistic_regression"

    datasets: tuple[str, ...] = CLASSIFICATION_DATASETS  # choices for the dataset
    batch_sizes: tuple[int | None, ...] = (16, 32, 64, None)  # choices; None = full split
    init_scale: tuple[float, float] = (0.5, 2.0)  # weight-init multiplier, log-uniform in [a, b]
    feature_noise: tuple[float, float] = (0.0, 0.0)  # train feature-noise σ_x ~ U(a, b); (0, 0) = off

    def __post_init__(self):
        check_subset("LogisticRegression.datasets", self.datasets, CLASSIFICATION_DATASETS)
        _check_common("LogisticRegression", self.batch_sizes, self.init_scale, self.feature_noise)

    def sample_static(self, key):
        rng = host_rng(key)
        bs = self.batch_sizes[rng.integers(len(self.batch_sizes))]
        return LogisticRegressionStatic(dataset=str(rng.choice(self.datasets)), batch_size=bs)

    def sample_dynamic(self, key, static):
        return _sample_common(key, self.init_scale, self.feature_noise)

    def static_extremes(self):
        ds = sorted(self.datasets, key=_num_params)
        small = LogisticRegressionStatic(ds[0], self.batch_sizes[0])
        return small, LogisticRegressionStatic(ds[-1], self.batch_sizes[-1])

    def describe(self, static):
        return _describe(static)

    def load_data(self, static):
        return lopt.data.device_arrays(static.dataset)

    def init(self, key, task: Task):
        return _init(key, task)

    def batch(self, key, split, task: Task):
        return _batch(key, split, task)

    def loss(self, params, key, batch, task: Task):
        logits = _affine(params, batch["x"])  # (B, C)
        return _nn.softmax_cross_entropy(logits, batch["y"])

    def metrics(self, params, key, batch, task: Task):
        logits = _affine(params, batch["x"])  # (B, C)
        return {
            "loss": _nn.softmax_cross_entropy(logits, batch["y"]),
            "accuracy": _nn.accuracy(logits, batch["y"]),
        }
