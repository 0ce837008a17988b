"""`meta_train_distributed`: `lopt meta-train --ray auto|ADDRESS --workers N` -- the learner's loop.

The learner (this process) holds theta, the outer optimizer's state and the run's key; N worker
actors (`lopt.distributed.pool`) hold the task groups and their estimator states. Each outer step:
collect one estimate per group within the staleness bound, average them and apply the outer
update (`lopt.distributed.core.LearnerProgram`: the single-process step's own functions), publish
the new theta. Validation runs on an actor of its own (`ValidationActor`); its results are
written when they arrive.

Outputs are those of `lopt.meta_train.meta_train` (config.json, metrics.jsonl, tb/, checkpoints/
in the same format, portable/, best.safetensors, theta.safetensors) plus ``estimates.jsonl``: per
outer step, the (group, version, repeat, worker, incarnation, seq) of every estimate it applied.
A checkpoint gathers the workers' estimator states, so it is the single-process run's state:
either kind of run resumes the other's checkpoints. With staleness 0 and no worker lost, the
run is bitwise the single-process one, and so is a run resumed after the learner was killed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
from rich.console import Console

from lopt.config import MetaTrainConfig
from lopt.distributed.cluster import check_capacity, connect, require_ray
from lopt.distributed.core import LearnerProgram
from lopt.distributed.pool import WorkerPool, assign_groups
from lopt.distributed.validation import ValidationActor
from lopt.distributed.wire import from_host, to_host
from lopt.meta_train.metrics_log import StepBar, StepLog
from lopt.meta_train.outer import OuterState
from lopt.meta_train.run_dir import (
    BestTheta,
    build_trainer,
    open_run,
    save_checkpoints,
    validation_line,
    write_config,
)
from lopt.optimizers.learned import save_theta
from lopt.validate import ConfigError


def meta_train_distributed(
    config: MetaTrainConfig,
    *,
    console: Console | None = None,
    progress: bool = True,
    cores: list[int] | None = None,
    faults: dict[int, dict] | None = None,
    on_step: Callable[[int, WorkerPool], None] | None = None,
) -> OuterState:
    """Meta-train ``config`` with a learner and ``config.workers`` Ray workers; returns the final state.

    ``cores``: pin worker w to ``cores[w % len(cores)]`` (benchmarks); ``faults``: worker -> faults
    to inject (tests, `lopt.distributed.worker.FAULTS`); ``on_step(step, pool)``: called after each
    update (tests kill workers from it).
    """
    cfg, console = config, console or Console()
    if not cfg.ray:
        raise ConfigError("meta_train_distributed needs config.ray: auto, or a Ray cluster address.")
    if cfg.groups_per_step:
        raise ConfigError(
            "--groups-per-step is not supported with --ray: every worker estimates all its groups."
        )
    ray = require_ray()
    t_first = time.perf_counter()
    out = Path(cfg.out)
    trainer, state, start, manager = _open(cfg, out, console)
    started = connect(cfg.ray, num_cpus=cfg.workers + 1)
    pool = validator = None
    try:
        check_capacity(cfg.workers + (1 if cfg.validate_every else 0))
        # the workers use the learner's loss references (recorded ones on a resume), never their own
        wire_config = {
            **dataclasses.asdict(cfg),
            "references": [est.loss_reference for est in trainer.estimators],
        }
        pool = WorkerPool(
            wire_config, trainer, cfg.workers, cfg.staleness, cores=cores, faults=faults, console=console
        )
        console.print(
            f"config: {out / 'config.json'}; {len(trainer.estimators)} task groups on {cfg.workers} "
            f"Ray workers (staleness {cfg.staleness}): "
            + "; ".join(f"worker {w}: {list(s.groups)}" for w, s in enumerate(pool.slots))
        )
        if cfg.validate_every:
            core = None if cores is None else cores[-1]
            validator = ray.remote(num_cpus=1)(ValidationActor).remote(wire_config, core)
        pool.set_states(state.estimator_states)
        return _loop(
            cfg, trainer, state, start, manager, pool, validator, out, console, progress, t_first, on_step
        )
    finally:
        if pool is not None:
            pool.shutdown()
        if validator is not None:
            ray.kill(validator)
        if started:
            ray.shutdown()


def _open(cfg: MetaTrainConfig, out: Path, console: Console):
    """(trainer, state, start step, checkpoint manager) of the run in ``out``: built as `meta_train`
    builds it (the recorded loss references on a resume), resumed or refused by `open_run`."""
    trainer = build_trainer(cfg, out)
    assign_groups(
        [float(est.inner_steps_per_estimate()) for est in trainer.estimators], cfg.workers
    )  # checks N
    # the single-process init: its estimator states go to the workers
    state = trainer.init(jax.random.key(cfg.seed))
    state, start, manager = open_run(cfg, out, state, console)
    write_config(out, cfg, trainer)  # after open_run's checks, as meta_train
    return trainer, state, start, manager


class _Validations:
    """Validations in flight on the validation actor (none without one): results logged, best kept."""

    def __init__(self, ray, validator, steps: StepLog, best: BestTheta, console: Console):
        self.ray, self.validator, self.steps, self.best, self.console = ray, validator, steps, best, console
        self.waiting: dict = {}  # ObjectRef -> theta (host) of a validation in flight
        self.score = math.nan

    def submit(self, step: int, theta) -> None:
        if self.validator is not None:
            host = to_host(theta)
            self.waiting[self.validator.validate.remote(step, host)] = host

    def finish(self, block: bool) -> None:
        while self.waiting:
            done, _ = self.ray.wait(list(self.waiting), num_returns=1, timeout=None if block else 0)
            if not done:
                return
            theta = self.waiting.pop(done[0])
            step, metrics = self.ray.get(done[0])
            self.steps.write_validation(step, metrics)
            self.score = metrics["valid/score"]
            improved = self.best.update(step, metrics, from_host(theta))
            self.console.print(validation_line(step, metrics, improved))


def _apply(step: int, last: bool, lstate: OuterState, learner: LearnerProgram, pool: WorkerPool, manager):
    """One outer update from the estimates the pool collects; theta published for the next one.
    Returns (state, metrics, the estimates used, whether to checkpoint, the workers' states then)."""
    chosen = pool.collect()
    grads = tuple(msg.grads[i] for msg, i in chosen)
    group_metrics = tuple(msg.metrics[i] for msg, i in chosen)
    lstate, metrics = learner.update(lstate, grads, group_metrics)
    save_now = manager.should_save(step) or last
    # a checkpoint's worker states are asked for before the next estimate advances them
    states = pool.get_states() if save_now else None
    if not last:  # the workers estimate on the new theta while the learner logs and saves
        pool.publish(lstate)
    c = pool.counters
    slowest = max((msg for msg, _ in chosen), key=lambda msg: msg.seconds)
    metrics = {
        **metrics,
        "dist/staleness": sum(step - 1 - msg.version for msg, _ in chosen) / len(chosen),
        "dist/worker_seconds": slowest.seconds,  # the update waited for this estimate
        "dist/worker_cpu_seconds": slowest.cpu_seconds,  # below its wall time when the core was shared
        **{f"dist/{k}": v for k, v in dataclasses.asdict(c).items()},
    }
    return lstate, metrics, chosen, save_now, states


def _loop(cfg, trainer, state, start, manager, pool, validator, out, console, progress, t_first, on_step):
    learner = LearnerProgram(trainer)
    lstate = state._replace(estimator_states=())
    inner_per_step = trainer.inner_steps_per_outer_step()
    steps = StepLog(
        out,
        start,
        inner_per_step,
        t_first=t_first,
        cpu_first=time.process_time(),
        first_label="build, start workers, compile, run",
    )
    audit = _Audit(out / "estimates.jsonl", start)
    vals = _Validations(
        pool.ray, validator, steps, BestTheta(out, trainer.learned, start, f"valid/{cfg.select_by}"), console
    )
    pool.publish(lstate)
    try:
        if start == 0:
            vals.submit(0, lstate.theta)
        with StepBar(console, progress, cfg.num_steps, start, inner_per_step, vals.score) as bar:
            for step in range(start + 1, cfg.num_steps + 1):
                last = step == cfg.num_steps
                lstate, metrics, chosen, save_now, states = _apply(step, last, lstate, learner, pool, manager)
                audit.add(step, chosen)
                steps.add(step, metrics)
                if cfg.validate_every and (step % cfg.validate_every == 0 or last):
                    vals.submit(step, lstate.theta)
                if save_now:  # the workers' states after this step (synchronous: the single-process state)
                    audit.flush()  # every update a checkpoint holds is in estimates.jsonl first
                    save_checkpoints(
                        manager, out, step, lstate._replace(estimator_states=from_host(states)), cfg
                    )
                if on_step is not None:
                    on_step(step, pool)
                if not steps.due(step, cfg.log_every, last or save_now):
                    continue
                rate, loss = steps.write_pending(step, console)
                vals.finish(block=False)
                steps.flush()
                audit.flush()
                bar.show(step, rate, loss, vals.score)
        vals.finish(block=True)
        steps.flush()
    finally:
        steps.close()
        audit.close()
    save_theta(out / "theta.safetensors", trainer.learned, lstate.theta)
    c = pool.counters
    console.print(
        f"theta saved to {out / 'theta.safetensors'} (skipped updates: {int(lstate.num_skipped)}; "
        f"estimates applied {c.applied}, rejected {c.rejected}, stale {c.stale}, workers replaced "
        f"{c.replaced})"
    )
    return lstate


class _Audit:
    """``estimates.jsonl``: one line per outer step listing the estimates it applied; on resume the
    lines after the checkpoint are dropped (those updates were lost with the learner)."""

    def __init__(self, path: Path, start: int):
        kept = []
        if start and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= start:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut by a kill
        self.file = open(path, "w")  # noqa: SIM115  (open for the whole run)
        self.file.writelines(line + "\n" for line in kept)
        self.file.flush()

    def add(self, step: int, chosen) -> None:
        rows = [
            [msg.groups[i], msg.version, msg.repeat, msg.worker, msg.incarnation, msg.seq]
            for msg, i in chosen
        ]
        self.file.write(json.dumps({"step": step, "estimates": rows}) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
