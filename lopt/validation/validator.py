r"""Score a theta on a validation suite against its stored Adam references.

For each task t, L_t is the theta's final outer-valid loss (median over the suite's seeds; a
diverged seed makes it +inf), and the references give L_init (step 0), L_pt (AdamLR per task) and
L_gl (AdamLR global). The scores:

.. math::
    n_t = \operatorname{clip}\Big(\frac{L_t - L_\text{pt}}{L_\text{init} - L_\text{pt}},\ -1,\ 2\Big),
    \qquad \text{score} = \frac{1}{T}\sum_t n_t

0 is per-task-tuned Adam's level, 1 no progress from the initialization, 2 diverged (or worse),
negative better than tuned Adam. ``median`` is the median of n_t: the typical task, blind to the
one or two tasks whose final loss is chaotic in theta (a VAE's n_t moves by 0.01-0.3 between
neighbouring checkpoints; ``lopt meta-train --select-by median`` keeps the best theta by it).
``wins_global`` / ``wins_per_task`` count the tasks where L_t is
below L_gl / L_pt. Lower scores are better; a run keeps the theta with the lowest score.

    validator = Validator(get_validation_suite("valid"), learned)
    metrics = validator(theta)                 # {"valid/score": ..., "valid/wins_global": ..., ...}
    metrics = validator(theta, long=True)      # also "valid_long/*" at long_factor x T
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from lopt.validation.references import references
from lopt.validation.runs import final_losses
from lopt.validation.suite import ValidationSuite

SCORE_CLIP = (-1.0, 2.0)


def normalized(loss: np.ndarray, per_task: np.ndarray, init: np.ndarray) -> np.ndarray:
    """n_t of the module docstring (non-finite L: the upper clip)."""
    loss, per_task, init = (np.asarray(x, np.float64) for x in (loss, per_task, init))
    gap = np.maximum(init - per_task, 1e-8 * np.maximum(1.0, np.abs(init)))
    with np.errstate(invalid="ignore", over="ignore"):
        n = (loss - per_task) / gap
    return np.where(np.isfinite(n), np.clip(n, *SCORE_CLIP), SCORE_CLIP[1])


def score(losses: np.ndarray, refs: dict[str, Any], prefix: str = "valid") -> dict[str, Any]:
    """The metrics of final losses (T,) against the references of the same tasks."""
    rows = refs["tasks"]
    pt = np.array([r["per_task"]["loss"] for r in rows])
    gl = np.array([r["global"]["loss"] for r in rows])
    init = np.array([r["init"] for r in rows])
    n = normalized(losses, pt, init)
    finite = np.isfinite(losses)
    return {
        f"{prefix}/score": float(np.mean(n)),
        f"{prefix}/median": float(np.median(n)),
        f"{prefix}/wins_global": int(np.sum(finite & (losses < gl))),
        f"{prefix}/wins_per_task": int(np.sum(finite & (losses < pt))),
        f"{prefix}/tasks": len(rows),
        f"{prefix}/diverged": int(np.sum(~finite)),
        f"{prefix}/norm": n,
        f"{prefix}/loss": losses,
        f"{prefix}/global_score": float(np.mean(normalized(gl, pt, init))),  # AdamLR-global's own score
    }


@functools.cache
def _transform_of(learned):
    """``learned.transform``, one object per architecture: validations compile once per task."""
    return learned.transform


class Validator:
    """Validation of a learned optimizer's theta (unperturbed: full runs with fixed seeds).

    The tasks and references are built at the first call (references may take minutes on a new
    machine; then they are cached). Compiled programs are reused across calls.
    """

    def __init__(self, suite: ValidationSuite, learned: Any, *, cache: str | None = None, console=None):
        self.suite, self.learned, self.cache, self.console = suite, learned, cache, console
        self._tasks: list | None = None
        self._refs: dict[bool, dict] = {}

    @property
    def tasks(self) -> list:
        if self._tasks is None:
            self._tasks = self.suite.tasks()
        return self._tasks

    def task_list(self, long: bool) -> tuple[list, int]:
        return (
            (self.suite.long(self.tasks), self.suite.long_steps) if long else (self.tasks, self.suite.steps)
        )

    def references(self, long: bool = False) -> dict[str, Any]:
        if long not in self._refs:
            tasks, steps = self.task_list(long)
            if self.console is not None:
                self.console.print(
                    f"validation references ({self.suite.name}, {len(tasks)} tasks, T={steps}) ..."
                )
            self._refs[long] = references(self.suite, tasks, steps, cache=self.cache)
        return self._refs[long]

    def losses(self, theta: Any, long: bool = False) -> np.ndarray:
        """(T,) final outer-valid loss of theta per task, median over seeds (+inf if a seed diverged)."""
        tasks, steps = self.task_list(long)
        theta1 = jax.tree.map(lambda x: x[None], theta)  # one trial: the constructor stays static
        out = []
        for task in tasks:
            final, _, diverged = final_losses(
                task, _transform_of(self.learned), theta1, steps=steps, seeds=self.suite.seeds
            )
            final = np.where(diverged | ~np.isfinite(final), np.inf, final)[0]
            out.append(float(np.median(final)))
        return np.asarray(out)

    def __call__(self, theta: Any, long: bool = False) -> dict[str, Any]:
        """``valid/*`` metrics of theta at T (and ``valid_long/*`` at long_factor x T with ``long``)."""
        metrics = score(self.losses(theta), self.references())
        if long and self.suite.long_tasks:
            metrics.update(score(self.losses(theta, long=True), self.references(long=True), "valid_long"))
        return metrics

    def names(self, long: bool = False) -> list[str]:
        return [t.name for t in self.task_list(long)[0]]
