"""The Lookahead study: Lookahead(Adam) and Lookahead(SGD) against their inner optimizers over a
learning-rate sweep on tasks of different families: final loss against learning rate, the spread
across seeds, and the width of the range of good learning rates.

    searches = study_searches()                       # label -> Search, 15 learning rates each
    results = {task: {label: run_search(task, s, ...) for label, s in searches.items()}}
    study = summarize(results)                         # per-lr curves, a table and findings

The claim under test (Zhang et al. 2019): Lookahead reduces the variance of its inner optimizer
and its sensitivity to hyperparameters, at a small or no cost in final loss. With k = 5 and
α = 0.5 the slow weights move by about half of what the fast weights did, so the best learning
rate of Lookahead is expected to sit somewhat higher than its inner optimizer's.

References: Zhang, Lucas, Hinton, Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back",
arXiv:1907.08610.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np

from lopt.report.render import fmt
from lopt.tuning import (
    ADAM_LR_GRID,
    CLIP,
    Search,
    SearchResult,
    best_scores,
    failed,
    init_loss,
    lr_search,
    normalize,
    score,
    select_per_task,
)

SGD_LR_GRID = np.logspace(-4, 1, 15).astype(np.float32)  # 15 log-spaced SGD rates in [1e-4, 10]
GOOD = 0.1  # a learning rate is "good" when its normalized outer-valid loss is at most this
INNER = ("adam", "sgd")


def study_searches(k: int = 5, alpha: float = 0.5) -> dict[str, Search]:
    """label -> learning-rate search: adam, lookahead(adam), sgd, lookahead(sgd)."""
    out = {}
    for inner, grid in (("adam", ADAM_LR_GRID), ("sgd", SGD_LR_GRID)):
        out[inner] = lr_search(inner, grid)
        out[f"lookahead({inner})"] = lr_search(inner, grid, lookahead_k=k, lookahead_alpha=alpha)
    return out


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One optimizer's learning-rate sweep on one task (arrays of shape (C,) over the grid)."""

    lrs: np.ndarray
    test: np.ndarray  # (C, S) final test loss of each seed
    norm_valid: np.ndarray  # (C,) normalized final outer-valid loss (median over seeds)
    failed: np.ndarray  # (C,) bool
    best: int  # index selected on outer-valid, -1 if every rate failed

    @property
    def good(self) -> int:
        """Number of grid rates whose normalized outer-valid loss is at most `GOOD`."""
        return int(((self.norm_valid <= GOOD) & ~self.failed).sum())


def summarize(results: Mapping[str, Mapping[str, SearchResult]], searches: Mapping[str, Search]) -> dict:
    """``results``: task -> label -> the result of ``searches[label]`` (see `study_searches`).

    Per task, outer-valid losses are normalized against the best run of the four sweeps. Returns
    ``{"sweeps": task -> label -> Sweep, "rows": one table row per (task, optimizer), "findings":
    sentences}``; the learning rate of each sweep is selected on outer-valid, reported on test."""
    sweeps: dict[str, dict[str, Sweep]] = {}
    rows = []
    for task, by_label in results.items():
        runs = list(by_label.values())
        best_v, init_v = best_scores(runs, "outer_valid"), init_loss(runs[0], "outer_valid")
        sweeps[task] = {}
        for label, res in by_label.items():
            bad = failed(res)
            norm = np.where(bad, CLIP, normalize(score(res, "outer_valid"), best_v, init_v))
            test = np.asarray(res.curves.eval["test"]["loss"])[..., -1]  # (C, S)
            lrs = np.asarray(searches[label].trials["learning_rate"])
            sw = Sweep(lrs, test, norm, bad, select_per_task(score(res, "outer_valid"), bad))
            sweeps[task][label] = sw
            b = sw.best
            rows.append(
                {
                    "task": task,
                    "optimizer": label,
                    "best_lr": float(sw.lrs[b]) if b >= 0 else float("nan"),
                    "test_loss": float(np.median(test[b])) if b >= 0 else float("nan"),
                    "seed_std": float(test[b].std()) if b >= 0 else float("nan"),
                    "median_seed_std": float(np.median(test[~bad].std(-1))) if (~bad).any() else float("nan"),
                    "good_lrs": sw.good,
                    "diverged_lrs": int(bad.sum()),
                    "num_lrs": len(sw.lrs),
                    "at_grid_edge": b in (0, len(sw.lrs) - 1),
                }
            )
    return {"sweeps": sweeps, "rows": rows, "findings": findings(rows)}


def findings(rows: list[dict]) -> list[str]:
    """Plain-language comparisons of each Lookahead against its inner optimizer, over the tasks."""
    by = {(r["task"], r["optimizer"]): r for r in rows}
    tasks = sorted({r["task"] for r in rows})
    out = []
    for inner in INNER:
        la = f"lookahead({inner})"
        pairs = [(by[t, inner], by[t, la]) for t in tasks if (t, inner) in by and (t, la) in by]
        if not pairs:
            continue
        n = len(pairs)
        better = sum(b["test_loss"] < a["test_loss"] for a, b in pairs)
        ratio = [b["median_seed_std"] / a["median_seed_std"] for a, b in pairs if a["median_seed_std"] > 0]
        wider = sum(b["good_lrs"] > a["good_lrs"] for a, b in pairs)
        narrower = sum(b["good_lrs"] < a["good_lrs"] for a, b in pairs)
        shift = [
            np.log10(b["best_lr"] / a["best_lr"])
            for a, b in pairs
            if np.isfinite(a["best_lr"]) and np.isfinite(b["best_lr"])
        ]
        if not shift:
            out.append(f"{la} vs {inner}: every rate diverged somewhere.")
            continue
        std_ratio = f"{float(np.median(ratio)):.2f}x" if ratio else "n/a"
        out.append(
            f"{la} vs {inner} on {n} tasks: lower final test loss at its tuned learning rate on {better} of {n}; "
            f"median across-seed std of the final test loss (over the non-diverged rates) "
            f"{std_ratio} that of {inner}; "
            f"more good learning rates (normalized outer-valid <= {GOOD}) on {wider} tasks, fewer on {narrower} "
            f"(total {sum(b['good_lrs'] for _, b in pairs)} vs {sum(a['good_lrs'] for a, _ in pairs)}); "
            f"its best learning rate is {np.median(shift):+.2f} decades from {inner}'s (median)."
        )
        edge = sum(a["at_grid_edge"] or b["at_grid_edge"] for a, b in pairs)
        if edge:
            out[-1] += (
                f" On {edge} of {n} tasks a best rate sits at the edge of the grid, so the tuned optimum"
                " may lie outside it."
            )
    return out


class LookaheadSection:
    """The study as a section of a `lopt eval` report (`lopt.report.StudySection`)."""

    name = "lookahead_study"

    def searches(self) -> dict[str, Search]:
        return study_searches()

    def summarize(
        self, results: Mapping[str, Mapping[str, SearchResult]], searches: Mapping[str, Search]
    ) -> dict:
        return summarize(results, searches)

    def figures(self, out_dir: str, summary: dict) -> dict[str, str]:
        from lopt.report.figures import lookahead_figure

        path = "figures/lookahead_study.png"
        lookahead_figure(os.path.join(out_dir, path), summary["sweeps"])
        return {"lookahead": path}

    def blocks(self, summary: dict, figs: Mapping[str, str]) -> list[tuple]:
        text = (
            "Lookahead (k=5, alpha=0.5) around Adam and SGD against the bare optimizer, over 15 "
            "learning rates, on tasks of different families. Final test loss against learning rate "
            "(median over seeds; band: min to max over seeds). 'good lrs': rates whose normalized "
            f"outer-valid loss is at most {GOOD}."
        )
        blocks: list[tuple] = [("h2", "Lookahead study"), ("p", text)]
        if "lookahead" in figs:
            blocks.append(("img", figs["lookahead"], "Lookahead study"))
        header = [
            "task",
            "optimizer",
            "best lr",
            "test loss",
            "seed std at best lr",
            "median seed std",
            "good lrs",
            "diverged lrs",
        ]
        rows = [
            [
                r["task"],
                r["optimizer"],
                fmt(r["best_lr"], 3),
                fmt(r["test_loss"]),
                fmt(r["seed_std"], 3),
                fmt(r["median_seed_std"], 3),
                f"{r['good_lrs']}/{r['num_lrs']}",
                f"{r['diverged_lrs']}/{r['num_lrs']}",
            ]
            for r in summary["rows"]
        ]
        return [*blocks, ("table", header, rows), ("list", summary["findings"])]

    def to_json(self, summary: dict) -> dict:
        return {"rows": summary["rows"], "findings": summary["findings"]}


SECTION = LookaheadSection()


@dataclasses.dataclass(frozen=True)
class Config:
    """The Lookahead study on its own (`lopt eval` also runs it as a report section)."""

    suite: str = "test"  # task suite
    num_tasks: int = (
        3  # tasks of different families: the one of fewest FLOPs per step of each, cheapest first
    )
    steps: int = 1000  # training steps per run
    seeds: int = 3  # seeds per learning rate (vmapped)
    eval_every: int = 100  # steps between evaluations
    seed: int = 0  # seed of task sampling and of every run
    cache: str = ""  # cache of the runs ("": $LOPT_CACHE, else runs/cache)
    out: str = "runs/lookahead"  # lookahead.md, lookahead.json, lookahead_study.png


def run(cfg: Config) -> dict:
    """Run the four sweeps on ``num_tasks`` tasks; write the table, the findings and the figure."""
    import functools
    import json

    from lopt.report.render import to_markdown
    from lopt.tasks.profile import flops_per_step
    from lopt.tasks.suites import get_suite
    from lopt.tuning import default_cache_dir, run_search

    cost = functools.partial(flops_per_step, compile=False)
    tasks = sorted(get_suite(cfg.suite).tasks(1, cfg.seed, candidates=3, cost=cost), key=cost)[
        : cfg.num_tasks
    ]
    searches = study_searches()
    options = {"num_steps": cfg.steps, "num_seeds": cfg.seeds, "eval_every": cfg.eval_every, "seed": cfg.seed}
    cache = cfg.cache or default_cache_dir()
    results = {
        t.name: {k: run_search(t, s, **options, cache=cache) for k, s in searches.items()} for t in tasks
    }
    summary = summarize(results, searches)
    os.makedirs(os.path.join(cfg.out, "figures"), exist_ok=True)
    blocks = SECTION.blocks(summary, SECTION.figures(cfg.out, summary))
    with open(os.path.join(cfg.out, "lookahead.md"), "w") as f:
        f.write(to_markdown(blocks))
    with open(os.path.join(cfg.out, "lookahead.json"), "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), **SECTION.to_json(summary)}, f, indent=1, default=float)
    print("\n".join(summary["findings"]))
    return summary
