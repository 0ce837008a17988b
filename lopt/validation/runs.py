"""One validation run: the final outer-valid loss of trials of an optimizer on a task.

Every optimizer is run with the same keys on a task (common random numbers: the same
initializations and batches for Adam's references and for every theta), with the inner-valid loss
fed to learned optimizers as in meta-training (`lopt.evaluate`), and only the outer-valid split
measured, at step 0 and at the last step.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lopt.evaluate import evaluate_hparams
from lopt.tasks.base import Task

EVAL_BATCHES = 8  # outer-valid batches averaged for a final loss
PROTOCOL_VERSION = 1  # bump when the meaning of a validation number changes
VALIDATION_SEED = 7  # the run keys: fold_in(key(VALIDATION_SEED), task fingerprint)


def run_key(task: Task) -> jax.Array:
    from lopt.tuning import task_fingerprint

    return jax.random.fold_in(jax.random.key(VALIDATION_SEED), int(task_fingerprint(task)[:7], 16))


def final_losses(task: Task, make: Any, trials: Any, *, steps: int, seeds: int) -> tuple[np.ndarray, ...]:
    """(final (C, S), init (S,), diverged (C, S)) outer-valid losses of the C ``trials`` (a pytree with
    a leading axis C) built by ``make`` (a static, hashable constructor), ``seeds`` seeds each."""
    curves = evaluate_hparams(
        run_key(task),
        task,
        trials,
        make=make,
        num_steps=steps,
        num_seeds=seeds,
        eval_every=steps,
        eval_splits=("outer_valid",),
        eval_batches=EVAL_BATCHES,
    )
    loss = np.asarray(curves.eval["outer_valid"]["loss"])  # (C, S, 2): steps 0 and T
    diverged = np.asarray(curves.diverged_step) < steps
    return loss[..., -1], loss[0, :, 0], diverged
