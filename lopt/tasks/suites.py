"""Named task suites: the meta-training suite and a disjoint held-out test suite.

A suite is a list of (family name, restricted sampling space). Sampling a task from a suite picks
a family uniformly, then a configuration from its space. No (family, dataset) pair appears in
both suites, and some families and datasets appear only in the held-out suite (the 1-D conv net,
the transformer LM, everything on Fashion-MNIST, iris, the checkerboard density), so the
held-out suite measures generalization to unseen architectures and unseen data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

from lopt.tasks.base import Task, TaskConfig, TaskFamily
from lopt.tasks.registry import get_family
from lopt.validate import ConfigError, unknown_name


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named mixture of task families, each with a restricted sampling space."""

    name: str
    description: str
    entries: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # (family name, space kwargs)

    def families(self) -> list[TaskFamily]:
        """The family instances, in order."""
        return [get_family(name, **dict(space)) for name, space in self.entries]

    def sample(self, key: jax.Array) -> tuple[TaskFamily, TaskConfig]:
        """A family chosen uniformly, then a configuration from it."""
        key_family, key_cfg = jax.random.split(key)
        families = self.families()
        family = families[int(jax.random.randint(key_family, (), 0, len(families)))]
        return family, family.sample(key_cfg)

    def tasks(
        self,
        per_family: int = 1,
        seed: int = 0,
        *,
        candidates: int = 0,
        cost: Callable[[Task], Any] | None = None,
        families: Sequence[str] = (),
        unique: bool = False,
        by_cost: bool = False,
    ) -> list[Task]:
        """A fixed list of ``per_family`` tasks per family, reproducible from ``seed``: the one way
        every part of lopt picks tasks from a suite.

        Family i (its index in the suite, whether or not ``families`` keeps it) draws
        n = max(``candidates``, ``per_family``) tasks from ``fold_in(key(seed), i)``; with ``unique``
        a repeated task name is dropped. When more than ``per_family`` remain, the ``per_family`` of
        lowest ``cost`` (default: the parameter count) are kept, in sampling order, or in cost order
        with ``by_cost`` (which sorts even when nothing is dropped). ``families`` restricts the
        families (empty: all); a name not in the suite raises.
        """
        all_families = self.families()
        have = sorted({f.name for f in all_families})
        for name in families:
            if name not in have:
                raise ConfigError(
                    f"families contains {name!r}, which is not in suite {self.name!r}: choose from {have}."
                )
        cost = cost or (lambda t: t.num_params())
        n = max(candidates, per_family)
        out = []
        for i, family in enumerate(all_families):
            if families and family.name not in families:
                continue
            keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), i), n)
            options = [family.task(family.sample(k)) for k in keys]
            if unique:  # the first task of each name, in sampling order
                first: dict[str, Task] = {}
                for t in options:
                    first.setdefault(t.name, t)
                options = list(first.values())
            if len(options) > per_family or by_cost:
                costs = [cost(t) for t in options]
                keep = sorted(range(len(options)), key=lambda j: costs[j])[:per_family]
                options = [options[j] for j in (keep if by_cost else sorted(keep))]
            out.extend(options)
        return out

    def pairs(self) -> set[tuple[str, str]]:
        """The (family, dataset) pairs this suite can sample (dataset "-" for procedural tasks)."""
        out = set()
        for family in self.families():
            datasets = getattr(family, "datasets", None) or (getattr(family, "dataset", "-"),)
            out.update((family.name, d) for d in datasets)
        return out


def _entry(name: str, **space) -> tuple[str, tuple[tuple[str, Any], ...]]:
    return name, tuple(sorted(space.items()))


TOY_FAMILIES = ("quadratic", "functions2d", "linear_regression")  # left out of `train_nn`

_TRAIN = Suite(
    "train",
    "meta-training: quadratics, 2-D functions, tabular regression, MLPs / autoencoders / CNNs on "
    "digits and MNIST, MLPs on MNIST-1D, LSTM and GRU char-LMs on KJV, VAEs on MNIST, flows on "
    "moons / circles / 8 gaussians / digits",
    (
        _entry("quadratic"),
        _entry("functions2d"),
        _entry("linear_regression"),
        _entry("logistic_regression", datasets=("breast_cancer", "wine")),
        _entry("mlp", datasets=("digits", "mnist", "mnist1d")),
        _entry("mlp_autoencoder", datasets=("digits", "mnist")),
        _entry("cnn", datasets=("digits", "mnist")),
        _entry("rnn_lm"),
        _entry("vae", datasets=("mnist",)),
        _entry("flow", datasets=("moons", "circles", "eight_gaussians", "digits")),
    ),
)

SUITES: dict[str, Suite] = {
    "train": _TRAIN,
    "train_nn": Suite(
        "train_nn",
        "meta-training on neural networks only: the train suite without its quadratics, 2-D functions and "
        "linear regression (toy problems reward steps too aggressive for networks trained longer)",
        tuple(e for e in _TRAIN.entries if e[0] not in TOY_FAMILIES),
    ),
    "test": Suite(
        "test",
        "held-out: MLPs / autoencoders / CNNs / VAEs on Fashion-MNIST, a 1-D conv net on MNIST-1D, "
        "a transformer char-LM on KJV, logistic regression on iris, a flow on the checkerboard",
        (
            _entry("mlp", datasets=("fashion_mnist",)),
            _entry("mlp_autoencoder", datasets=("fashion_mnist",)),
            _entry("cnn", datasets=("fashion_mnist",)),
            _entry("vae", datasets=("fashion_mnist",)),
            _entry("conv1d"),
            _entry("transformer_lm"),
            _entry("logistic_regression", datasets=("iris",)),
            _entry("flow", datasets=("checkerboard",)),
        ),
    ),
}


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``."""
    if name not in SUITES:
        raise unknown_name("suite", name, SUITES)
    return SUITES[name]
