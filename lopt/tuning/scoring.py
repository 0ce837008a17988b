"""Scores, normalization and selection of search results (definitions in `lopt.tuning`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lopt.tuning.cache import SearchResult

CLIP = 2.0  # cap of the normalized loss; a failed (diverged) run counts as CLIP


def score(result: SearchResult, split: str = "outer_valid", metric: str = "loss") -> np.ndarray:
    """(C,) final ``metric`` on ``split`` (at the last evaluation step), median over seeds."""
    return np.median(np.asarray(result.curves.eval[split][metric])[..., -1], axis=-1)


def failed(result: SearchResult) -> np.ndarray:
    """(C,) bool: some seed diverged, or the final outer-valid or test loss is not finite."""
    c = result.curves
    num_steps = c.train_loss.shape[-1]
    bad = (np.asarray(c.diverged_step) < num_steps).any(-1)
    for split in ("outer_valid", "test"):
        if split in c.eval:
            bad |= ~np.isfinite(np.asarray(c.eval[split]["loss"])[..., -1]).all(-1)
    return np.asarray(bad)


def init_loss(result: SearchResult, split: str = "outer_valid") -> float:
    """Loss at initialization (step 0) on ``split``, median over seeds (the same for every trial)."""
    return float(np.median(np.asarray(result.curves.eval[split]["loss"])[0, :, 0]))


def best_scores(results: Sequence[SearchResult], split: str = "outer_valid") -> float:
    """L_best: the lowest score of any non-failed trial among ``results`` (runs on one task);
    the lowest finite score when all failed, L_init when none is finite."""
    scores = np.concatenate([score(r, split) for r in results])
    ok = np.concatenate([~failed(r) for r in results]) & np.isfinite(scores)
    if ok.any():
        return float(scores[ok].min())
    finite = scores[np.isfinite(scores)]
    return float(finite.min()) if finite.size else init_loss(results[0], split)


def normalize(loss: Any, best: Any, init: Any, clip: float = CLIP) -> np.ndarray:
    """clip((L − L_best) / (L_init − L_best), 0, clip); a non-finite L gives ``clip``.

    Broadcasts. The gap L_init − L_best is floored at 1e-8 · max(1, |L_init|) so a task where no run
    improved on the initialization does not divide by zero (every other run then counts as ``clip``).
    """
    loss, best, init = (np.asarray(x, np.float64) for x in (loss, best, init))
    gap = np.maximum(init - best, 1e-8 * np.maximum(1.0, np.abs(init)))
    with np.errstate(invalid="ignore", over="ignore"):
        n = (loss - best) / gap
    return np.where(np.isfinite(n), np.clip(n, 0.0, clip), clip)


def select_per_task(scores: np.ndarray, failed: np.ndarray) -> int:
    """Index of the lowest score among trials that did not fail; -1 when every trial failed."""
    scores = np.where(failed | ~np.isfinite(scores), np.inf, np.asarray(scores, np.float64))
    return -1 if np.isinf(scores).all() else int(np.argmin(scores))


def select_global(norm: np.ndarray, failed: np.ndarray) -> int:
    """The trial with the lowest mean normalized loss over tasks; ``norm`` and ``failed`` are (T, C).

    Failed entries count as `CLIP`. A trial that failed on any task is never chosen while some trial
    failed on none; otherwise the lowest mean wins (and reports diverged on the tasks it failed)."""
    norm = np.where(failed, CLIP, np.asarray(norm, np.float64))
    mean = norm.mean(0)
    ok = ~failed.any(0)
    return int(np.argmin(np.where(ok, mean, np.inf) if ok.any() else mean))
