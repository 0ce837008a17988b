r"""The meta-objective of `lopt.unroll`: the normalized meta-loss ℓ (`normalize_meta_loss`), the
step weights (`step_weight`), metrics binned by episode phase (`phase_bins`), all as written in
`lopt.unroll`'s docstring; and the reference loss L_ref of each task group: a good loss, from
tuned Adam.

The meta-loss is a function of the relative excess loss
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

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks.base import TaskConfig, TaskFamily
from lopt.validate import check_choice

OBJECTIVES = ("relative", "log")
STEP_WEIGHTS = ("uniform", "ramp", "final")
LOG_FLOOR = 1e-3  # x_min of the "log" objective: relative excess losses below it count as it
FINAL_FRACTION = 0.25  # the "final" step weights cover the last quarter of each episode
NORM_EPS = 1e-6  # ε of the normalization: keeps the scale positive when L_0 = L_ref
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


def normalize_meta_loss(
    loss: jax.Array,
    init_loss: jax.Array,
    reference: float = 0.0,
    clip: float = 3.0,
    objective: str = "relative",
) -> jax.Array:
    """ℓ of the module docstring: x = (L − L_ref) / (|L_0 − L_ref| + ε); ``"relative"``: clip(x, −c, c),
    ``"log"``: clip(log max(x, x_min), log x_min, log c); NaN and ±inf map to the upper clip."""
    scale = jnp.abs(init_loss - reference) + NORM_EPS
    x = (loss - reference) / scale
    if objective == "log":
        hi = math.log(clip)
        y = jnp.log(jnp.maximum(x, LOG_FLOOR))
        return jnp.clip(jnp.where(jnp.isfinite(x), y, hi), math.log(LOG_FLOOR), hi)
    return jnp.clip(jnp.where(jnp.isfinite(x), x, clip), -clip, clip)


def step_weight(step: jax.Array, horizon: jax.Array, kind: str = "uniform") -> jax.Array:
    """w(s, H) of the module docstring for steps s in 1..H: theta-free, Σ_{s=1}^{H} w = H."""
    s = jnp.asarray(step, jnp.float32)
    h = jnp.maximum(jnp.asarray(horizon, jnp.float32), 1.0)
    if kind == "ramp":
        return 2.0 * s / (h + 1.0)
    if kind == "final":
        n = jnp.ceil(FINAL_FRACTION * h)
        return jnp.where(s > h - n, h / n, 0.0)
    return jnp.ones_like(s)


def phase_bins(
    meta_loss: jax.Array, phase: jax.Array, num_bins: int = 4, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(sums, counts), each (num_bins,): ℓ summed and counted by episode phase s/H in the bins
    (0, 1/B], (1/B, 2/B], ..., over the steps where ``mask`` (default: all), so runs and configs can
    be compared at the same point of training."""
    idx = jnp.clip(jnp.ceil(phase * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1).ravel()
    w = jnp.ones(meta_loss.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    onehot = (idx[:, None] == jnp.arange(num_bins)[None]).astype(jnp.float32) * w.ravel()[
        :, None
    ]  # no scatter
    return jnp.sum(onehot * meta_loss.ravel()[:, None], axis=0), jnp.sum(onehot, axis=0)
