"""Selection and comparison of search results (pure; no training): one `Outcome` per (task,
method), and the improvement of every method over every baseline."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from lopt.config import DEFAULT_METHODS
from lopt.tuning import (
    CLIP,
    Method,
    SearchResult,
    best_scores,
    failed,
    init_loss,
    normalize,
    score,
    select_global,
    select_per_task,
)

# the references of the improvement section: every baseline `lopt eval` runs by default
BASELINE_METHODS = DEFAULT_METHODS


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One method on one task, after selection."""

    task: str
    method: str
    trial: int  # index in the method's search; -1 when every trial failed
    hparams: dict  # the selected trial's hparams
    diverged: bool  # the selected trial failed (a global or fixed setting), or every trial failed
    valid_loss: float  # final outer-valid loss, median over seeds (NaN if diverged)
    test_loss: float  # final test loss, median over seeds (NaN if diverged)
    test_std: float  # its std over seeds
    test_accuracy: float | None  # final test accuracy, median over seeds (classifiers)
    norm_test: float  # normalized test loss (CLIP if diverged)


def compare(results: Mapping[str, Mapping[str, SearchResult]], methods: Sequence[Method]) -> list[Outcome]:
    """Select each method's setting on every task and score it.

    ``results``: task -> search name -> result (every method's search on every task). Per task,
    L_best and L_init (see `lopt.tuning`) are taken over all these results, per split.
    """
    tasks = list(results)
    refs = {
        t: {
            s: (best_scores(list(r.values()), s), init_loss(next(iter(r.values())), s))
            for s in ("outer_valid", "test")
        }
        for t, r in results.items()
    }
    choice: dict[tuple[str, str], int] = {}
    for m in methods:
        n = m.num_trials
        rs = [results[t][m.search.name] for t in tasks]
        bad = np.stack([failed(r)[:n] for r in rs])  # (T, n)
        if m.select == "global":
            norm = np.stack([normalize(score(r)[:n], *refs[t]["outer_valid"]) for t, r in zip(tasks, rs)])
            g = select_global(norm, bad)
            choice.update({(t, m.name): g for t in tasks})  # reported diverged where it failed
        elif m.select == "per_task":
            choice.update(
                {
                    (t, m.name): select_per_task(score(r)[:n], bad[i])
                    for i, (t, r) in enumerate(zip(tasks, rs))
                }
            )
        else:
            choice.update({(t, m.name): 0 for t in tasks})
    out = []
    for t in tasks:
        for m in methods:
            i = choice[t, m.name]
            ev = results[t][m.search.name].curves.eval
            if i < 0 or failed(results[t][m.search.name])[i]:
                hparams = m.search.describe(i) if i >= 0 else {}
                nan = float("nan")
                out.append(Outcome(t, m.name, i, hparams, True, nan, nan, nan, None, CLIP))
                continue
            test = np.asarray(ev["test"]["loss"])[i, :, -1]
            acc = ev["test"].get("accuracy")
            out.append(
                Outcome(
                    t,
                    m.name,
                    i,
                    m.search.describe(i),
                    False,
                    float(np.median(np.asarray(ev["outer_valid"]["loss"])[i, :, -1])),
                    float(np.median(test)),
                    float(test.std()),
                    None if acc is None else float(np.median(np.asarray(acc)[i, :, -1])),
                    float(normalize(np.median(test), *refs[t]["test"])),
                )
            )
    return out


def improvements(outcomes: Sequence[Outcome], baselines: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """baseline -> method -> (T,) normalized test loss of the baseline minus the method's, per task
    (positive: the method beats the baseline on that task)."""
    norm: dict[str, dict[str, float]] = {}
    for o in outcomes:
        norm.setdefault(o.method, {})[o.task] = o.norm_test
    tasks = list(next(iter(norm.values())))
    return {
        b: {m: np.array([norm[b][t] - norm[m][t] for t in tasks]) for m in norm if m != b}
        for b in baselines
        if b in norm
    }


def _describe(o: Outcome) -> str:
    """The selected hparams for the table, or why there are none."""
    if o.trial < 0:
        return "every trial diverged"
    text = ", ".join(f"{k}={v:.3g}" for k, v in o.hparams.items())
    return text + " (diverged)" if o.diverged else text
