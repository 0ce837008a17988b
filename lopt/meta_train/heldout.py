"""`HeldOutEval`: a theta's optimizer on a few held-out tasks, beside Adam at lr 1e-3."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from lopt.config import MetaTrainConfig
from lopt.evaluate import evaluate, evaluate_learned
from lopt.optimizers.learned import LearnedOptimizer
from lopt.tasks.registry import get_family
from lopt.tasks.suites import get_suite

PyTree = Any


class HeldOutEval:
    """Final test loss of a theta's optimizer on a few tasks, beside Adam at lr 1e-3 on the same
    tasks, seeds and batches (Adam is run once and cached): a study's measurement (the demo, the
    self-training study), not part of meta-training, which chooses on `lopt.validation` only.

    ``suite="same"`` draws ``num_tasks`` fresh tasks from ``cfg``'s training distribution (its own
    key); a suite name takes the smallest task of each of its families.
    """

    def __init__(
        self,
        cfg: MetaTrainConfig,
        learned: LearnedOptimizer,
        *,
        suite: str = "same",
        num_tasks: int = 2,
        steps: int = 1000,
        seeds: int = 2,
    ):
        self.learned = learned  # evaluated with evaluate_learned (theta a constant, as lopt.pretrained)
        self.steps, self.seeds = steps, seeds
        self.key = jax.random.fold_in(jax.random.key(cfg.seed), 3)  # not the run's key: evals change nothing
        if suite == "same":
            keys = jax.random.split(jax.random.fold_in(self.key, 0), num_tasks)
            if cfg.family:
                family = get_family(cfg.family, **cfg.family_space())
                self.tasks = [family.task(family.sample(k)) for k in keys]
            else:
                self.tasks = [f.task(c) for f, c in (get_suite(cfg.suite).sample(k) for k in keys)]
        else:  # one task per family of the suite, the smallest ones (evaluation is not free)
            tasks = get_suite(suite).tasks(per_family=1, seed=cfg.seed)
            self.tasks = sorted(tasks, key=lambda t: t.num_params())[:num_tasks]
        self.names = [t.name for t in self.tasks]
        self._adam_losses: np.ndarray | None = None

    def _options(self) -> dict:
        return {
            "num_steps": self.steps,
            "num_seeds": self.seeds,
            "eval_every": self.steps,
            "eval_splits": ("test",),
        }

    def losses(self, theta: PyTree) -> np.ndarray:
        """(tasks,) final test loss with ``theta``, mean over seeds (NaN where training diverged)."""
        curves = [evaluate_learned(self.key, t, self.learned, theta, **self._options()) for t in self.tasks]
        return np.array([np.mean(np.asarray(c.eval["test"]["loss"])[:, -1]) for c in curves])

    def adam_losses(self) -> np.ndarray:
        """(tasks,) the same for Adam at learning rate 1e-3."""
        if self._adam_losses is None:
            curves = [evaluate(self.key, t, _ADAM, **self._options()) for t in self.tasks]
            self._adam_losses = np.array([np.mean(np.asarray(c.eval["test"]["loss"])[:, -1]) for c in curves])
        return self._adam_losses

    def __call__(self, theta: PyTree) -> dict[str, Any]:
        """The ``eval/*`` metrics: per-task test losses of theta and of Adam, the fraction of tasks
        where theta wins, and the mean log ratio of the losses (negative: theta is better)."""
        mine, adam = self.losses(theta), self.adam_losses()
        return {
            "eval/test_loss": mine,
            "eval/adam_test_loss": adam,
            "eval/win_frac": float(np.mean(mine < adam)),  # NaN (diverged) never wins
            "eval/log_ratio_vs_adam": float(np.mean(np.log(mine / adam))),
        }


_ADAM = optax.adam(1e-3)
