r"""`lopt tune TASK`: tune a baseline's hyperparameters on one task, beside a grid and a random
search of equal compute.

    cfg = TuneConfig(optimizer="adam", hparams="learning_rate", method="pes")
    results = run_tune("mlp", cfg)        # writes <out>/results.json and <out>/tune.png

The pipeline, in order:

1. the task: ``TASK``'s family with the static structure and dynamic values sampled from
   ``task_seed`` (`lopt.hpo.es.FixedTask` pins them, so every method tunes this very task);
2. the space (`HParamSpace`): the tuned hparams, their start values and ranges (log space where
   the range is multiplicative), validated before anything runs;
3. the method (`TUNERS`), spending at most ``budget`` inner steps (default: a third of a
   ``grid_size``-point grid with ``num_seeds`` seeds of ``num_steps`` steps each):

   - ``pes`` / ``es`` / ``nres``: the meta-training estimators on theta = log-hparams
     (`lopt.hpo.es`), Adam on theta, episodes of ``num_steps`` cut into ``truncation``-step pieces;
   - ``unrolled``: Adam on the hypergradient through whole runs (`lopt.hpo.unrolled`);
   - ``truncated``: online tuning during training runs, an update every ``truncation`` steps
     (`lopt.hpo.truncated`);
   - ``ift``: implicit differentiation at the end of (warm-started) training runs
     (`lopt.hpo.implicit`), for regularization hparams only (l2 of adam8p);
   - ``grid`` / ``random``: the budget spent on full runs (``num_seeds`` seeds each) of points of a
     log-spaced grid / log-uniform draws, the best final outer-valid loss chosen;

4. the final hparams evaluated by ``num_seeds`` full runs (the grid's seeds: common random
   numbers), scored like `lopt.tuning` (final loss, median over seeds; a diverged run fails);
5. with ``compare``, a grid and a random search given the same total inner steps as the method
   (its tuning plus its final evaluation), so the comparison is at equal compute.

Every trial that diverges is recorded (``diverged: true``, NaN losses), never fatal. Compute is
counted in inner steps (one optimizer step of one training run; a step of a backward pass through
the unroll is not counted separately, its seconds are) and in wall-clock seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from lopt.config import TUNE_METHODS as METHODS  # noqa: F401  (its name here before config.py held it)
from lopt.config import TuneConfig
from lopt.hpo.tuners import DEFAULT_RANGES as DEFAULT_RANGES
from lopt.hpo.tuners import TUNERS as TUNERS
from lopt.hpo.tuners import MethodResult as MethodResult
from lopt.hpo.tuners import Setup as Setup
from lopt.hpo.tuners import _best, _scores
from lopt.hpo.tuners import parse_space as parse_space
from lopt.hpo.tuners import run_trials as run_trials
from lopt.hpo.tuners import search_points as search_points


def _final(setup: Setup, theta) -> dict:
    values = {n: np.asarray([v], np.float32) for n, v in setup.space.describe(theta).items()}
    valid, test, bad, secs = run_trials(setup, values)
    return {
        "hparams": setup.space.describe(theta),
        "outer_valid": None if bad[0] else float(valid[0]),
        "test": None if bad[0] else float(test[0]),
        "diverged": bool(bad[0]),
        "seconds": secs,
    }


def _search_summary(setup: Setup, method: str, steps: int) -> dict:
    """A grid or random search given ``steps`` inner steps, with its best trial."""
    cfg = setup.cfg
    num = max(1, steps // (cfg.num_steps * cfg.num_seeds))
    values = search_points(setup.space, num, method, cfg.seed + 1)
    valid, test, bad, secs = run_trials(setup, values)
    best = _best(valid, bad)
    n = len(valid)
    return {
        "num_trials": n,
        "inner_steps": n * cfg.num_steps * cfg.num_seeds,
        "seconds": secs,
        "trials": [
            {
                "hparams": {k: float(values[k][i]) for k in values},
                "outer_valid": None if bad[i] else float(valid[i]),
                "test": None if bad[i] else float(test[i]),
                "diverged": bool(bad[i]),
            }
            for i in range(n)
        ],
        "best": {
            "hparams": {k: float(values[k][best]) for k in values},
            "outer_valid": None if bad[best] else float(valid[best]),
            "test": None if bad[best] else float(test[best]),
        },
    }


def run_tune(task_name: str, cfg: TuneConfig, console=None) -> dict:
    """The whole command: tune, evaluate, compare; writes ``<out>/results.json`` and ``tune.png``."""
    from rich.console import Console

    console = console or Console()
    setup = Setup.build(task_name, cfg)
    budget = cfg.default_budget()
    eval_steps = cfg.num_steps * cfg.num_seeds
    searched = cfg.method in ("grid", "random")  # the search's own runs score its best trial
    tune_budget = budget if searched else max(1, budget - eval_steps)
    console.print(
        f"[bold]lopt tune[/] {setup.task.name}: {cfg.method} on {cfg.optimizer} "
        f"{', '.join(setup.space.names)}; budget {budget:,} inner steps"
    )
    os.makedirs(cfg.out, exist_ok=True)  # the resolved config goes beside the outputs, not the screen
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump({"command": f"lopt tune {task_name}", "config": dataclasses.asdict(cfg)}, f, indent=1)
    console.print(f"config: {os.path.join(cfg.out, 'config.json')}")
    t0 = time.perf_counter()
    result = _tune_with_bar(setup, cfg.method, tune_budget, console)
    tune_seconds = time.perf_counter() - t0
    if searched:  # no extra run
        final, total = _best_of_search(result.trajectory), result.inner_steps
    else:
        final, total = _final(setup, result.theta), result.inner_steps + eval_steps
    compute = {
        "budget": budget,
        "tuning_inner_steps": result.inner_steps,
        "eval_inner_steps": 0 if searched else eval_steps,
        "total_inner_steps": total,
        "tuning_seconds": tune_seconds,
        "eval_seconds": final["seconds"],
    }
    out = _results(task_name, cfg, setup, result, final, compute)
    if cfg.compare:
        for other in ("grid", "random"):
            if other != cfg.method:
                out[other] = _search_summary(setup, other, total)
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    tune_figure(os.path.join(cfg.out, "tune.png"), out)
    _print_summary(console, out)
    return out


def _tune_with_bar(setup: Setup, method: str, budget: int, console):
    """``TUNERS[method]`` within ``budget`` inner steps, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        job = bar.add_task(f"{method} (inner steps)", total=budget)
        return TUNERS[method](setup, budget, lambda n: bar.advance(job, n))


def _best_of_search(trajectory: list[dict]) -> dict:
    """The final result of a grid or random search: its best trial, scored by its own runs."""
    best = trajectory[_best(*_scores(trajectory))]
    return {
        "hparams": best["hparams"],
        "outer_valid": best["outer_valid"],
        "test": best["test"],
        "diverged": best["diverged"],
        "seconds": 0.0,
    }


def _results(task_name: str, cfg: TuneConfig, setup: Setup, result, final: dict, compute: dict) -> dict:
    """What ``results.json`` holds (before the comparison searches are added)."""
    return {
        "command": f"lopt tune {task_name}",
        "task": setup.task.name,
        "config": dataclasses.asdict(cfg),
        "space": {
            n: {"start": s, "range": list(r)}
            for n, s, r in zip(setup.space.names, setup.space.start, setup.space.ranges)
        },
        "method": cfg.method,
        "trajectory": result.trajectory,
        "final": final,
        "compute": compute,
    }


def _fmt(x) -> str:
    return "diverged" if x is None else f"{x:.5g}"


def _print_summary(console, out: dict, max_rows: int = 12) -> None:
    from rich.table import Table

    traj = out["trajectory"]
    shown = traj[:: max(1, -(-len(traj) // max_rows))]
    if shown[-1] is not traj[-1]:
        shown.append(traj[-1])
    names = list(out["space"])
    steps = Table(
        title=f"{out['method']}: hparam trajectory ({len(shown)} of {len(traj)} rows; all in results.json)"
    )
    for col in ("inner steps", *names, "meta_loss / outer_valid"):
        steps.add_column(col)
    for r in shown:
        score = r.get("meta_loss", r.get("outer_valid"))
        steps.add_row(
            f"{r['inner_steps']:,}",
            *(f"{r['hparams'][n]:.4g}" for n in names),
            "-" if score is None else f"{score:.4g}",
        )
    console.print(steps)
    table = Table(title=f"{out['task']}: final losses (median of {out['config']['num_seeds']} seeds)")
    for col in ("method", "hparams", "outer_valid", "test", "inner steps"):
        table.add_column(col)
    f = out["final"]
    hp = ", ".join(f"{k}={v:.3g}" for k, v in f["hparams"].items())
    table.add_row(
        out["method"], hp, _fmt(f["outer_valid"]), _fmt(f["test"]), f"{out['compute']['total_inner_steps']:,}"
    )
    for other in ("grid", "random"):
        if other in out:
            b = out[other]["best"]
            hp = ", ".join(f"{k}={v:.3g}" for k, v in b["hparams"].items())
            table.add_row(
                f"{other} ({out[other]['num_trials']} trials)",
                hp,
                _fmt(b["outer_valid"]),
                _fmt(b["test"]),
                f"{out[other]['inner_steps']:,}",
            )
    console.print(table)
    console.print(f"results: {out['config']['out']}/results.json, figure: {out['config']['out']}/tune.png")


def tune_figure(path: str, out: dict) -> None:
    """Left: each tuned hparam against inner steps spent. Right (one hparam): the final outer-valid
    loss of the grid / random trials against it, with the method's final value marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["space"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    traj = out["trajectory"]
    for n in names:
        axes[0].plot([r["inner_steps"] for r in traj], [r["hparams"][n] for r in traj], marker=".", label=n)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("inner steps spent")
    axes[0].set_title(f"{out['method']}: hparams")
    axes[0].legend()
    n = names[0]
    for other, marker in (("grid", "o"), ("random", "x")):
        trials = out.get(other, {}).get("trials", [])
        if out["method"] == other:
            trials = [dict(r, test=None) for r in traj]
        pts = [
            (t["hparams"][n], t["outer_valid"])  # pyright: ignore[reportOptionalSubscript]
            for t in trials
            if t.get("outer_valid") is not None
        ]
        if pts:
            axes[1].scatter(*zip(*pts), marker=marker, label=other)
    if out["final"]["outer_valid"] is not None:
        axes[1].axvline(out["final"]["hparams"][n], color="k", ls="--", label=f"{out['method']} final")
    axes[1].set_xscale("log")
    losses = [t["outer_valid"] for o in ("grid", "random") for t in out.get(o, {}).get("trials", [])]
    losses = [x for x in losses if x is not None]
    if losses and min(losses) > 0:
        axes[1].set_yscale("log")
    axes[1].set_xlabel(n)
    axes[1].set_ylabel("final outer-valid loss")
    axes[1].set_title(out["task"], fontsize=9)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
