"""`WorkerPool`: the learner's side of the workers -- spawning, publishing theta, collecting estimates
within the staleness bound, replacing dead workers, rejecting bad estimates.

Protocol. The learner publishes each new theta (version v, its run key): a theta of at most
`INLINE_BYTES` travels inside each call (Ray inlines small arguments: no object-store round trip,
measured ~10 ms a step with ``ray.put``), a larger one is put once in Ray's object store and
sent by reference. An idle worker is sent the newest version with its groups' keys (`core.group_keys`); it
answers with an `Estimate`. `collect` returns, for the next update, one estimate per group whose
version is at least v − staleness, waiting for the groups that have none: with staleness 0 every
update uses every group's estimate of the current theta (synchronous: bitwise the single-process
step); with staleness s a worker is re-sent the newest theta as soon as it answers, even one it
has already estimated (``repeat`` counts those), so workers never wait for the learner and an
update may use estimates up to s versions old. A newer estimate of a group replaces an unapplied
older one; an estimate older than the bound is dropped. Each applied estimate is recorded by
(group, version, repeat): none is ever applied twice.

Faults. A worker whose process dies (its call raises `ray.exceptions.RayActorError`) is replaced
by a new actor (incarnation + 1) on the same groups, with fresh particles on the current theta;
its estimates in flight are lost, never applied. An estimate of the wrong structure, shape or
dtype, or with a NaN or infinity, is ignored and counted (`rejected`); a worker that sends
`MAX_BAD` bad messages in a row is replaced.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from rich.console import Console

from lopt.distributed.cluster import require_ray
from lopt.distributed.core import check_estimate, group_keys
from lopt.distributed.wire import Estimate, nbytes, to_host
from lopt.distributed.worker import Worker
from lopt.meta_train.outer import OuterState
from lopt.meta_train.trainer import MetaTrainer
from lopt.validate import ConfigError

MAX_BAD = 3  # bad messages in a row after which a worker is replaced
INLINE_BYTES = 100_000  # theta up to this size is sent inside each call (Ray's own inlining bound)


def assign_groups(costs: list[float], num_workers: int) -> list[tuple[int, ...]]:
    """Groups per worker, balanced by cost (largest first, each to the least-loaded worker)."""
    if num_workers > len(costs):
        raise ConfigError(
            f"--workers {num_workers} exceeds the {len(costs)} distinct task groups: a worker owns "
            "at least one group (raise --num-groups, or use fewer workers)."
        )
    loads, owned = [0.0] * num_workers, [[] for _ in range(num_workers)]
    for g in sorted(range(len(costs)), key=lambda g: (-costs[g], g)):
        w = min(range(num_workers), key=lambda w: (loads[w], w))
        loads[w] += costs[g]
        owned[w].append(g)
    return [tuple(sorted(o)) for o in owned]


@dataclasses.dataclass
class _Slot:
    """One worker's bookkeeping on the learner."""

    actor: Any
    groups: tuple[int, ...]
    incarnation: int = 0
    pid: int = 0
    inflight: Any = None  # ObjectRef of the estimate being computed
    last_version: int = -1  # newest version sent
    repeats: int = 0  # sends of last_version beyond the first
    bad: int = 0  # bad messages in a row


@dataclasses.dataclass
class Counters:
    received: int = 0  # estimate messages received
    applied: int = 0  # group estimates applied
    rejected: int = 0  # group estimates ignored: non-finite, or another shape / structure
    stale: int = 0  # group estimates older than the staleness bound, dropped
    superseded: int = 0  # unapplied group estimates replaced by a newer one of the same group
    replaced: int = 0  # workers replaced after their process died (or after MAX_BAD bad messages)
    lost: int = 0  # messages in flight when their worker died


class WorkerPool:
    """N worker actors over the trainer's groups; see the module docstring."""

    def __init__(
        self,
        config: dict,
        trainer: MetaTrainer,
        num_workers: int,
        staleness: int,
        *,
        cores: list[int] | None = None,
        faults: dict[int, dict] | None = None,
        console: Console | None = None,
    ):
        self.ray = require_ray()
        self.config, self.trainer, self.staleness = config, trainer, staleness
        self.console = console or Console()
        self.cores, self.faults = cores, faults or {}
        self.num_groups = len(trainer.estimators)
        costs = [float(est.inner_steps_per_estimate()) for est in trainer.estimators]
        self.remote = self.ray.remote(num_cpus=1, max_restarts=0)(Worker)
        self.slots = [_Slot(None, groups) for groups in assign_groups(costs, num_workers)]
        for w in range(num_workers):
            self._spawn(w)
        self.pids()  # wait until every worker is up (raises if one cannot start)
        self.counters = Counters()
        self.buffer: dict[int, tuple[Estimate, int]] = {}  # group -> (message, index in it), unapplied
        self.applied: set[tuple[int, int, int]] = set()  # (group, version, repeat)
        self.version, self.theta_arg, self.key, self.theta = -1, None, None, None

    # --- workers ------------------------------------------------------------------------------------

    def _spawn(self, w: int) -> None:
        slot = self.slots[w]
        core = None if self.cores is None else self.cores[w % len(self.cores)]
        faults = self.faults.get(w) if slot.incarnation == 0 else None  # a replacement is healthy
        env = {name: str(self.threads(core)) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        options = {"runtime_env": {"env_vars": env}}
        slot.actor = self.remote.options(**options).remote(
            self.config, w, slot.incarnation, slot.groups, core, faults
        )
        slot.pid, slot.inflight, slot.last_version, slot.repeats, slot.bad = 0, None, -1, 0, 0

    def threads(self, core: int | None) -> int:
        """BLAS threads of a worker: 1 on a core of its own, else its share of this machine's cores.

        Ray sets OMP_NUM_THREADS=1 in a one-CPU actor, so the OpenBLAS behind XLA's LAPACK calls
        (the quadratic family's ``jnp.linalg.qr``: ~15% of benchmarks/distributed.py's step on one
        core, by perf) ran on one thread in a worker that had every core, where the single process
        uses them all. More
        BLAS threads than free cores is worse still: OpenBLAS waits by yielding its core."""
        return 1 if core is not None else max(1, (os.cpu_count() or 1) // len(self.slots))

    def pids(self) -> list[int]:
        """The workers' process ids (waits for workers that are starting)."""
        for slot in self.slots:
            if not slot.pid:
                slot.pid = self.ray.get(slot.actor.pid.remote())
        return [slot.pid for slot in self.slots]

    def _replace(self, w: int, why: str) -> None:
        slot = self.slots[w]
        if slot.inflight is not None:
            self.counters.lost += 1
        self.ray.kill(slot.actor, no_restart=True)  # a no-op when the process is already gone
        slot.incarnation += 1
        self.counters.replaced += 1
        self.console.print(
            f"[yellow]worker {w} ({why}): replaced (incarnation {slot.incarnation}); groups "
            f"{list(slot.groups)} restart from fresh particles at version {self.version}.[/]"
        )
        self._spawn(w)
        self._fresh(w)

    def _fresh(self, w: int) -> None:
        import jax

        slot = self.slots[w]
        key = jax.random.fold_in(jax.random.fold_in(self.key, 1_000_003 + w), slot.incarnation)
        self.ray.get(slot.actor.fresh.remote(np.asarray(jax.random.key_data(key)), self.theta_arg))

    def set_states(self, states: tuple) -> None:
        """Give every worker its groups' states (a fresh run's, or a checkpoint's)."""
        calls = [
            slot.actor.set_states.remote(to_host(tuple(states[g] for g in slot.groups)))
            for slot in self.slots
        ]
        self.ray.get(calls)

    def get_states(self) -> tuple:
        """Every group's current state (host arrays; a dead worker is replaced and gives fresh ones)."""
        states: list[Any] = [None] * self.num_groups
        for w, slot in enumerate(self.slots):
            for _attempt in range(3):
                try:
                    got = self.ray.get(self.slots[w].actor.get_states.remote())
                    break
                except self.ray.exceptions.RayActorError:  # pyright: ignore[reportAttributeAccessIssue]
                    self._replace(w, "died")
            else:
                raise RuntimeError(f"worker {w} died three times in a row while sending its states.")
            for g, s in zip(slot.groups, got):
                states[g] = s
        return tuple(states)

    # --- theta out, estimates in --------------------------------------------------------------------

    def publish(self, state: OuterState) -> None:
        """Make ``state``'s theta the newest version and send it to the idle workers."""
        self.version = int(state.step)
        self.key = state.key
        self.theta = to_host(state.theta)
        small = nbytes(self.theta) <= INLINE_BYTES
        self.theta_arg = self.theta if small else self.ray.put(self.theta)
        self._keys = {0: group_keys(self.key, self.num_groups, 0)}
        for w, slot in enumerate(self.slots):
            if slot.inflight is None:
                self._send(w)

    def _send(self, w: int) -> None:
        slot = self.slots[w]
        if slot.last_version == self.version:
            if self.staleness == 0 and all(g in self.buffer for g in slot.groups):
                return  # synchronous: the worker's groups have their estimates of this version
            slot.repeats += 1  # asynchronous, or an estimate was rejected: estimate again, other keys
        else:
            slot.last_version, slot.repeats = self.version, 0
        if slot.repeats not in self._keys:
            self._keys[slot.repeats] = group_keys(self.key, self.num_groups, slot.repeats)
        keys = self._keys[slot.repeats][list(slot.groups)]
        slot.inflight = slot.actor.estimate.remote(self.version, slot.repeats, keys, self.theta_arg)

    def collect(self) -> list[tuple[Estimate, int]]:
        """One (message, index) per group, in group order, each within the staleness bound of the
        newest version; blocks until every group has one. Marks them applied."""
        oldest = self.version - self.staleness
        while True:
            for g, (msg, _) in list(self.buffer.items()):
                if msg.version < oldest:
                    del self.buffer[g]
                    self.counters.stale += 1
            if len(self.buffer) == self.num_groups:
                break
            self._receive()
        chosen = [self.buffer.pop(g) for g in range(self.num_groups)]
        for msg, i in chosen:
            ident = (msg.groups[i], msg.version, msg.repeat)
            if ident in self.applied:  # cannot happen by construction; never apply it twice if it did
                raise RuntimeError(f"estimate {ident} (group, version, repeat) would be applied twice.")
            self.applied.add(ident)
        self.counters.applied += len(chosen)
        return chosen

    def _receive(self) -> None:
        refs = [slot.inflight for slot in self.slots if slot.inflight is not None]
        if not refs:
            raise RuntimeError("no estimate in flight and groups missing: the pool cannot make progress.")
        done, _ = self.ray.wait(refs, num_returns=1)
        w = next(i for i, slot in enumerate(self.slots) if slot.inflight == done[0])
        slot = self.slots[w]
        try:
            msg = self.ray.get(done[0])
        except self.ray.exceptions.RayActorError:  # pyright: ignore[reportAttributeAccessIssue]
            self._replace(w, "died")
            self._send(w)
            return
        slot.inflight = None
        self.counters.received += 1
        ok = self._accept(w, msg)
        slot.bad = 0 if ok else slot.bad + 1
        if slot.bad >= MAX_BAD:
            self._replace(w, f"{MAX_BAD} bad estimates in a row")
        self._send(w)

    def _accept(self, w: int, msg: Estimate) -> bool:
        """Buffer the message's valid group estimates; False when any was rejected."""
        if (msg.worker, msg.incarnation) != (w, self.slots[w].incarnation) or msg.groups != self.slots[
            w
        ].groups:
            self.counters.rejected += len(msg.groups)
            return False
        good = True
        for i, g in enumerate(msg.groups):
            why = check_estimate(msg.grads[i], self.theta)
            if why:
                self.counters.rejected += 1
                good = False
                self.console.print(
                    f"[yellow]worker {w}: estimate of group {g} at version {msg.version} ignored: {why}.[/]"
                )
                continue
            if msg.version < self.version - self.staleness:
                self.counters.stale += 1
                continue
            if g in self.buffer:
                self.counters.superseded += 1
            self.buffer[g] = (msg, i)
        return good

    def shutdown(self) -> None:
        for slot in self.slots:
            self.ray.kill(slot.actor, no_restart=True)
