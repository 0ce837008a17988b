"""Hand-designed baseline optimizers: optax transformations with a small, vmappable hparams dict.

    opt = BASELINES["adam"].make({"learning_rate": 3e-4})     # an optax.GradientTransformationExtraArgs
    opts = jax.vmap(lambda lr: ...BASELINES["adam"].make({"learning_rate": lr})...)  # lr may be traced

Every entry is optax's own optimizer (`optax.adam`, `optax.sgd(momentum=...)`, ...), except
``adam8p`` which is assembled from optax pieces with `optax.chain`. Each `Baseline` carries the
defaults of its numeric hyperparameters, their valid ranges (used to validate concrete values and
as tuning search bounds) and one constructor, `Baseline.make(hparams)`, shared by every entry.

Conventions in the update rules below: g_t is the gradient at step t = 0, 1, ..., θ the params,
η the learning rate; every update is a delta u_t with θ_{t+1} = θ_t + u_t.

References: Kingma & Ba 2015 (Adam); Loshchilov & Hutter 2019 (AdamW); Dozat 2016 (NAdam);
Tieleman & Hinton 2012 (RMSProp); Duchi et al. 2011 (Adagrad); Shazeer & Stern 2018 (Adafactor);
Sutskever et al. 2013 (momentum, Nesterov); Metz et al. 2020, arXiv:2002.11887 (TaskSet, Adam8p).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from lopt.optimizers.composed import (
    NADAMW_KEYS,
    adam8p,
    adam8p_schedule,
    adam_cosine,
    bind_num_steps,
    nadamw_cosine,
    nadamw_schedule,
)
from lopt.validate import ConfigError, check_range, unknown_name

__all__ = [
    "BASELINES",
    "Baseline",
    "get_baseline",
    # assembled from optax pieces (`lopt.optimizers.composed`), defined here before
    "NADAMW_KEYS",
    "adam8p",
    "adam8p_schedule",
    "adam_cosine",
    "bind_num_steps",
    "nadamw_cosine",
    "nadamw_schedule",
]

# Why each range is what it is: appended to the out-of-range error.
_WHY = {
    "learning_rate": "the step size must be positive; above 10 it diverges on any sanely scaled problem",
    "momentum": "a decay rate of the velocity; 1 or more never forgets and diverges",
    "b1": "a decay rate of the first moment; at 1 the bias correction 1 - b1^t would divide by 0",
    "b2": "a decay rate of the second moment; at 1 the bias correction 1 - b2^t would divide by 0",
    "eps": "the denominator's stabilizer must be positive, or a zero gradient gives 0/0",
    "decay": "a decay rate of the squared-gradient average; 1 would never update it",
    "weight_decay": "decoupled decay scales the params by (1 - η·wd) each step; it must be >= 0 and small",
    "initial_accumulator_value": "the initial sum of squared gradients must be >= 0",
    "decay_rate": "the second-moment decay is 1 - t^(-decay_rate), which needs decay_rate in [0, 1]",
    "warmup": "the fraction of the run with a linear warmup of the learning rate, in [0, 1]",
    "final": "the learning rate at the end of the run relative to the peak, in [0, 1]",
    "clipping_threshold": "the update's block RMS is clipped to this; it must be positive",
    "l1": "an L1 penalty weight must be >= 0",
    "l2": "an L2 penalty weight must be >= 0",
    "linear_decay": "the learning rate is scaled by max(0, 1 - linear_decay·t); at 1 it is zero after a step",
    "exponential_decay": "the learning rate is scaled by exp(-exponential_decay·t); >= 0",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Baseline:
    """A hand-designed optimizer: hparam defaults, valid ranges and one constructor.

    Attributes:
      name: the registry key.
      defaults: hparam name -> default value; `make` accepts exactly these keys.
      ranges: hparam name -> (lo, hi), inclusive. Concrete values outside raise `ConfigError`;
        a tuner may sample inside them (log-uniformly for scales, in 1 - β for decay rates).
      doc: one line.
      build: the optax constructor, called with every hparam as a keyword argument.
    """

    name: str
    defaults: dict[str, float]
    ranges: dict[str, tuple[float, float]]
    doc: str
    build: Callable[..., optax.GradientTransformation]

    def resolve(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``defaults`` updated with ``hparams``; unknown keys and out-of-range concrete values raise.

        Values may be traced JAX scalars (under `jax.vmap` / `jax.jit`); those are not validated.
        """
        hparams = dict(hparams or {})
        for key in hparams:
            if key not in self.defaults:
                raise ConfigError(
                    f"{self.name} has no hparam {key!r}; valid hparams are: {', '.join(self.defaults)}."
                )
        resolved = {**self.defaults, **hparams}
        for key, value in hparams.items():
            _check_value(self.name, key, value, self.ranges[key])
        return resolved

    def make(self, hparams: Mapping[str, Any] | None = None) -> optax.GradientTransformationExtraArgs:
        """The optimizer with ``hparams`` (merged over `defaults`); its update ignores extra kwargs."""
        return optax.with_extra_args_support(self.build(**self.resolve(hparams)))


def _check_value(baseline: str, key: str, value: Any, bounds: tuple[float, float]) -> None:
    """Validate one concrete hparam value; tracers pass through unchecked."""
    if isinstance(value, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 -- anything numpy cannot read is not a number
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{baseline}: hparam {key}={value!r} is not a number.")
    if array.ndim != 0:
        raise ConfigError(
            f"{baseline}: hparam {key} must be a scalar, got shape {array.shape}; "
            "to run several values, vmap over make()."
        )
    try:
        check_range(key, float(array), *bounds)
    except ConfigError as err:
        why = _WHY.get(key, "see Baseline.ranges")
        raise ConfigError(f"{baseline}: {str(err).rstrip('.')} ({why}).") from None


# --- the registry ---------------------------------------------------------------------------------

_LR = (1e-8, 10.0)
_BETA1 = (0.0, 0.9999)
_BETA2 = (0.0, 0.999999)
_EPS = (1e-10, 1e3)
_ADAM_DEFAULTS = {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
_ADAM_RANGES = {"learning_rate": _LR, "b1": _BETA1, "b2": _BETA2, "eps": _EPS}
_WD = (0.0, 1.0)

BASELINES: dict[str, Baseline] = {
    # u_t = −η g_t
    "sgd": Baseline(
        "sgd",
        {"learning_rate": 1e-2},
        {"learning_rate": _LR},
        "Plain gradient descent: u = −η g.",
        lambda learning_rate: optax.sgd(learning_rate),
    ),
    # v_t = μ v_{t−1} + g_t;  u_t = −η v_t
    "momentum": Baseline(
        "momentum",
        {"learning_rate": 1e-2, "momentum": 0.9},
        {"learning_rate": _LR, "momentum": _BETA1},
        "Heavy-ball momentum: v = μ v + g, u = −η v.",
        lambda learning_rate, momentum: optax.sgd(learning_rate, momentum=momentum),
    ),
    # v_t = μ v_{t−1} + g_t;  u_t = −η (g_t + μ v_t)
    "nesterov": Baseline(
        "nesterov",
        {"learning_rate": 1e-2, "momentum": 0.9},
        {"learning_rate": _LR, "momentum": _BETA1},
        "Nesterov momentum: v = μ v + g, u = −η (g + μ v).",
        lambda learning_rate, momentum: optax.sgd(learning_rate, momentum=momentum, nesterov=True),
    ),
    # m̂ = m_t/(1−β1^{t+1}), v̂ = v_t/(1−β2^{t+1});  u_t = −η m̂ / (√v̂ + ε)
    "adam": Baseline(
        "adam",
        dict(_ADAM_DEFAULTS),
        dict(_ADAM_RANGES),
        "Adam: u = −η m̂ / (√v̂ + ε) with bias-corrected moment estimates.",
        lambda learning_rate, b1, b2, eps: optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
    ),
    # u_t = −η s((t+1)/T) m̂ / (√v̂ + ε), s: linear warmup then cosine decay over the run's T steps
    "adam_cosine": Baseline(
        "adam_cosine",
        {**_ADAM_DEFAULTS, "warmup": 0.05, "final": 0.0},
        {**_ADAM_RANGES, "warmup": (0.0, 1.0), "final": (0.0, 1.0)},
        "Adam with linear warmup and cosine decay over the run (needs update(..., num_steps=T)).",
        adam_cosine,
    ),
    # u_t = −η (m̂ / (√v̂ + ε) + wd θ_t)
    "adamw": Baseline(
        "adamw",
        {**_ADAM_DEFAULTS, "weight_decay": 1e-4},
        {**_ADAM_RANGES, "weight_decay": _WD},
        "AdamW: Adam plus decoupled weight decay, u = −η (m̂ / (√v̂ + ε) + wd θ).",
        lambda learning_rate, b1, b2, eps, weight_decay: optax.adamw(
            learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
        ),
    ),
    # m̄ = β1 m̂ + (1−β1) g_t / (1−β1^{t+1});  u_t = −η (m̄ / (√v̂ + ε) + wd θ_t)
    "nadamw": Baseline(
        "nadamw",
        {**_ADAM_DEFAULTS, "weight_decay": 1e-4},
        {**_ADAM_RANGES, "weight_decay": _WD},
        "NAdamW: Adam with a Nesterov look-ahead first moment and decoupled weight decay.",
        lambda learning_rate, b1, b2, eps, weight_decay: optax.nadamw(
            learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
        ),
    ),
    # s_t = ρ s_{t−1} + (1−ρ) g_t²;  u_t = −η g_t / √(s_t + ε)
    "rmsprop": Baseline(
        "rmsprop",
        {"learning_rate": 1e-3, "decay": 0.9, "eps": 1e-8},
        {"learning_rate": _LR, "decay": _BETA2, "eps": _EPS},
        "RMSProp: u = −η g / √(ρ s + (1−ρ) g² + ε).",
        lambda learning_rate, decay, eps: optax.rmsprop(learning_rate, decay=decay, eps=eps),
    ),
    # s_t = s_{t−1} + g_t², s_{−1} = initial_accumulator_value;  u_t = −η g_t / √(s_t + ε)
    "adagrad": Baseline(
        "adagrad",
        {"learning_rate": 1e-2, "initial_accumulator_value": 0.1, "eps": 1e-7},
        {"learning_rate": _LR, "initial_accumulator_value": (0.0, 10.0), "eps": _EPS},
        "Adagrad: u = −η g / √(Σ g² + ε), the sum starting at initial_accumulator_value.",
        lambda learning_rate, initial_accumulator_value, eps: optax.adagrad(
            learning_rate, initial_accumulator_value=initial_accumulator_value, eps=eps
        ),
    ),
    # β̂2_t = 1 − (t+1)^(−decay_rate); v from factored row/column RMS of g² + eps;
    # û = clip_block_rms(g / √v, clipping_threshold);  u_t = −η · max(RMS(θ), 1e-3) · û
    "adafactor": Baseline(
        "adafactor",
        {"learning_rate": 1e-2, "decay_rate": 0.8, "clipping_threshold": 1.0, "eps": 1e-30},
        {
            "learning_rate": _LR,
            "decay_rate": (0.0, 1.0),
            "clipping_threshold": (1e-3, 1e3),
            "eps": (1e-35, 1.0),
        },
        "Adafactor: factored second moments, update clipping, step relative to the params' RMS.",
        lambda learning_rate, decay_rate, clipping_threshold, eps: optax.adafactor(
            learning_rate, decay_rate=decay_rate, clipping_threshold=clipping_threshold, eps=eps
        ),
    ),
    # see `adam8p`
    "adam8p": Baseline(
        "adam8p",
        {**_ADAM_DEFAULTS, "l1": 0.0, "l2": 0.0, "linear_decay": 0.0, "exponential_decay": 0.0},
        {
            **_ADAM_RANGES,
            "l1": (0.0, 10.0),
            "l2": (0.0, 10.0),
            "linear_decay": (0.0, 1.0),
            "exponential_decay": (0.0, 1.0),
        },
        "TaskSet's 8-hparam Adam: L1/L2 terms on the gradient, linear and exponential lr decay.",
        adam8p,
    ),
}


def get_baseline(name: str) -> Baseline:
    """The baseline registered as ``name``; an unknown name raises listing the valid ones."""
    if name not in BASELINES:
        raise unknown_name("baseline optimizer", name, BASELINES)
    return BASELINES[name]
