"""`meta_train`: the loop around the outer step -- logs, validations, checkpoints (full and portable), resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
from rich.console import Console

from lopt import checkpoint
from lopt.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointMismatch,
    TemplateMismatch,
    checkpoint_path,
    latest,
    list_checkpoints,
    read_config,
)
from lopt.config import MetaTrainConfig, checkpoint_expectation
from lopt.meta_train.metrics_log import MetricsLog, _progress
from lopt.meta_train.outer import OuterState
from lopt.meta_train.trainer import MetaTrainer
from lopt.optimizers.learned import save_theta
from lopt.validate import ConfigError
from lopt.validation import Validator, get_validation_suite


class PortableState(NamedTuple):
    """What a portable checkpoint holds: the outer state without the particles (~3 floats per
    meta-parameter, well under 1 MB), enough to continue a run on another machine."""

    theta: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    num_skipped: jax.Array


def portable(state: OuterState) -> PortableState:
    return PortableState(state.theta, state.opt_state, state.step, state.key, state.num_skipped)


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
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_first, cpu_first = time.perf_counter(), time.process_time()
    trainer = MetaTrainer.from_config(cfg, references=_read_references(out, cfg) if cfg.resume else None)
    state, step_fn = trainer.compile(jax.random.key(cfg.seed))
    data = trainer.data()
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
    _write_json(out / REFERENCES, _references(cfg, trainer))  # after the checks: never another run's
    resolved = dataclasses.asdict(cfg)
    (out / "config.json").write_text(
        json.dumps({"config": resolved, "groups": trainer.describe()}, indent=2) + "\n"
    )
    console.print(
        f"config: {out / 'config.json'}; {len(trainer.estimators)} task groups: {', '.join(trainer.describe())}"
    )
    inner_per_step = trainer.inner_steps_per_outer_step()
    log = MetricsLog(out, start)
    cpu_before = log.last("cpu_seconds") or 0.0  # CPU time of the run before this process (resumed)
    validator = None
    if cfg.validate_every:
        validator = Validator(get_validation_suite(cfg.validation), trainer.learned, console=console)
    best = _read_best(out) if start else None
    pending: list[tuple[int, dict]] = []
    t_mark, step_mark = None, start

    def cpu_seconds() -> float:
        return cpu_before + time.process_time() - cpu_first

    def validate(step: int) -> float:
        nonlocal best
        assert validator is not None  # called only when cfg.validate_every
        metrics = validator(state.theta, long=cfg.validate_long)
        metrics["cpu_seconds"] = cpu_seconds()
        log.write(step, metrics)
        score = metrics["valid/score"]
        improved = best is None or score < best["score"]
        if improved:
            save_theta(out / "best.safetensors", trainer.learned, state.theta)
            best = {
                "step": step,
                "score": score,
                "cpu_seconds": metrics["cpu_seconds"],
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            _write_json(out / "best.json", best)
        long = f", at 10 T {metrics['valid_long/score']:.4f}" if "valid_long/score" in metrics else ""
        console.print(
            f"step {step}: validation score {score:.4f}{long} (0 = per-task-tuned Adam; AdamLR-global "
            f"{metrics['valid/global_score']:.4f}), wins vs AdamLR-global {metrics['valid/wins_global']}/"
            f"{metrics['valid/tasks']}{' [best]' if improved else ''}"
        )
        return score

    score = math.nan
    try:
        if validator is not None and start == 0:
            score = validate(0)  # the initialization's score: the start of the curve
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
                state, metrics = step_fn(state, data, trainer.hparams)
                pending.append((step, metrics))
                last = step == cfg.num_steps
                validate_now = validator is not None and (step % cfg.validate_every == 0 or last)
                save_now = manager.should_save(step) or last
                first = t_mark is None
                if step % cfg.log_every and not (first or last or validate_now or save_now):
                    continue
                rows = jax.device_get(pending)
                pending = []
                now = time.perf_counter()
                if first:  # the first step includes compilation: report it, time from here
                    console.print(f"first outer step (build, compile, run): {now - t_first:.1f} s")
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
                if validate_now:
                    score = validate(step)
                    t_mark = time.perf_counter()  # validation time is not meta-training time
                log.flush()
                if save_now:
                    manager.save(step, state, cfg.trajectory())
                    checkpoint.save(out / "portable", step, portable(state), cfg.trajectory(), keep=1)
                loss = rows[-1][1]["meta_loss"]
                bar.update(
                    task,
                    completed=step,
                    outer=rate,
                    inner=rate * inner_per_step,
                    loss=float(loss),
                    valid=score,
                )
    finally:
        log.close()
    save_theta(out / "theta.safetensors", trainer.learned, state.theta)
    console.print(f"theta saved to {out / 'theta.safetensors'} (skipped updates: {int(state.num_skipped)})")
    if best is not None:
        console.print(
            f"best validation score {best['score']:.4f} at step {best['step']}: {out / 'best.safetensors'}"
        )
    return state


def _resume(cfg: MetaTrainConfig, out: Path, manager: CheckpointManager, state: OuterState, console: Console):
    """(state, step) to continue from: the newest intact full checkpoint, else the portable one."""
    expect = checkpoint_expectation(cfg, _newest_config(manager.directory))
    skipped: list = []
    try:
        restored = manager.restore_latest(state, expect_config=expect, skipped=skipped)
    except TemplateMismatch as err:  # same config, another state structure (an older lopt): portable
        if latest(out / "portable") is None:
            raise
        console.print(
            f"[yellow]{err}: the full checkpoints hold another state structure; trying the portable one.[/]"
        )
        restored = None
    except CheckpointMismatch:
        raise
    except CheckpointError as err:  # every full checkpoint is corrupt: try the portable one
        console.print(f"[yellow]{err}[/]")
        restored = None
    for err in skipped:
        console.print(
            f"[yellow]passing over a corrupt checkpoint: {err.path} ({err.cause}); it is left in place.[/]"
        )
    portable_dir = out / "portable"
    if restored is not None:  # an intact full checkpoint: bitwise, preferred even to a newer portable one
        full_step = restored[2]
        console.print(f"resuming from step {full_step} ({checkpoint_path(manager.directory, full_step)})")
        return restored[0], full_step
    newest_portable = latest(portable_dir)
    if newest_portable is None:
        if not list_checkpoints(manager.directory):
            console.print(
                f"[yellow]--resume: no checkpoint in {manager.directory} or {portable_dir}, "
                "starting from step 0.[/]"
            )
            return state, 0
        raise ConfigError(
            f"--resume: no intact checkpoint in {manager.directory} and no portable one in {portable_dir}."
        )
    expect = checkpoint_expectation(cfg, _newest_config(portable_dir))
    got = checkpoint.restore_latest(portable_dir, portable(state), expect_config=expect)
    if got is None:
        raise ConfigError(f"--resume: no intact portable checkpoint in {portable_dir}.")
    p, _, step = got
    console.print(
        f"[yellow]resuming from the portable checkpoint of step {step} ({latest(portable_dir)}): theta, "
        "the outer optimizer and the key continue; the particles restart on fresh tasks, so the run "
        "is not bitwise the uninterrupted one.[/]"
    )
    manager.last_step = step
    return state._replace(
        theta=p.theta, opt_state=p.opt_state, step=p.step, key=p.key, num_skipped=p.num_skipped
    ), step


REFERENCES = (
    "references.json"  # the groups' L_ref, recorded so a resumed run (any machine) keeps its objective
)


def _references(cfg: MetaTrainConfig, trainer: MetaTrainer) -> dict:
    return {
        "loss_reference": cfg.loss_reference,
        "steps": cfg.horizon[1],
        "groups": trainer.describe(),
        "references": [float(est.loss_reference) for est in trainer.estimators],
    }


def _read_references(out: Path, cfg: MetaTrainConfig) -> list[float] | None:
    """The L_ref a run recorded in ``<out>/references.json`` (None if it recorded none: computed anew)."""
    path = out / REFERENCES
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        refs = [float(r) for r in record["references"]]
        recorded = (record["loss_reference"], int(record["steps"]))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"--resume: {path} is not a references file ({err!r}); move it away to recompute."
        ) from err
    if recorded != (cfg.loss_reference, cfg.horizon[1]):
        raise ConfigError(
            f"--resume: {path} holds references of kind {recorded[0]!r} at {recorded[1]} steps, the config "
            f"asks for {cfg.loss_reference!r} at {cfg.horizon[1]}: a foreign run's file; move it away to recompute."
        )
    return refs


def _newest_config(directory: Path) -> dict | None:
    """The config of the newest checkpoint whose header can be read (a corrupt one is passed over)."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return read_config(path)
        except CheckpointError:
            continue
    return None


def _read_best(out: Path) -> dict | None:
    try:
        return json.loads((out / "best.json").read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)
