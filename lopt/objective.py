r"""The reference loss L_ref of each task group's meta-objective: a good loss, from tuned Adam.

The meta-loss of `lopt.unroll` is a function of the relative excess loss
x = (L − L_ref) / |L_0 − L_ref|. With L_ref = 0 (``reference="zero"``) a language model whose
loss cannot go below ~1.5 nats, or a VAE floored near its data's entropy, sits at x ≈ 0.3-0.5
however good the optimizer is, and a flow whose loss goes negative leaves the range altogether.
``reference="adam"`` instead takes, per static group, the best final outer-valid loss that Adam
reaches on one task of the group over `REFERENCE_GRID` (one seed, ``steps`` steps, the longest
horizon of the run), less a margin:

.. math::
    L_\text{ref} = L_\text{Adam} - m\,(L_0 - L_\text{Adam}), \qquad m = \texttt{REFERENCE\_MARGIN}

so x = m / (1 + m) ≈ 0.09 where tuned Adam ends, x → 0 only for an optimizer much better than
it, and a log objective resolves the last part of training. The runs are cached on disk
(`lopt.tuning.run_search`), so a group's reference is computed once per machine; it depends
only on the group (never on theta), so the ES estimators stay unbiased for the objective it
defines.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lopt.tasks.base import TaskConfig, TaskFamily
from lopt.validate import check_choice

REFERENCES = ("zero", "adam")
REFERENCE_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # Adam learning rates tried per group
REFERENCE_MARGIN = 0.1  # m: L_ref sits this fraction of Adam's progress below Adam's final loss
REFERENCE_SEED = 0  # the task of the group and the run's seed


def group_reference(
    family: TaskFamily, static: Any, *, kind: str = "adam", steps: int = 1000, cache: str | None = None
) -> float:
    """L_ref of the group (``family``, ``static``): 0.0 for ``kind="zero"``, else the formula above
    (the task is the group's dynamic sample from `REFERENCE_SEED`; ``cache`` defaults to
    `lopt.tuning.default_cache_dir`). When every Adam run diverged, L_ref falls back to 0."""
    check_choice("loss reference", kind, REFERENCES)
    if kind == "zero":
        return 0.0
    from lopt.tuning import default_cache_dir, failed, init_loss, lr_search, run_search, score

    dynamic = family.sample_dynamic(jax.random.key(REFERENCE_SEED), static)
    task = family.task(TaskConfig(static, dynamic))
    search = lr_search("adam", grid=REFERENCE_GRID)
    result = run_search(
        task,
        search,
        num_steps=steps,
        num_seeds=1,
        eval_every=steps,
        seed=REFERENCE_SEED,
        cache=cache or default_cache_dir(),
    )
    scores = np.where(failed(result), np.inf, score(result, "outer_valid"))
    if not np.isfinite(scores).any():
        return 0.0
    best, init = float(np.min(scores)), init_loss(result, "outer_valid")
    return best - REFERENCE_MARGIN * max(init - best, 0.0)
