"""Methods: how a search becomes one optimizer per task (``per_task``, ``global``, ``fixed``), the
named ones (`METHODS`) and the naming grammar of `get_method`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from lopt.config import DEFAULT_METHODS as DEFAULT_METHODS
from lopt.optimizers import BASELINES, load_theta
from lopt.pretrained import PRETRAINED, load_pretrained
from lopt.tuning.nadamw import nadamw_list_search
from lopt.tuning.searches import BaselineMaker, Search, adam8p_search, fixed_search, lr_search
from lopt.validate import ConfigError, check_choice, check_range, unknown_name

SELECTIONS = ("per_task", "global", "fixed")


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """How a search becomes one optimizer per task (see the module docstring).

    Attributes:
      name: the name in tables and on the command line, e.g. ``adam-lr-per-task``.
      search: the trials it chooses from (searches shared by methods run once per task).
      select: ``per_task``, ``global`` or ``fixed``.
      trials: use only the first ``trials`` trials of the search (None: all).
      doc: one line for the report.
    """

    name: str
    search: Search
    select: str = "per_task"
    trials: int | None = None
    doc: str = ""

    def __post_init__(self):
        check_choice(f"method {self.name!r} select", self.select, SELECTIONS)
        n = self.search.num_trials
        if self.trials is not None:
            check_range(f"method {self.name!r} trials", self.trials, 1, n)
        if self.select == "fixed" and (self.trials or n) != 1:
            raise ConfigError(f"method {self.name!r} is fixed but its search has {n} trials: give trials=1.")

    @property
    def num_trials(self) -> int:
        return self.trials or self.search.num_trials


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the named methods need to know: the horizon and their trial counts."""

    num_steps: int = 1000  # training steps (schedules and Adam8p's decays depend on it)
    adam8p_trials: int = 10  # random-search trials of Adam8p per task
    nadamw_trials: int = 10  # first N entries of the ordered NAdamW list
    seed: int = 0  # seed of the Adam8p random search


METHODS: dict[str, Callable[[Budget], Method]] = {
    "adam-lr-global": lambda b: Method(
        "adam-lr-global",
        lr_search("adam"),
        "global",
        doc="Adam, the one of 15 learning rates best on average over the suite",
    ),
    "adam-lr-per-task": lambda b: Method(
        "adam-lr-per-task", lr_search("adam"), "per_task", doc="Adam, best of 15 learning rates on each task"
    ),
    "adam8p-per-task": lambda b: Method(
        "adam8p-per-task",
        adam8p_search(b.adam8p_trials, b.num_steps, b.seed),
        doc=f"Adam8p, best of {b.adam8p_trials} random trials on each task",
    ),
    "nadamw-list": lambda b: Method(
        "nadamw-list",
        nadamw_list_search(b.nadamw_trials, b.num_steps),
        doc=f"NAdamW, best of the first {b.nadamw_trials} entries of the ordered list",
    ),
    "nadamw-list-first1": lambda b: Method(
        "nadamw-list-first1",
        nadamw_list_search(b.nadamw_trials, b.num_steps),
        "fixed",
        trials=1,
        doc="NAdamW, the first entry of the list (no tuning)",
    ),
    "adam-cosine-lr-per-task": lambda b: Method(
        "adam-cosine-lr-per-task",
        lr_search("adam_cosine"),
        doc="Adam with 5% warmup and cosine decay over the run, best of 15 peak learning rates on each task",
    ),
    "lookahead-adam-lr-per-task": lambda b: Method(
        "lookahead-adam-lr-per-task",
        lr_search("adam", lookahead_k=5, lookahead_alpha=0.5),
        doc="Lookahead(Adam) k=5 alpha=0.5, best of 15 learning rates on each task",
    ),
}


def learned_method(name: str, learned: Any, theta: Any, doc: str = "") -> Method:
    """A learned optimizer with fixed weights as a method: one trial, no tuning (``select="fixed"``)."""
    # the optimizer of `lopt.evaluate.evaluate_learned` (theta a constant): what lopt.pretrained gives
    optimizer = optax.with_extra_args_support(learned.transform(theta))
    search = fixed_search(f"{name}({learned.name})", optimizer, hparams=theta)
    return Method(name, search, "fixed", doc=doc or f"learned optimizer {learned.name}, no tuning")


def get_method(name: str, budget: Budget = Budget()) -> Method:
    """A named method: a `METHODS` entry; a shipped pretrained optimizer (`lopt.PRETRAINED`) or
    ``theta:<path>`` (a `save_theta` file), run without tuning; a `BASELINES` name (its defaults, no
    tuning); or ``<baseline>-lr-per-task`` / ``<baseline>-lr-global`` (its learning rate tuned on
    `ADAM_LR_GRID`)."""
    if name in METHODS:
        return METHODS[name](budget)
    if name in PRETRAINED:
        learned, theta = load_pretrained(name)
        return learned_method(
            name, learned, theta, f"pretrained {name}: {PRETRAINED[name].summary}; no tuning"
        )
    if name.startswith("theta:"):
        learned, theta = load_theta(name[len("theta:") :])
        return learned_method(
            name, learned, theta, f"learned optimizer {learned.name} from {name[6:]}; no tuning"
        )
    if name in BASELINES:
        b = BASELINES[name]
        hparams = {k: np.float32(v) for k, v in b.defaults.items()}
        return Method(
            name,
            fixed_search(name, make=BaselineMaker(name), hparams=hparams),
            "fixed",
            doc=f"{name} at its defaults {b.defaults} (no tuning)",
        )
    for suffix, select in (("-lr-per-task", "per_task"), ("-lr-global", "global")):
        if name.endswith(suffix) and name[: -len(suffix)] in BASELINES:
            return Method(
                name,
                lr_search(name[: -len(suffix)]),
                select,
                doc=f"{name[: -len(suffix)]}, learning rate from 15 tuned {select.replace('_', ' ')}",
            )
    raise unknown_name(
        "optimizer",
        name,
        [*METHODS, *PRETRAINED, *BASELINES, "<baseline>-lr-per-task", "<baseline>-lr-global", "theta:<path>"],
    )
