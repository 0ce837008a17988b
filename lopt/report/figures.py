"""The report's figures (matplotlib, Agg backend, PNG): per-task loss curves, the improvement of
each optimizer over each baseline (box plots over tasks, as in Metz et al. 2020), and the
Lookahead study (final loss against learning rate, with the spread across seeds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _grid(n: int, cols: int, size=(4.2, 3.0)):
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over the last axis (NaN-aware: a diverged tail stays NaN)."""
    if width <= 1 or x.shape[-1] < width:
        return x
    kernel = np.ones(width) / width
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), -1, x)


def curves_figure(path: str, panels: Sequence[tuple[str, Mapping[str, dict]]]) -> None:
    """One panel per task: training loss (smoothed, median over seeds; lines) and test loss at the
    evaluation steps (markers) of each method. ``panels``: (task name, method -> {"train": (S, N),
    "eval_steps": (M,), "test": (S, M), "diverged": bool})."""
    fig, axes = _grid(len(panels), 3)
    for ax, (task, methods) in zip(axes, panels):
        for j, (name, c) in enumerate(methods.items()):
            color = _COLORS[j % len(_COLORS)]
            train = np.asarray(c["train"], np.float64)
            width = max(1, train.shape[-1] // 50)
            y = np.median(_smooth(train, width), 0)
            ax.plot(
                np.arange(y.shape[0]) + width - 1,
                y,
                color=color,
                lw=1,
                alpha=0.8,
                label=name + (" (diverged)" if c["diverged"] else ""),
            )
            ax.plot(c["eval_steps"], np.median(np.asarray(c["test"]), 0), "o", color=color, ms=3)
        ax.set_title(task, fontsize=7)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("loss (line: train, dots: test)", fontsize=7)
        ax.tick_params(labelsize=6)
        finite = [v for c in methods.values() for v in np.ravel(c["test"]) if np.isfinite(v)]
        if finite:  # keep diverged spikes from flattening the interesting part
            lo, hi = np.percentile(finite, 1), np.percentile(finite, 99)
            pad = 0.15 * (hi - lo) + 1e-6
            ax.set_ylim(lo - pad, hi + 3 * pad)
    if axes:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def improvement_figure(path: str, improvement: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """One panel per baseline: box plots over tasks of each other method's improvement in normalized
    test loss over it (positive: the method is better). ``improvement``: baseline -> method -> (T,)."""
    fig, axes = _grid(len(improvement), 2, size=(6.0, 3.4))
    order = list(dict.fromkeys([*improvement, *(m for d in improvement.values() for m in d)]))
    color = {m: _COLORS[i % len(_COLORS)] for i, m in enumerate(order)}  # one color per method
    for ax, (baseline, by_method) in zip(axes, improvement.items()):
        names = list(by_method)
        data = [np.asarray(by_method[m], np.float64) for m in names]
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.boxplot(data, showfliers=True, widths=0.6)
        for i, d in enumerate(data):  # the tasks themselves, jittered
            x = i + 1 + np.linspace(-0.15, 0.15, len(d)) if len(d) > 1 else np.array([i + 1.0])
            ax.plot(x, d, ".", color=color[names[i]], ms=4, alpha=0.7)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=25, ha="right", fontsize=7)
        ax.set_title(f"improvement over {baseline}", fontsize=9)
        ax.set_ylabel("normalized test loss: baseline − method", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lookahead_figure(path: str, sweeps: Mapping[str, Mapping[str, Any]]) -> None:
    """One panel per task: final test loss against learning rate for each optimizer (median over
    seeds; the band spans the seeds' min to max; diverged rates as crosses on the top edge). ``sweeps``: task ->
    label -> `lopt.lookahead_study.Sweep`."""
    fig, axes = _grid(len(sweeps), 3)
    for ax, (task, by_label) in zip(axes, sweeps.items()):
        finite = []
        for j, (label, sw) in enumerate(by_label.items()):
            color = _COLORS[j % len(_COLORS)]
            test = np.where(sw.failed[:, None], np.nan, sw.test)
            ls = "--" if label.startswith("lookahead") else "-"
            ax.plot(sw.lrs, np.median(test, 1), ls, color=color, marker=".", ms=4, label=label)
            ax.fill_between(sw.lrs, np.min(test, 1), np.max(test, 1), color=color, alpha=0.2)
            finite.extend(v for v in np.ravel(test) if np.isfinite(v))
        ax.set_xscale("log")
        if finite:
            lo, hi = np.percentile(finite, 0), np.percentile(finite, 90)
            pad = 0.1 * (hi - lo) + 1e-6
            ax.set_ylim(lo - pad, hi + pad)
        top = ax.get_ylim()[1]
        for j, sw in enumerate(by_label.values()):  # diverged rates: crosses along the top edge
            if sw.failed.any():
                color = _COLORS[j % len(_COLORS)]
                ax.plot(
                    sw.lrs[sw.failed],
                    np.full(int(sw.failed.sum()), top),
                    "x",
                    color=color,
                    ms=5,
                    clip_on=False,
                )
        ax.set_title(task, fontsize=7)
        ax.set_xlabel("learning rate", fontsize=7)
        ax.set_ylabel("final test loss", fontsize=7)
        ax.tick_params(labelsize=6)
    if axes:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def meta_loss_figure(path: str, curves: Mapping[str, Sequence[float]], width: int = 20) -> None:
    """Meta-loss against outer step, one line per run (moving average over ``width`` steps, raw in
    light), e.g. AdamW and a learned optimizer as the outer optimizer side by side."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for i, (name, values) in enumerate(curves.items()):
        y = np.asarray(values, np.float64)
        x = np.arange(1, len(y) + 1)
        color = _COLORS[i % len(_COLORS)]
        ax.plot(x, y, color=color, alpha=0.2, lw=0.8)
        s = _smooth(y, width)
        ax.plot(x[len(y) - len(s) :], s, color=color, lw=1.6, label=name)
    ax.set_xlabel("outer step")
    ax.set_ylabel("meta-loss (normalized, L / L0)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def validation_figure(path: str, runs: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    """Validation score against CPU-hours of meta-training, one line per run (``runs``: name ->
    {"cpu_hours": [...], "score": [...], "global_score": float}); AdamLR-global's score dashed."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for i, (name, r) in enumerate(runs.items()):
        ax.plot(r["cpu_hours"], r["score"], marker="o", ms=3, color=_COLORS[i % len(_COLORS)], label=name)
    globals_ = [r["global_score"] for r in runs.values() if "global_score" in r]
    if globals_:
        ax.axhline(globals_[0], ls="--", color="gray", label="AdamLR-global")
    ax.axhline(0.0, ls=":", color="black", label="AdamLR-per-task")
    ax.set_xlabel("meta-training CPU-hours (one core)")
    ax.set_ylabel("validation score (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
