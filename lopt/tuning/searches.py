"""Searches: C trials of one optimizer constructor, run together on a task (`lopt.tuning`).

AdamLR (`lr_search`: 15 log-spaced learning rates), Adam8p (`adam8p_search`: TaskSet's random
search), one fixed setting (`fixed_search`). The ordered NAdamW list is in `lopt.tuning.nadamw`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from lopt.optimizers import get_baseline, lookahead
from lopt.validate import ConfigError, check_range

ADAM_LR_GRID = np.logspace(-5, 0, 15).astype(np.float32)  # AdamLR: 15 log-spaced rates in [1e-5, 1]

# TaskSet's Adam8p space (Metz et al. 2020, arXiv:2002.11887), log-uniform in each; the learning
# rate is narrowed from [1e-8, 10] to a sane [1e-5, 1]. Decays are per step at TaskSet's 10k steps
# and are rescaled to the run's horizon (`adam8p_search`).
ADAM8P_SPACE = {
    "learning_rate": (1e-5, 1.0),
    "one_minus_b1": (1e-4, 1.0),
    "one_minus_b2": (1e-6, 1.0),
    "eps": (1e-10, 1e3),
    "l1": (1e-8, 10.0),
    "l2": (1e-8, 10.0),
    "linear_decay": (1e-7, 1e-4),
    "exponential_decay": (1e-6, 1e-3),
}
TASKSET_STEPS = 10_000


@dataclasses.dataclass(frozen=True, eq=False)
class Search:
    """C trials of one optimizer constructor, run together on a task.

    Attributes:
      name: identifies the constructor and space in tables and cache keys, e.g. ``adam/lr15``.
      make: hparams -> optax transformation; hashable (a static jit argument), e.g. a
        `BaselineMaker`, ``get_baseline("adam").make`` or a learned optimizer's ``transform``.
      trials: a pytree of arrays with a leading axis C (for baselines, a dict name -> (C,)).
    """

    name: str
    make: Callable[[Any], optax.GradientTransformation]
    trials: Any

    @property
    def num_trials(self) -> int:
        return int(jax.tree.leaves(self.trials)[0].shape[0])

    def describe(self, i: int) -> dict[str, float]:
        """Trial ``i`` as a flat dict of numbers (``{"trial": i}`` when hparams are not scalars)."""
        if isinstance(self.trials, dict) and all(np.ndim(v) == 1 for v in self.trials.values()):
            return {k: float(np.asarray(v)[i]) for k, v in self.trials.items()}
        return {"trial": i}


@dataclasses.dataclass(frozen=True)
class BaselineMaker:
    """``make(hparams)`` of a registered baseline, optionally inside `lookahead` (k, alpha).

    Hashable by value, so equal makers share compiled programs across tasks and runs."""

    baseline: str
    lookahead_k: int = 0  # 0: no Lookahead; else sync every k steps
    lookahead_alpha: float = 0.5  # Lookahead's slow-weight step size

    def __call__(self, hparams):
        opt = get_baseline(self.baseline).make(hparams)
        return lookahead(opt, self.lookahead_k, self.lookahead_alpha) if self.lookahead_k else opt

    @property
    def label(self) -> str:
        if not self.lookahead_k:
            return self.baseline
        return f"lookahead({self.baseline},k={self.lookahead_k},alpha={self.lookahead_alpha:g})"


@dataclasses.dataclass(frozen=True)
class _Constant:
    """``make`` that ignores its hparams and returns one fixed optimizer (hashable by identity)."""

    optimizer: Any

    def __call__(self, hparams):
        return self.optimizer


def lr_search(
    baseline: str = "adam",
    grid: Sequence[float] = ADAM_LR_GRID,
    lookahead_k: int = 0,
    lookahead_alpha: float = 0.5,
) -> Search:
    """A learning-rate grid for a registered baseline (other hparams at their defaults)."""
    get_baseline(baseline)  # unknown names raise, listing the valid ones
    rates = np.asarray(grid, np.float32)
    for lr in rates:
        get_baseline(baseline).resolve({"learning_rate": float(lr)})  # out-of-range rates raise
    make = BaselineMaker(baseline, lookahead_k, lookahead_alpha)
    return Search(
        f"{make.label}/lr{len(rates)}[{rates[0]:.3g},{rates[-1]:.3g}]", make, {"learning_rate": rates}
    )


def fixed_search(
    name: str,
    optimizer: optax.GradientTransformation | None = None,
    *,
    make: Callable | None = None,
    hparams: Any = None,
) -> Search:
    """One trial: a plain optax ``optimizer``, or ``make(hparams)`` (e.g. a learned optimizer's
    ``transform`` with ``theta``), to compare without tuning. With both ``optimizer`` and
    ``hparams``, the optimizer runs and ``hparams`` is its recorded trial (the theta it was built
    from: part of the cache key)."""
    if optimizer is not None and hparams is None:
        return Search(name, _Constant(optimizer), {"_": np.zeros((1,), np.float32)})
    if optimizer is not None:
        return Search(name, _Constant(optimizer), jax.tree.map(lambda x: np.asarray(x)[None], hparams))
    if make is None:
        raise ConfigError(f"fixed_search({name!r}) needs an optimizer, or make= and hparams=.")
    return Search(name, make, jax.tree.map(lambda x: np.asarray(x)[None], hparams))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def adam8p_search(num_trials: int = 10, num_steps: int = TASKSET_STEPS, seed: int = 0) -> Search:
    """Random search over TaskSet's 8 Adam hparams (`ADAM8P_SPACE`), ``num_trials`` samples.

    TaskSet's decays act on a step count rescaled to 10k steps (t' = t · 10000 / T), so they are
    multiplied by 10000 / ``num_steps`` here: the decay reached at the end of training is the same.
    """
    check_range("adam8p_search num_trials", num_trials, 1, 100_000)
    rng = np.random.default_rng(seed)
    u = {k: _log_uniform(rng, lo, hi, num_trials) for k, (lo, hi) in ADAM8P_SPACE.items()}
    scale = TASKSET_STEPS / num_steps
    trials = {
        "learning_rate": u["learning_rate"],
        "b1": 1.0 - u["one_minus_b1"],
        "b2": 1.0 - u["one_minus_b2"],
        "eps": u["eps"],
        "l1": u["l1"],
        "l2": u["l2"],
        "linear_decay": np.minimum(u["linear_decay"] * scale, 1.0),
        "exponential_decay": np.minimum(u["exponential_decay"] * scale, 1.0),
    }
    trials = {k: v.astype(np.float32) for k, v in trials.items()}
    return Search(f"adam8p/random{num_trials}(seed={seed},T={num_steps})", BaselineMaker("adam8p"), trials)
