"""A meta-training run's directory, as `meta_train` and the distributed learner both write it.

    state, start, manager = open_run(cfg, out, state, console)   # resume, or refuse to overwrite
    write_config(out, cfg, trainer)                              # config.json
    best = BestTheta(out, trainer.learned, start)                # best.safetensors / best.json
    save_checkpoints(manager, out, step, state, cfg)             # checkpoints/ and portable/

Also here: ``references.json`` (the groups' loss references, so a resumed run keeps its
objective) and the portable part of an outer state (`PortableState`).
"""

from __future__ import annotations

import dataclasses
import json
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
from lopt.meta_train.outer import OuterState
from lopt.meta_train.trainer import MetaTrainer
from lopt.optimizers.learned import LearnedOptimizer, save_theta
from lopt.serialization import write_json
from lopt.validate import ConfigError

REFERENCES = (
    "references.json"  # the groups' L_ref, recorded so a resumed run (any machine) keeps its objective
)


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


def open_run(
    cfg: MetaTrainConfig, out: Path, state: OuterState, console: Console
) -> tuple[OuterState, int, CheckpointManager]:
    """(state, start step, checkpoint manager) of the run in ``out``: with ``cfg.resume`` the
    checkpointed state (`_resume`), else ``state`` at step 0 -- refused if ``out`` holds checkpoints."""
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
    return state, start, manager


def build_trainer(cfg: MetaTrainConfig, out: Path) -> MetaTrainer:
    """The run's trainer; on ``--resume`` with the loss references the run recorded (`read_references`)."""
    out.mkdir(parents=True, exist_ok=True)
    return MetaTrainer.from_config(cfg, references=read_references(out, cfg) if cfg.resume else None)


def write_config(out: Path, cfg: MetaTrainConfig, trainer: MetaTrainer) -> None:
    """``config.json`` (the resolved config and the task groups) and ``references.json``; call it
    after `open_run`'s checks, so that it never overwrites another run's files."""
    (out / "config.json").write_text(
        json.dumps({"config": dataclasses.asdict(cfg), "groups": trainer.describe()}, indent=2) + "\n"
    )
    write_json(out / REFERENCES, references(cfg, trainer))


def save_checkpoints(
    manager: CheckpointManager, out: Path, step: int, state: OuterState, cfg: MetaTrainConfig
) -> None:
    """The full checkpoint (rotated by ``manager``) and the portable one beside it (the newest only)."""
    manager.save(step, state, cfg.trajectory())
    checkpoint.save(out / "portable", step, portable(state), cfg.trajectory(), keep=1)


class BestTheta:
    """The theta with the best validation number so far (``key``: ``valid/score``, the mean, or
    ``valid/median``): ``best.safetensors`` and ``best.json`` (its step, the number it was kept by,
    CPU time and the validation's scalar metrics); read back on resume."""

    def __init__(self, out: Path, learned: LearnedOptimizer, start: int, key: str = "valid/score"):
        self.out, self.learned, self.key = out, learned, key
        self.record: dict | None = _read_best(out) if start else None

    def update(self, step: int, metrics: dict, theta: Any) -> bool:
        """Keep ``theta`` if its ``metrics[key]`` beats the best's; True if it did. A record kept by
        another key (or without it, from an older lopt) is beaten by the first validation."""
        value = metrics[self.key]
        best = (
            None
            if self.record is None or self.record.get("kept_by", "valid/score") != self.key
            else self.record
        )
        improved = best is None or value < best[self.key]
        if improved:
            save_theta(self.out / "best.safetensors", self.learned, theta)
            self.record = {
                "step": step,
                "score": metrics["valid/score"],
                "kept_by": self.key,
                "cpu_seconds": metrics["cpu_seconds"],
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
            write_json(self.out / "best.json", self.record)
        return improved


def validation_line(step: int, metrics: dict, improved: bool) -> str:
    """One console line for a validation (`lopt.validation.Validator`'s metrics)."""
    long = f", at 10 T {metrics['valid_long/score']:.4f}" if "valid_long/score" in metrics else ""
    return (
        f"step {step}: validation score {metrics['valid/score']:.4f}{long}, median "
        f"{metrics['valid/median']:.4f} (0 = per-task-tuned Adam; "
        f"AdamLR-global {metrics['valid/global_score']:.4f}), wins vs AdamLR-global "
        f"{metrics['valid/wins_global']}/{metrics['valid/tasks']}{' [best]' if improved else ''}"
    )


def _resume(cfg: MetaTrainConfig, out: Path, manager: CheckpointManager, state: OuterState, console: Console):
    """(state, step) to continue from: the newest intact full checkpoint, else the portable one."""
    restored = _restore_full(cfg, out, manager, state, console)
    if restored is not None:  # an intact full checkpoint: bitwise, preferred even to a newer portable one
        full_step = restored[2]
        console.print(f"resuming from step {full_step} ({checkpoint_path(manager.directory, full_step)})")
        return restored[0], full_step
    return _restore_portable(cfg, out, manager, state, console)


def _restore_full(
    cfg: MetaTrainConfig, out: Path, manager: CheckpointManager, state: OuterState, console: Console
):
    """`CheckpointManager.restore_latest`, or None when only the portable checkpoint can serve."""
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
    return restored


def _restore_portable(
    cfg: MetaTrainConfig, out: Path, manager: CheckpointManager, state: OuterState, console: Console
):
    """(state, step) from the portable checkpoint: theta, the outer optimizer and the key; the
    particles of ``state`` (fresh tasks). Step 0 if there is no checkpoint at all."""
    portable_dir = out / "portable"
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


def references(cfg: MetaTrainConfig, trainer: MetaTrainer) -> dict:
    """What ``references.json`` holds: the kind and horizon of the loss references, and one per group."""
    return {
        "loss_reference": cfg.loss_reference,
        "steps": cfg.horizon[1],
        "groups": trainer.describe(),
        "references": [float(est.loss_reference) for est in trainer.estimators],
    }


def read_references(out: Path, cfg: MetaTrainConfig) -> list[float] | None:
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
