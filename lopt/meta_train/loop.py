"""`meta_train`: the loop around the outer step -- logs, validations, checkpoints (full and portable), resume.

The run directory's pieces (set-up and resume, checkpoints, the best theta) are in
`lopt.meta_train.run_dir`, the metric rows and the progress bar in `lopt.meta_train.metrics_log`;
the distributed learner (`lopt.distributed.learner`) uses the same ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
from rich.console import Console

from lopt.checkpoint import CheckpointManager
from lopt.config import MetaTrainConfig
from lopt.meta_train.metrics_log import StepBar, StepLog
from lopt.meta_train.outer import OuterState
from lopt.meta_train.run_dir import (
    BestTheta,
    PortableState,
    build_trainer,
    open_run,
    portable,
    save_checkpoints,
    validation_line,
    write_config,
)
from lopt.meta_train.trainer import MetaTrainer
from lopt.optimizers.learned import save_theta
from lopt.validation import Validator, get_validation_suite

__all__ = ["PortableState", "meta_train", "portable"]  # the portable part: imported from here before


def meta_train(
    config: MetaTrainConfig, *, console: Console | None = None, progress: bool = True
) -> OuterState:
    """Meta-train ``config.learned`` for ``config.num_steps`` outer steps; returns the final state.

    Writes to ``config.out``: ``config.json`` (the resolved config and the task groups),
    ``metrics.jsonl`` (every outer step; ``valid/*`` rows at validations, with the process CPU time
    spent so far), ``tb/`` (TensorBoard scalars), ``checkpoints/`` (atomic, every ``ckpt_every``
    steps or ``ckpt_minutes`` minutes and at the end: the whole state, particles included),
    ``portable/`` (beside each checkpoint: theta, outer-optimizer state, step and key only, small
    enough to commit), ``best.safetensors`` and ``best.json`` (the theta with the best validation
    score so far, `lopt.validation`) and ``theta.safetensors`` (the last theta, `save_theta`).

    With ``config.resume`` it continues from the newest intact checkpoint, whose config must match
    (all fields but `lopt.config.RUN_CONTROL`): bitwise the same as an uninterrupted run. A corrupt
    newer checkpoint is named and passed over (nothing is deleted). With no full checkpoint but a
    portable one (a run copied from another machine), theta, the outer optimizer and the key
    continue from it and the particles restart on fresh tasks: not bitwise the uninterrupted run.
    """
    cfg, console = config, console or Console()
    t_first, cpu_first = time.perf_counter(), time.process_time()
    run = _set_up(cfg, console)
    steps = StepLog(
        run.out,
        run.start,
        run.trainer.inner_steps_per_outer_step(),
        t_first=t_first,
        cpu_first=cpu_first,
        first_label="build, compile, run",
    )
    best = BestTheta(run.out, run.trainer.learned, run.start, f"valid/{cfg.select_by}")
    try:
        state = _loop(cfg, run, steps, best, console, progress)
    finally:
        steps.close()
    save_theta(run.out / "theta.safetensors", run.trainer.learned, state.theta)
    console.print(
        f"theta saved to {run.out / 'theta.safetensors'} (skipped updates: {int(state.num_skipped)})"
    )
    if best.record is not None:
        console.print(
            f"best validation {cfg.select_by} {best.record[best.key]:.4f} at step {best.record['step']}: "
            f"{run.out / 'best.safetensors'}"
        )
    return state


class _Run(NamedTuple):
    """What the loop starts from: the trainer, its compiled step and data, the state to continue."""

    out: Path
    trainer: MetaTrainer
    state: OuterState
    step_fn: Callable
    data: Any
    start: int
    manager: CheckpointManager


def _set_up(cfg: MetaTrainConfig, console: Console) -> _Run:
    """Build and compile the trainer, resume (or refuse to overwrite), write the run's config files."""
    out = Path(cfg.out)
    trainer = build_trainer(cfg, out)
    state, step_fn = trainer.compile(jax.random.key(cfg.seed))
    data = trainer.data()
    state, start, manager = open_run(cfg, out, state, console)
    write_config(out, cfg, trainer)  # after the checks: never another run's files
    console.print(
        f"config: {out / 'config.json'}; {len(trainer.estimators)} task groups: {', '.join(trainer.describe())}"
    )
    return _Run(out, trainer, state, step_fn, data, start, manager)


def _loop(cfg: MetaTrainConfig, run: _Run, steps: StepLog, best: BestTheta, console: Console, progress: bool):
    """The outer steps from ``run.start``: log, validate, checkpoint; returns the final state."""
    validator = None
    if cfg.validate_every:
        validator = Validator(get_validation_suite(cfg.validation), run.trainer.learned, console=console)
    state, score = run.state, math.nan
    if validator is not None and run.start == 0:  # the initialization's score: the start of the curve
        score = _validate(validator, cfg, state.theta, 0, steps, best, console)
    inner_per_step = run.trainer.inner_steps_per_outer_step()
    with StepBar(console, progress, cfg.num_steps, run.start, inner_per_step, score) as bar:
        for step in range(run.start + 1, cfg.num_steps + 1):
            state, metrics = run.step_fn(state, run.data, run.trainer.hparams)
            steps.add(step, metrics)
            last = step == cfg.num_steps
            validate_now = validator is not None and (step % cfg.validate_every == 0 or last)
            save_now = run.manager.should_save(step) or last
            if not steps.due(step, cfg.log_every, last or validate_now or save_now):
                continue
            rate, loss = steps.write_pending(step, console)
            if validate_now:
                assert validator is not None
                score = _validate(validator, cfg, state.theta, step, steps, best, console)
                steps.restart_clock()  # validation time is not meta-training time
            steps.flush()
            if save_now:
                save_checkpoints(run.manager, run.out, step, state, cfg)
            bar.show(step, rate, loss, score)
    return state


def _validate(
    validator: Validator,
    cfg: MetaTrainConfig,
    theta: Any,
    step: int,
    steps: StepLog,
    best: BestTheta,
    console: Console,
) -> float:
    """Score ``theta`` on the validation suite, log the row, keep it if it is the best; its score."""
    metrics = validator(theta, long=cfg.validate_long)
    steps.write_validation(step, metrics)
    improved = best.update(step, metrics, theta)
    console.print(validation_line(step, metrics, improved))
    return metrics["valid/score"]
