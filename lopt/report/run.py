"""The `lopt eval` driver: tasks, every distinct search on every task (pipelined compilation,
cached), the studies' extra runs, selection, and the report."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lopt.config import EvalConfig
from lopt.report.compare import compare
from lopt.report.sections import StudySection
from lopt.report.write import write_report
from lopt.tasks.profile import flops_per_step
from lopt.tasks.suites import get_suite
from lopt.tuning import (
    Budget,
    Method,
    SearchResult,
    compile_search,
    default_cache_dir,
    get_method,
    is_cached,
    run_search,
)
from lopt.validate import ConfigError


def run_eval(
    cfg: EvalConfig,
    extra: Sequence[Method] = (),
    require_cache: bool = False,
    console: Console | None = None,
    studies: Sequence[StudySection] = (),
) -> dict:
    """Run ``cfg`` (plus ``extra`` methods, e.g. a learned optimizer) and write its report.

    Every (task, search) run goes through the cache, so a second call with the same config only
    re-reads numbers; ``require_cache=True`` (``lopt report``) refuses to train. ``studies`` add
    their searches on the ``cfg.study_tasks`` cheapest tasks of distinct families, and their
    sections to the report (``lopt eval`` passes `lopt.studies.report_studies(cfg)`). Returns the
    summary.
    """
    t_start = time.perf_counter()
    console = console or Console()
    out_dir = os.path.join(cfg.out, cfg.name)
    cache = cfg.cache or default_cache_dir()
    budget = Budget(cfg.steps, cfg.adam8p_trials, cfg.nadamw_trials, cfg.seed)
    methods = [get_method(n, budget) for n in cfg.optimizers] + list(extra)
    if len({m.name for m in methods}) != len(methods):
        raise ConfigError(f"method names must be distinct: {[m.name for m in methods]}.")
    tasks = suite_tasks(cfg)
    names = _unique_names(tasks)
    searches = {m.search.name: m.search for m in methods}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(_resolved(cfg, methods, names, cache), f, indent=1, default=str)
    console.print(
        f"[bold]lopt eval[/] {cfg.name}: {len(methods)} optimizers ({len(searches)} searches) x "
        f"{len(tasks)} tasks of suite {cfg.suite!r} x {cfg.seeds} seeds, {cfg.steps} steps -> {out_dir}"
    )
    run = _run_arguments(cfg, cache, require_cache)
    per_study = [(study, study.searches()) for study in studies]
    study_searches = {s.name: s for _, ss in per_study for s in ss.values()}
    extra_units = cfg.study_tasks * sum(name not in searches for name in study_searches)
    with _Runs(cfg.seeds, console, len(tasks) * len(searches) + extra_units) as runs:
        runs.run([(task, name, s) for task, name in zip(tasks, names) for s in searches.values()], run)
        done = _run_studies(runs, per_study, study_searches, tasks, names, cfg.study_tasks, run)
    outcomes = compare({t: {k: r[k] for k in searches} for t, r in runs.results.items()}, methods)
    wall = time.perf_counter() - t_start
    summary = write_report(out_dir, cfg, methods, runs.results, outcomes, done, runs.timings, wall)
    console.print(f"report: {out_dir}/report.html, {out_dir}/report.md ({wall:.0f} s)")
    return summary


def _run_arguments(cfg: EvalConfig, cache: str, require_cache: bool) -> dict:
    """The keyword arguments of every `run_search` of the report."""
    return {
        "num_steps": cfg.steps,
        "num_seeds": cfg.seeds,
        "eval_every": cfg.eval_every,
        "eval_batches": cfg.eval_batches,
        "seed": cfg.seed,
        "cache": cache,
        "require_cache": require_cache,
    }


def _run_studies(
    runs: _Runs, per_study: list, study_searches: dict, tasks, names, study_tasks: int, run: dict
):
    """The studies' searches on the ``study_tasks`` chosen tasks (those not run already), and each
    study's summary of them: [(study, summary)]."""
    if not per_study:
        return []
    chosen = _study_tasks(tasks, names, runs.results, study_tasks)
    todo = [(t, n, s) for t, n in chosen for s in study_searches.values() if s.name not in runs.results[n]]
    runs.run(todo, run)
    done = []
    for study, ss in per_study:
        by_task = {n: {label: runs.results[n][s.name] for label, s in ss.items()} for _, n in chosen}
        done.append((study, study.summarize(by_task, ss)))
    return done


class _Runs:
    """The results and timings of a report's searches, with a progress bar over all of them."""

    def __init__(self, seeds: int, console: Console, total: int):
        self.seeds, self.total = seeds, total
        self.results: dict[str, dict[str, SearchResult]] = {}
        self.timings: list[dict] = []
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=console)

    def __enter__(self):
        self.progress.__enter__()
        self.bar = self.progress.add_task("runs", total=self.total)
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def run(self, units, run: dict) -> None:
        """Run (or read) every (task, name, search) unit; a line when a task's last search is done."""
        last = {u[1]: u[2] for u in units}
        for (_task, name, search), r in _pipelined(units, run, self.progress, self.bar):
            self.results.setdefault(name, {})[search.name] = r
            self.timings.append(
                {
                    "task": name,
                    "search": search.name,
                    "runs": f"{search.num_trials}x{self.seeds}",
                    **r.seconds,
                    "cached": r.cached,
                }
            )
            self.progress.advance(self.bar)
            if search is last[name]:
                secs = sum(t["run_seconds"] for t in self.timings if t["task"] == name)
                self.progress.console.print(f"  {name}: {secs:.0f} s of training")


def _pipelined(units, run: dict, progress: Progress, bar):
    """Yield ``((task, name, search), result)`` for every unit in order, compiling the next uncached
    unit's program in a background thread while the current one trains (XLA compiles without the
    GIL; on small tasks compilation is most of the time). A process with one core (``taskset -c``)
    compiles each program when its turn comes: the thread would only take turns with the training on
    that core, and the recorded compile and run seconds would each include the other's."""
    pool = ThreadPoolExecutor(1)
    compile_args = {k: run[k] for k in ("num_steps", "num_seeds", "eval_every", "eval_batches", "seed")}
    todo = [u for u in units if not run["require_cache"] and not is_cached(u[0], u[2], **run)]
    futures = {}
    overlap = (
        len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1
    )

    def prefetch(i):
        if overlap and i < len(todo) and id(todo[i]) not in futures:
            futures[id(todo[i])] = pool.submit(compile_search, todo[i][0], todo[i][2], **compile_args)

    prefetch(0)
    try:
        for unit in units:
            task, name, search = unit
            progress.update(bar, description=f"{name[:40]} | {search.name[:30]}")
            fut = futures.pop(id(unit), None)
            if fut is not None:
                prefetch(todo.index(unit) + 1)
                yield unit, run_search(task, search, **run, compiled=fut.result())
            else:
                yield unit, run_search(task, search, **run)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def step_flops(task) -> float:
    """FLOPs of one Adam training step of ``task`` from the lowered (uncompiled) step: cheap."""
    return flops_per_step(task, compile=False)


def suite_tasks(cfg: EvalConfig) -> list:
    """The tasks of ``cfg``: per family of the suite (restricted to ``cfg.families``), ``candidates``
    sampled tasks of which the ``per_family`` with the fewest FLOPs per step are kept, in sampling
    order (`lopt.tasks.suites.Suite.tasks`); then, with ``cfg.tasks``, only those (by name in
    that draw, ``#2`` suffixes included)."""
    tasks = get_suite(cfg.suite).tasks(
        cfg.per_family, cfg.seed, candidates=cfg.candidates, cost=step_flops, families=cfg.families
    )
    if not cfg.tasks:
        return tasks
    names = _unique_names(tasks)
    unknown = [t for t in cfg.tasks if t not in names]
    if unknown:
        raise ConfigError(
            f"--tasks {unknown}: not in this draw of suite {cfg.suite!r} (--per-family {cfg.per_family}, "
            f"--candidates {cfg.candidates}, --seed {cfg.seed}, --families {list(cfg.families)}); its "
            f"tasks are: {names}."
        )
    return [t for t, name in zip(tasks, names) if name in cfg.tasks]


def _unique_names(tasks) -> list[str]:
    """Task names, with ``#2``, ``#3`` appended where two sampled tasks share a description."""
    seen: dict[str, int] = {}
    out = []
    for t in tasks:
        seen[t.name] = seen.get(t.name, 0) + 1
        out.append(t.name if seen[t.name] == 1 else f"{t.name} #{seen[t.name]}")
    return out


def _study_tasks(tasks, names, results, n: int):
    """The ``n`` cheapest tasks (by measured training seconds) of distinct families."""
    cost = {name: sum(r.seconds["run_seconds"] for r in results[name].values()) for name in names}
    chosen, families = [], set()
    for task, name in sorted(zip(tasks, names), key=lambda p: cost[p[1]]):
        if task.family.name not in families and len(chosen) < n:
            chosen.append((task, name))
            families.add(task.family.name)
    return chosen


def _resolved(cfg: EvalConfig, methods: Sequence[Method], task_names: Sequence[str], cache: str) -> dict:
    return {
        "config": dataclasses.asdict(cfg),
        "cache": cache,
        "tasks": list(task_names),
        "methods": [
            {
                "name": m.name,
                "select": m.select,
                "trials": m.num_trials,
                "search": m.search.name,
                "doc": m.doc,
                "hparams": [m.search.describe(i) for i in range(m.num_trials)],
            }
            for m in methods
        ],
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "backend": jax.default_backend()},
    }


def load_config(run_dir: str) -> EvalConfig:
    """The `EvalConfig` saved in ``run_dir/config.json``."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist: give the directory of a `lopt eval` run (e.g. runs/eval).")
    with open(path) as f:
        raw = json.load(f)["config"]
    fields = {f.name: f for f in dataclasses.fields(EvalConfig)}
    return EvalConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields})
