"""Validation suites: fixed tasks drawn from a meta-training suite, on which runs and checkpoints
are chosen (never the held-out ``test`` suite, never a test split).

A validation suite fixes, from its seed: ``per_family`` tasks of every family of a training suite
(the smallest ``per_family`` of ``draws`` sampled configurations with distinct names, so that a
validation costs minutes, not hours), the horizon T = ``steps``, the seeds, and a subset of
``long_tasks`` tasks (the cheapest, of distinct families) run at ``long_factor`` x T, where the
short-horizon bias shows.
"""

from __future__ import annotations

import dataclasses

from lopt.tasks.base import Task
from lopt.tasks.suites import get_suite
from lopt.validate import ConfigError, check_range, unknown_name

HELD_OUT = "test"  # the held-out suite: never a validation suite's source


@dataclasses.dataclass(frozen=True)
class ValidationSuite:
    """Fixed validation tasks from the families of the training suite ``suite``."""

    name: str
    description: str
    suite: str = "train_nn"  # the training suite whose families (and sampling spaces) it draws from
    per_family: int = 2  # tasks kept per family
    draws: int = 4  # configurations sampled per family; the per_family smallest (distinct names) are kept
    seed: int = 1234  # seed of the draws (not any meta-training run's seed)
    steps: int = 1000  # T: training steps of a validation run (the evaluation horizon)
    seeds: int = 2  # seeds per task (the score uses the median)
    long_tasks: int = 3  # tasks also run at long_factor x T
    long_factor: int = 10  # the long subset's horizon, in units of T
    families: tuple[str, ...] = ()  # restrict to these family names (empty: every family of the suite)

    def __post_init__(self):
        if self.suite == HELD_OUT:
            raise ConfigError(
                f"validation suite {self.name!r} draws from {HELD_OUT!r}, the held-out suite: "
                "choose a training suite (train_nn or train)."
            )
        get_suite(self.suite)
        check_range("per_family", self.per_family, 1, 100)
        check_range("draws", self.draws, self.per_family, 1000)
        check_range("steps", self.steps, 1, 10_000_000)
        check_range("seeds", self.seeds, 1, 1000)
        check_range("long_tasks", self.long_tasks, 0, 1000)
        check_range("long_factor", self.long_factor, 1, 1000)

    def tasks(self) -> list[Task]:
        """The suite's tasks, family by family, smallest first within a family (reproducible)."""
        out = get_suite(self.suite).tasks(
            self.per_family,
            self.seed,
            candidates=self.draws,
            cost=lambda t: (t.num_params(), t.name),
            families=self.families,
            unique=True,
            by_cost=True,
        )
        held_out = get_suite(HELD_OUT).pairs()
        for task in out:  # by construction of the suites; checked so a new suite cannot leak
            dataset = getattr(task.static, "dataset", "-")
            if (task.family.name, dataset) in held_out:
                raise ConfigError(f"validation task {task.name} is a held-out (family, dataset) pair.")
        return out

    def long(self, tasks: list[Task] | None = None) -> list[Task]:
        """The long subset: the ``long_tasks`` tasks with the fewest parameters, one per family."""
        tasks = self.tasks() if tasks is None else tasks
        picked, families = [], set()
        for task in sorted(tasks, key=lambda t: (t.num_params(), t.name)):
            if task.family.name not in families:
                families.add(task.family.name)
                picked.append(task)
        return picked[: self.long_tasks]

    @property
    def long_steps(self) -> int:
        return self.steps * self.long_factor


VALIDATION_SUITES: dict[str, ValidationSuite] = {
    s.name: s
    for s in (
        ValidationSuite(
            "valid",
            "2 tasks per family of train_nn (the smallest of 4 draws), T = 1000, 2 seeds; 3 tasks at 10 T",
        ),
        ValidationSuite(
            "valid-small",
            "1 task per family of train_nn (the smallest of 4 draws), T = 300, 1 seed; 2 tasks at 10 T: "
            "for quick runs and the demo, too small to choose a shipped optimizer",
            per_family=1,
            steps=300,
            seeds=1,
            long_tasks=2,
        ),
        ValidationSuite(
            "valid-confirm",
            "2 tasks per family of train_nn drawn with another seed (no task of valid), T = 1000, 3 seeds; "
            "3 tasks at 10 T: confirms a choice made on valid, free of the selection bias of its best-of-N",
            seed=4321,
            seeds=3,
        ),
    )
}


def get_validation_suite(name: str) -> ValidationSuite:
    """The validation suite registered as ``name``; an unknown name lists the valid ones."""
    if name not in VALIDATION_SUITES:
        raise unknown_name("validation suite", name, VALIDATION_SUITES)
    return VALIDATION_SUITES[name]
