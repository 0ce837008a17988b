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

from lopt import checkpoint
from lopt.checkpoint import CheckpointManager, list_checkpoints
from lopt.config import MetaTrainConfig
from lopt.distributed.cluster import check_capacity, connect, require_ray
from lopt.distributed.core import LearnerProgram
from lopt.distributed.pool import WorkerPool, assign_groups
from lopt.distributed.validation import ValidationActor
from lopt.distributed.wire import from_host, to_host
from lopt.meta_train.loop import _read_best, _resume, _write_json, portable
from lopt.meta_train.metrics_log import MetricsLog, _progress
from lopt.meta_train.outer import OuterState
from lopt.meta_train.trainer import MetaTrainer
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
    trainer = MetaTrainer.from_config(cfg)
    assign_groups(
        [float(est.inner_steps_per_estimate()) for est in trainer.estimators], cfg.workers
    )  # checks N
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = trainer.init(
        jax.random.key(cfg.seed)
    )  # the single-process init: its estimator states go to the workers
    manager = CheckpointManager(
        out / "checkpoints",
        every_steps=cfg.ckpt_every or None,
        every_minutes=cfg.ckpt_minutes or None,
        keep=cfg.keep,
    )
    start = 0
    if cfg.resume:
        state, start = _resume(cfg, out, manager, state, console)
    elif list_checkpoints(manager.directory) or list_checkpoints(out / "portable"):
        raise ConfigError(
            f"{out} already holds checkpoints: pass --resume to continue that run, or choose another --out."
        )
    (out / "config.json").write_text(
        json.dumps({"config": dataclasses.asdict(cfg), "groups": trainer.describe()}, indent=2) + "\n"
    )
    started = connect(cfg.ray, num_cpus=cfg.workers + 1)
    pool = validator = None
    try:
        check_capacity(cfg.workers + (1 if cfg.validate_every else 0))
        wire_config = dataclasses.asdict(cfg)
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


def _loop(cfg, trainer, state, start, manager, pool, validator, out, console, progress, t_first, on_step):
    ray = pool.ray
    learner = LearnerProgram(trainer)
    lstate = state._replace(estimator_states=())
    inner_per_step = trainer.inner_steps_per_outer_step()
    log = MetricsLog(out, start)
    audit = _Audit(out / "estimates.jsonl", start)
    cpu_first = time.process_time()
    cpu_before = log.last("cpu_seconds") or 0.0
    best = _read_best(out) if start else None
    waiting: dict = {}  # ObjectRef -> theta (host) of a validation in flight
    score = math.nan

    def cpu_seconds() -> float:
        return cpu_before + time.process_time() - cpu_first

    def submit_validation(step: int) -> None:
        theta = to_host(lstate.theta)
        waiting[validator.validate.remote(step, theta)] = theta

    def finish_validations(block: bool) -> None:
        nonlocal best, score
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1, timeout=None if block else 0)
            if not done:
                return
            theta = waiting.pop(done[0])
            step, metrics = ray.get(done[0])
            metrics["cpu_seconds"] = cpu_seconds()
            log.write(step, metrics)
            score = metrics["valid/score"]
            improved = best is None or score < best["score"]
            if improved:
                save_theta(out / "best.safetensors", trainer.learned, from_host(theta))
                best = {
                    "step": step,
                    "score": score,
                    "cpu_seconds": metrics["cpu_seconds"],
                    **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
                }
                _write_json(out / "best.json", best)
            console.print(
                f"step {step}: validation score {score:.4f} (0 = per-task-tuned Adam){' [best]' if improved else ''}"
            )

    pool.publish(lstate)
    t_mark, step_mark, pending = None, start, []
    try:
        if validator is not None and start == 0:
            submit_validation(0)
        with _progress(console, progress) as bar:
            task = bar.add_task(
                "meta-train",
                total=cfg.num_steps,
                completed=start,
                outer=0.0,
                inner=0.0,
                loss=math.nan,
                valid=score,
            )
            for step in range(start + 1, cfg.num_steps + 1):
                chosen = pool.collect()
                grads = tuple(msg.grads[i] for msg, i in chosen)
                group_metrics = tuple(msg.metrics[i] for msg, i in chosen)
                lstate, metrics = learner.update(lstate, grads, group_metrics)
                audit.add(step, chosen)
                c = pool.counters
                metrics = {
                    **metrics,
                    "dist/staleness": sum(step - 1 - msg.version for msg, _ in chosen) / len(chosen),
                    "dist/worker_seconds": max(msg.seconds for msg, _ in chosen),
                    **{f"dist/{k}": v for k, v in dataclasses.asdict(c).items()},
                }
                pending.append((step, metrics))
                last = step == cfg.num_steps
                save_now = manager.should_save(step) or last
                if validator is not None and (step % cfg.validate_every == 0 or last):
                    submit_validation(step)
                if (
                    save_now
                ):  # the workers' states after this step (synchronous: exactly the single-process state)
                    audit.flush()  # every update a checkpoint holds is in estimates.jsonl first
                    full = lstate._replace(estimator_states=from_host(pool.get_states()))
                    manager.save(step, full, cfg.trajectory())
                    checkpoint.save(out / "portable", step, portable(full), cfg.trajectory(), keep=1)
                if not last:
                    pool.publish(lstate)
                if on_step is not None:
                    on_step(step, pool)
                first = t_mark is None
                if step % cfg.log_every and not (first or last or save_now):
                    continue
                rows = jax.device_get(pending)
                pending = []
                now = time.perf_counter()
                if first:
                    console.print(
                        f"first outer step (build, start workers, compile, run): {now - t_first:.1f} s"
                    )
                    t_mark, step_mark = now, step
                assert t_mark is not None
                rate = (step - step_mark) / (now - t_mark) if step > step_mark else 0.0
                cpu = cpu_seconds()
                for s, m in rows:
                    log.write(
                        s,
                        {
                            **m,
                            "outer_steps_per_s": rate,
                            "inner_steps_per_s": rate * inner_per_step,
                            "cpu_seconds": cpu,
                        },
                    )
                t_mark, step_mark = now, step
                finish_validations(block=False)
                log.flush()
                audit.flush()
                bar.update(
                    task,
                    completed=step,
                    outer=rate,
                    inner=rate * inner_per_step,
                    loss=float(rows[-1][1]["meta_loss"]),
                    valid=score,
                )
        finish_validations(block=True)
        log.flush()
    finally:
        log.close()
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
