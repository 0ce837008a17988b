"""`Worker`: the body of a Ray actor that owns some task groups and their estimator states.

It rebuilds the run's `MetaTrainer` from the config (the groups are sampled from the seed, so every
process agrees on them), compiles the estimates of its groups only (`WorkerProgram`), and answers
`estimate` calls: for the theta version and group keys the learner sends, one estimate per group,
its states advanced. It holds no theta of its own: it always computes on the newest theta it was
sent. Replaced after a crash, it starts its groups from fresh particles (`fresh`).

This module does not import Ray; `lopt.distributed.pool` wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from lopt.distributed.wire import Estimate, from_host, to_host

# Faults a test can inject (never set by the CLI): {"nan": [seq, ...], "shape": [seq, ...]} corrupts
# those messages (counted from 0) after computing them.
FAULTS = ("nan", "shape")


class Worker:
    """Estimates of ``groups`` of the run ``config`` (a `MetaTrainConfig` as a dict)."""

    def __init__(
        self,
        config: dict,
        worker: int,
        incarnation: int,
        groups: tuple[int, ...],
        core: int | None = None,
        faults: dict | None = None,
    ):
        if core is not None:  # pinned before jax starts, so XLA's threads stay on the core
            os.sched_setaffinity(0, {core})
        import jax

        from lopt.config import MetaTrainConfig
        from lopt.distributed.core import WorkerProgram
        from lopt.meta_train.trainer import MetaTrainer

        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # as `lopt meta-train`: compiled programs persist
            jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lopt/jax"))
        cfg = MetaTrainConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "references"}
        )
        self.program = WorkerProgram(
            MetaTrainer.from_config(cfg, references=config.get("references")), tuple(groups)
        )
        self.worker, self.incarnation, self.seq = worker, incarnation, 0
        self.faults = {k: set(v) for k, v in (faults or {}).items() if k in FAULTS}
        self.states: Any = None
        self.theta: tuple[int, Any] = (-1, None)  # (version, theta on the device): sent once per version

    def pid(self) -> int:
        return os.getpid()

    def set_states(self, states) -> None:
        """Take the groups' states (host arrays, `to_host`): a fresh run's or a checkpoint's."""
        self.states = from_host(states)

    def fresh(self, key_data: np.ndarray, theta) -> None:
        """Fresh particles for every group (a replacement worker), from the key data and theta."""
        import jax

        key = jax.random.wrap_key_data(np.asarray(key_data))
        self.states = self.program.fresh_states(key, from_host(theta))

    def get_states(self):
        """The groups' states as host arrays (for a checkpoint)."""
        return to_host(self.states)

    def estimate(self, version: int, repeat: int, keys: np.ndarray, theta) -> Estimate:
        """One estimate per group on ``theta`` (host arrays) with group key data ``keys`` (groups, 2)."""
        t0, c0 = time.perf_counter(), time.process_time()
        if self.theta[0] != version:
            self.theta = (version, from_host(theta))
        grads, self.states, metrics = self.program.estimate(keys, self.theta[1], self.states)  # on the host
        grads = self._inject(grads)
        seq, self.seq = self.seq, self.seq + 1
        return Estimate(
            self.worker,
            self.incarnation,
            seq,
            self.program.groups,
            version,
            repeat,
            tuple(grads),
            tuple(metrics),
            time.perf_counter() - t0,
            time.process_time() - c0,
        )

    def _inject(self, grads: tuple) -> tuple:
        import jax

        if self.seq in self.faults.get("nan", ()):
            return tuple(jax.tree.map(lambda x: np.full_like(x, np.nan), g) for g in grads)
        if self.seq in self.faults.get("shape", ()):
            return tuple(
                jax.tree.map(lambda x: np.zeros((*np.shape(x), 2), np.asarray(x).dtype), g) for g in grads
            )
        return grads


def describe(estimate: Estimate) -> dict:
    """The audit record of an applied estimate (one line of ``estimates.jsonl`` per group)."""
    fields = dataclasses.asdict(estimate)
    return {k: fields[k] for k in ("worker", "incarnation", "seq", "version", "repeat")}
