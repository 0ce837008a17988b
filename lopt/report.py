"""`lopt eval`: run optimizers on a task suite, select their settings, compare them, write a report.

    summary = run_eval(EvalConfig(suite="test", steps=1000))   # -> runs/eval/{report.md, report.html, ...}
    summary = run_eval(cfg, extra=[Method("mine", fixed_search("mine", my_optax), "fixed")])

Pipeline: the suite's tasks → every distinct search of the requested methods on every task (one
compiled program each, cached on disk by `lopt.tuning.run_search`) → selection (`compare`: per
task, global or fixed, on the outer-valid split) → normalized test losses and the improvement of
every method over every other → files under ``<out>/<name>/``:

- ``config.json``: the resolved `EvalConfig`, the methods and their trials, versions;
- ``results.csv``: the tidy table of the selected runs, one row per (task, optimizer, seed, step);
- ``final.csv``: one row per (task, optimizer, seed) with the final metrics and the chosen hparams;
- ``summary.json``, ``timings.json``: the outcomes, and compile / run seconds of every search;
- ``report.md``, ``report.html``, ``figures/*.png``.

A learned optimizer joins as one more `Method` with ``select="fixed"`` (``fixed_search`` with
``make=lopt.transform, hparams=theta``): it is run and reported like the others, without tuning.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import os
import time
from collections.abc import Mapping, Sequence
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

from lopt import lookahead_study
from lopt.evaluate import Curves, tidy
from lopt.tasks.profile import flops_per_step
from lopt.tasks.suites import get_suite
from lopt.tuning import (
    CLIP,
    DEFAULT_METHODS,
    Budget,
    Method,
    SearchResult,
    best_scores,
    compile_search,
    default_cache_dir,
    failed,
    get_method,
    init_loss,
    is_cached,
    normalize,
    run_search,
    score,
    select_global,
    select_per_task,
)
from lopt.validate import ConfigError, check_range

BASELINE_METHODS = ("adam-lr-global", "adam-lr-per-task", "adam8p-per-task", "nadamw-list")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`lopt eval`: optimizers × suite tasks × seeds, tuned baselines, a report (defaults: ~15-20 min on 2 cores)."""

    name: str = "eval"  # report name: everything goes to <out>/<name>/
    out: str = "runs"  # parent directory of reports
    suite: str = "test"  # task suite: "test" (held out, for reports) or "train" (meta-training tasks)
    per_family: int = 1  # tasks per family of the suite (cost grows linearly)
    candidates: int = (
        3  # per family, sample this many and keep the per_family cheapest (1: plain random sample)
    )
    families: tuple[str, ...] = ()  # keep only these families of the suite (empty: all)
    steps: int = 1000  # training steps per run; 1000-2000 is affordable on a laptop CPU
    seeds: int = 3  # seeds per setting, vmapped; selection and tables use their median
    eval_every: int = 100  # steps between inner-valid / outer-valid / test evaluations (divides steps)
    eval_batches: int = 4  # batches averaged per evaluation
    optimizers: tuple[str, ...] = (
        DEFAULT_METHODS  # methods: METHODS names, a baseline name, <baseline>-lr-per-task
    )
    adam8p_trials: int = 10  # random-search trials of adam8p-per-task
    nadamw_trials: int = 10  # first N entries of the ordered NAdamW list (nadamw-list)
    lookahead_study: bool = True  # add the Lookahead study (Adam / SGD with and without Lookahead, lr sweeps)
    study_tasks: int = 3  # tasks of different families in the study (the cheapest of the suite)
    seed: int = 0  # seed of task sampling, runs and the Adam8p random search
    cache: str = ""  # cache of tuned runs ("": $LOPT_CACHE, else runs/cache); a report re-reads it

    def __post_init__(self):
        check_range("steps", self.steps, 1, 10_000_000)
        check_range("seeds", self.seeds, 1, 10_000)
        check_range("per_family", self.per_family, 1, 1000)
        check_range("candidates", self.candidates, 1, 1000)
        check_range("eval_every", self.eval_every, 1, self.steps)
        if self.steps % self.eval_every:
            raise ConfigError(
                f"steps={self.steps} must be a multiple of eval_every={self.eval_every} "
                "(evaluations happen at 0, E, 2E, ..., steps)."
            )
        if not self.optimizers:
            raise ConfigError("optimizers is empty: give at least one (e.g. adam-lr-per-task).")
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ConfigError(f"optimizers={self.optimizers} lists a name twice.")


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


# --- selection and comparison (pure; no training) ---------------------------------------------------


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


# --- Markdown / HTML ------------------------------------------------------------------------------


def fmt(x, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits; ``-`` for None; ``diverged`` for NaN."""
    if x is None:
        return "-"
    if isinstance(x, float) and not np.isfinite(x):
        return "diverged"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def to_markdown(blocks: Sequence[tuple]) -> str:
    """Render blocks: ("h1"|"h2"|"p", text), ("table", header, rows), ("img", path, alt), ("list", items)."""
    lines = []
    for b in blocks:
        if b[0] in ("h1", "h2"):
            lines += ["#" * int(b[0][1]) + " " + b[1], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "list":
            lines += [f"- {item}" for item in b[1]] + [""]
        elif b[0] == "img":
            lines += [f"![{b[2]}]({b[1]})", ""]
        elif b[0] == "table":
            lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(str, r)) + " |" for r in b[2]] + [""]
    return "\n".join(lines)


def to_html(blocks: Sequence[tuple], title: str) -> str:
    """The same blocks as a standalone HTML page (figures linked by relative path)."""
    e = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "p"):
            body.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
        elif b[0] == "list":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "img":
            body.append(f'<p><img src="{e(b[1])}" alt="{e(b[2])}" style="max-width:100%"></p>')
        elif b[0] == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


NORMALIZATION_TEXT = (
    f"Normalized loss, per task and split: n = clip((L − L_best) / (L_init − L_best), 0, {CLIP:g}), where L is a "
    "final loss (median over seeds), L_best the best final loss of any non-diverged setting of any method on that "
    f"task, and L_init the loss at initialization. 0 is the best run seen, 1 no progress, {CLIP:g} diverged. "
    "Settings are selected on the outer-valid split; every number below is on the test split."
)


def report_blocks(
    cfg: EvalConfig,
    methods: Sequence[Method],
    outcomes: Sequence[Outcome],
    improvement: Mapping[str, Mapping[str, np.ndarray]],
    study: dict | None,
    timings: Sequence[dict],
    wall_seconds: float,
    figs: Mapping[str, str],
) -> list[tuple]:
    """The report's content, rendered by `to_markdown` and `to_html`."""
    names = [m.name for m in methods]
    tasks = list(dict.fromkeys(o.task for o in outcomes))
    by = {(o.task, o.method): o for o in outcomes}
    cached = sum(bool(t["cached"]) for t in timings)
    blocks: list[tuple] = [
        ("h1", f"lopt report: {cfg.name}"),
        (
            "p",
            (
                f"Suite `{cfg.suite}`, {len(tasks)} tasks ({cfg.per_family} per family, the cheapest of "
                f"{max(cfg.candidates, cfg.per_family)} sampled), {cfg.steps} steps, {cfg.seeds} seeds, "
                f"evaluations every {cfg.eval_every} steps. The searches took "
                f"{sum(t['compile_seconds'] for t in timings):.0f} s compiling and "
                f"{sum(t['run_seconds'] for t in timings):.0f} s training when they ran ({cached} of "
                f"{len(timings)} read from the cache this time); this report took {wall_seconds:.0f} s. "
                "Resolved config: config.json; tidy results: results.csv, final.csv."
            ),
        ),
        (
            "list",
            [
                f"`{m.name}`: {m.doc or m.search.name} ({m.select.replace('_', ' ')}, {m.num_trials} trials)"
                for m in methods
            ],
        ),
        ("p", NORMALIZATION_TEXT),
        ("h2", "Summary over tasks"),
    ]
    ref = names[0]
    rows = []
    for m in names:
        n = np.array([by[t, m].norm_test for t in tasks])
        wins = sum(by[t, m].norm_test < by[t, ref].norm_test for t in tasks)
        rows.append(
            [
                m,
                fmt(float(n.mean())),
                fmt(float(np.median(n))),
                sum(by[t, m].diverged for t in tasks),
                f"{wins}/{len(tasks)}" if m != ref else "-",
            ]
        )
    blocks.append(
        (
            "table",
            [
                "optimizer",
                "mean normalized test loss",
                "median",
                "diverged tasks",
                f"tasks better than {ref}",
            ],
            rows,
        )
    )
    blocks.append(("h2", "Final test loss (median over seeds; the selected setting)"))
    blocks.append(
        ("table", ["task", *names], [[t, *(fmt(by[t, m].test_loss) for m in names)] for t in tasks])
    )
    if any(o.test_accuracy is not None for o in outcomes):
        blocks.append(("h2", "Final test accuracy (classifiers)"))
        blocks.append(
            (
                "table",
                ["task", *names],
                [
                    [t, *(fmt(by[t, m].test_accuracy) for m in names)]
                    for t in tasks
                    if by[t, names[0]].test_accuracy is not None or by[t, names[0]].diverged
                ],
            )
        )
    blocks.append(("h2", "Selected settings"))
    blocks.append(
        (
            "table",
            ["task", "optimizer", "trial", "hparams"],
            [
                [
                    t,
                    m,
                    by[t, m].trial,
                    _describe(by[t, m]),
                ]
                for t in tasks
                for m in names
            ],
        )
    )
    if improvement:
        blocks.append(("h2", "Improvement over baselines"))
        blocks.append(
            (
                "p",
                (
                    "Per task: normalized test loss of the baseline minus that of the method (positive: the "
                    "method is better). Boxes span the tasks (Metz et al. 2020, improvement over baselines)."
                ),
            )
        )
        if "improvement" in figs:
            blocks.append(("img", figs["improvement"], "improvement over baselines"))
        blocks.append(
            (
                "table",
                ["baseline", "method", "median improvement", "mean", "tasks improved"],
                [
                    [b, m, fmt(float(np.median(v))), fmt(float(v.mean())), f"{int((v > 0).sum())}/{len(v)}"]
                    for b, d in improvement.items()
                    for m, v in d.items()
                ],
            )
        )
    if "curves" in figs:
        blocks += [("h2", "Loss curves"), ("img", figs["curves"], "per-task loss curves")]
    if study:
        blocks.append(("h2", "Lookahead study"))
        blocks.append(
            (
                "p",
                (
                    "Lookahead (k=5, alpha=0.5) around Adam and SGD against the bare optimizer, over 15 "
                    "learning rates, on tasks of different families. Final test loss against learning rate "
                    "(median over seeds; band: min to max over seeds). 'good lrs': rates whose normalized "
                    f"outer-valid loss is at most {lookahead_study.GOOD}."
                ),
            )
        )
        if "lookahead" in figs:
            blocks.append(("img", figs["lookahead"], "Lookahead study"))
        blocks.append(
            (
                "table",
                [
                    "task",
                    "optimizer",
                    "best lr",
                    "test loss",
                    "seed std at best lr",
                    "median seed std",
                    "good lrs",
                    "diverged lrs",
                ],
                [
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
                    for r in study["rows"]
                ],
            )
        )
        blocks.append(("list", study["findings"]))
    blocks.append(("h2", "Timings"))
    blocks.append(
        (
            "table",
            ["task", "search", "trials x seeds", "compile s", "run s", "cached"],
            [
                [
                    r["task"],
                    r["search"],
                    r["runs"],
                    fmt(r["compile_seconds"], 3),
                    fmt(r["run_seconds"], 3),
                    "yes" if r["cached"] else "no",
                ]
                for r in timings
            ],
        )
    )
    return blocks


def _describe(o: Outcome) -> str:
    """The selected hparams for the table, or why there are none."""
    if o.trial < 0:
        return "every trial diverged"
    text = ", ".join(f"{k}={v:.3g}" for k, v in o.hparams.items())
    return text + " (diverged)" if o.diverged else text


# --- writing --------------------------------------------------------------------------------------


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Rows of dicts as CSV; columns are the union of keys in first-seen order; None is empty."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)


def _selected(curves: Curves, i: int) -> Curves:
    return Curves(
        curves.train_loss[i],
        curves.eval_steps,
        jax.tree.map(lambda a: a[i], curves.eval),
        curves.diverged_step[i],
    )


def write_report(
    out_dir: str,
    cfg: EvalConfig,
    methods: Sequence[Method],
    results: Mapping[str, Mapping[str, SearchResult]],
    outcomes: Sequence[Outcome],
    study: dict | None,
    timings: Sequence[dict],
    wall_seconds: float,
) -> dict:
    """Write every output file of a report into ``out_dir``; returns the summary written to summary.json."""
    from lopt import figures  # matplotlib: imported only when a report is written

    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    by = {(o.task, o.method): o for o in outcomes}
    tidy_rows, final_rows, panels = [], [], []
    for t, rs in results.items():
        panel = {}
        for m in methods:
            o = by[t, m.name]
            c = _selected(rs[m.search.name].curves, max(o.trial, 0))
            hp = json.dumps(o.hparams)
            tidy_rows += tidy(c, task=t, optimizer=m.name, trial=o.trial, hparams=hp)
            for s in range(c.train_loss.shape[0]):
                final_rows.append(
                    {
                        "task": t,
                        "optimizer": m.name,
                        "seed": s,
                        "trial": o.trial,
                        "hparams": hp,
                        "diverged_step": int(c.diverged_step[s]),
                        "selection_diverged": o.diverged,
                        **{f"{sp}_{k}": float(v[s, -1]) for sp, mt in c.eval.items() for k, v in mt.items()},
                    }
                )
            panel[m.name] = {
                "train": c.train_loss,
                "eval_steps": c.eval_steps,
                "test": c.eval["test"]["loss"],
                "diverged": o.diverged,
            }
        panels.append((t, panel))
    write_csv(os.path.join(out_dir, "results.csv"), tidy_rows)
    write_csv(os.path.join(out_dir, "final.csv"), final_rows)
    names = [m.name for m in methods]
    baselines = [b for b in BASELINE_METHODS if b in names] or names[:1]
    improvement = improvements(outcomes, baselines) if len(methods) > 1 else {}
    figs = {"curves": "figures/curves.png"}
    figures.curves_figure(os.path.join(out_dir, figs["curves"]), panels)
    if improvement:
        figs["improvement"] = "figures/improvement.png"
        figures.improvement_figure(os.path.join(out_dir, figs["improvement"]), improvement)
    if study:
        figs["lookahead"] = "figures/lookahead_study.png"
        figures.lookahead_figure(os.path.join(out_dir, figs["lookahead"]), study["sweeps"])
    blocks = report_blocks(cfg, methods, outcomes, improvement, study, timings, wall_seconds, figs)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(to_markdown(blocks))
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(to_html(blocks, f"lopt report: {cfg.name}"))
    summary = {
        "outcomes": [dataclasses.asdict(o) for o in outcomes],
        "improvement": {b: {m: v.tolist() for m, v in d.items()} for b, d in improvement.items()},
        "lookahead_study": {"rows": study["rows"], "findings": study["findings"]} if study else None,
        "wall_seconds": wall_seconds,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=float)
    with open(os.path.join(out_dir, "timings.json"), "w") as f:
        json.dump({"wall_seconds": wall_seconds, "searches": list(timings)}, f, indent=1)
    return summary


# --- the driver -----------------------------------------------------------------------------------


def run_eval(
    cfg: EvalConfig, extra: Sequence[Method] = (), require_cache: bool = False, console: Console | None = None
) -> dict:
    """Run ``cfg`` (plus ``extra`` methods, e.g. a learned optimizer) and write its report.

    Every (task, search) run goes through the cache, so a second call with the same config only
    re-reads numbers; ``require_cache=True`` (``lopt report``) refuses to train. Returns the summary.
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
    run = {
        "num_steps": cfg.steps,
        "num_seeds": cfg.seeds,
        "eval_every": cfg.eval_every,
        "eval_batches": cfg.eval_batches,
        "seed": cfg.seed,
        "cache": cache,
        "require_cache": require_cache,
    }
    study_searches = lookahead_study.study_searches() if cfg.lookahead_study else {}
    extra_units = cfg.study_tasks * sum(s.name not in searches for s in study_searches.values())
    results: dict[str, dict[str, SearchResult]] = {}
    timings: list[dict] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("runs", total=len(tasks) * len(searches) + extra_units)

        def done(name, search, r):
            timings.append(
                {
                    "task": name,
                    "search": search.name,
                    "runs": f"{search.num_trials}x{cfg.seeds}",
                    **r.seconds,
                    "cached": r.cached,
                }
            )
            progress.advance(bar)
            if search is last[name]:
                secs = sum(t["run_seconds"] for t in timings if t["task"] == name)
                progress.console.print(f"  {name}: {secs:.0f} s of training")

        units = [(task, name, s) for task, name in zip(tasks, names) for s in searches.values()]
        last = {u[1]: u[2] for u in units}  # the last search of each task, to print a line when it is done
        for (task, name, search), r in _pipelined(units, run, progress, bar):
            results.setdefault(name, {})[search.name] = r
            done(name, search, r)
        study = None
        if study_searches:
            chosen = _study_tasks(tasks, names, results, cfg.study_tasks)
            units = [
                (task, name, s)
                for task, name in chosen
                for s in study_searches.values()
                if s.name not in results[name]
            ]
            last = {u[1]: u[2] for u in units}
            for (task, name, search), r in _pipelined(units, run, progress, bar):
                results[name][search.name] = r
                done(name, search, r)
            study = lookahead_study.summarize(
                {
                    name: {label: results[name][s.name] for label, s in study_searches.items()}
                    for _, name in chosen
                },
                study_searches,
            )
    outcomes = compare({t: {k: r[k] for k in searches} for t, r in results.items()}, methods)
    wall = time.perf_counter() - t_start
    summary = write_report(out_dir, cfg, methods, results, outcomes, study, timings, wall)
    console.print(f"report: {out_dir}/report.html, {out_dir}/report.md ({wall:.0f} s)")
    return summary


def _pipelined(units, run: dict, progress: Progress, bar):
    """Yield ``((task, name, search), result)`` for every unit in order, compiling the next uncached
    unit's program in a background thread while the current one trains (XLA compiles without the
    GIL; on small tasks compilation is most of the time)."""
    pool = ThreadPoolExecutor(1)
    compile_args = {k: run[k] for k in ("num_steps", "num_seeds", "eval_every", "eval_batches", "seed")}
    todo = [u for u in units if not run["require_cache"] and not is_cached(u[0], u[2], **run)]
    futures = {}

    def prefetch(i):
        if i < len(todo) and id(todo[i]) not in futures:
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
    order. With ``candidates <= per_family`` this is exactly ``Suite.tasks(per_family, seed)``."""
    suite = get_suite(cfg.suite)
    families = suite.families()
    have = sorted({f.name for f in families})
    for f in cfg.families:
        if f not in have:
            raise ConfigError(
                f"families contains {f!r}, which is not in suite {cfg.suite!r}: choose from {have}."
            )
    n = max(cfg.candidates, cfg.per_family)
    out = []
    for i, family in enumerate(families):
        if cfg.families and family.name not in cfg.families:
            continue
        keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), i), n)
        options = [family.task(family.sample(k)) for k in keys]
        if n > cfg.per_family:
            flops = [step_flops(t) for t in options]
            keep = sorted(sorted(range(n), key=lambda j: flops[j])[: cfg.per_family])
            options = [options[j] for j in keep]
        out.extend(options)
    return out


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
