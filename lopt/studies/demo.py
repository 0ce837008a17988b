"""`lopt demo`: the main job, end to end in a few minutes on a laptop CPU.

1. **Pretrained vs tuned Adam on held-out tasks.** Three tasks of families never seen in
   meta-training (by default a CNN on Fashion-MNIST, the transformer char-LM on KJV and the 1-D
   conv net on MNIST-1D; of each family the cheapest of three sampled tasks) are trained with the
   shipped pretrained optimizer (no hyperparameters) and with Adam over a learning-rate grid, several
   seeds each (settings and seeds vmapped in one compiled program per task). Adam's rate is
   selected on the outer-valid split; everything reported is on the test split.
2. **Meta-training from scratch.** PES meta-trains a fresh `mlp` learned optimizer on a small task
   family (10-d quadratics) for a few hundred outer steps, then compares it with its own
   initialization and with Adam (lr 1e-3) on fresh tasks of that family.
3. **Report.** ``<out>/report.html`` and ``report.md`` with the figures (``figures/``), the tables,
   ``results.json`` and the resolved ``config.json``; a short summary is printed (the config goes
   to its file, not the screen).

Adam's grid is a `lopt.tuning` method (``adam-lr-per-task`` over ``learning_rates``) and the
pretrained optimizer runs as `lopt.tuning.learned_method`, the program of
`lopt.evaluate.evaluate_learned`, on the same key (`lopt.tuning.run_key`) as Adam.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from lopt.config import MetaTrainConfig
from lopt.pretrained import load_pretrained
from lopt.report import figures
from lopt.report.render import to_html, to_markdown
from lopt.tasks.base import Task
from lopt.tasks.profile import flops_per_step
from lopt.tasks.suites import get_suite
from lopt.tuning import (
    Method,
    compile_search,
    failed,
    learned_method,
    lr_search,
    run_search,
    score,
    select_per_task,
)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """`lopt demo`: the pretrained optimizer against tuned Adam, and a short meta-training run."""

    out: str = "runs/demo"  # output directory: report.html, report.md, figures/, results.json, config.json
    pretrained: str = "hierarchical-small-v2"  # the shipped optimizer to compare (lopt.PRETRAINED)
    families: tuple[str, ...] = ("cnn", "transformer_lm", "conv1d")  # held-out families, one task each
    steps: int = 1000  # training steps per run on the held-out tasks
    seeds: int = 3  # seeds per setting (vmapped); tables use the median over seeds
    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # Adam's grid
    eval_every: int = 100  # steps between validation / test evaluations
    meta_steps: int = 300  # outer steps of the meta-training part (0: skip it); ~1 min here
    seed: int = 0  # seed of task sampling and of every run


Config = DemoConfig  # every study: a frozen Config and run(cfg)


def heldout_tasks(cfg: DemoConfig) -> list[Task]:
    """One task per family of the held-out suite: the cheapest of three sampled (as `lopt eval`)."""
    cost = functools.partial(flops_per_step, compile=False)
    tasks = get_suite("test").tasks(1, cfg.seed, candidates=3, cost=cost, families=cfg.families)
    order = {f: i for i, f in enumerate(cfg.families)}
    return sorted(tasks, key=lambda t: order[t.family.name])


def compare_on_task(task: Task, cfg: DemoConfig, learned, theta) -> dict:
    """The pretrained optimizer and Adam's grid on one task: curves and the selected results."""
    run = {"num_steps": cfg.steps, "num_seeds": cfg.seeds, "eval_every": cfg.eval_every, "seed": cfg.seed}
    adam = Method("adam-lr-per-task", lr_search("adam", cfg.learning_rates), "per_task")
    mine = learned_method(cfg.pretrained, learned, theta)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # compile both at once: the hierarchical one is large
        futures = [pool.submit(compile_search, task, m.search, **run) for m in (adam, mine)]
        compiled = [f.result() for f in futures]
    t1 = time.perf_counter()
    adam_res = run_search(task, adam.search, **run, compiled=compiled[0])
    t2 = time.perf_counter()
    mine_res = run_search(task, mine.search, **run, compiled=compiled[1])
    t3 = time.perf_counter()
    valid = score(adam_res, "outer_valid")  # (L,) median over seeds
    best = select_per_task(valid, failed(adam_res))
    a, m = adam_res.curves, mine_res.curves

    def final(curves, i, split="test", metric="loss"):
        values = curves.eval[split].get(metric)
        return None if values is None else float(np.median(values[i, :, -1]))

    return {
        "task": task.name,
        "params": task.num_params(),
        "adam_best_lr": cfg.learning_rates[best],
        "adam_test_loss": final(a, best),
        "adam_test_accuracy": final(a, best, metric="accuracy"),
        "adam_valid_loss_per_lr": [float(v) for v in valid],
        "adam_test_loss_per_lr": [final(a, i) for i in range(len(cfg.learning_rates))],
        "pretrained_test_loss": final(m, 0),
        "pretrained_test_accuracy": final(m, 0, metric="accuracy"),
        "compile_seconds": t1 - t0,  # both programs, compiled side by side
        "adam_seconds": t2 - t1,  # running them
        "pretrained_seconds": t3 - t2,
        "_panel": (
            task.name,
            {f"Adam lr {cfg.learning_rates[best]:g} (tuned)": _panel(a, best), cfg.pretrained: _panel(m, 0)},
        ),
    }


def _panel(curves, i: int) -> dict:
    return {
        "train": np.asarray(curves.train_loss[i]),
        "eval_steps": np.asarray(curves.eval_steps),
        "test": np.asarray(curves.eval["test"]["loss"][i]),
        "diverged": bool(np.all(curves.diverged_step[i] < curves.train_loss.shape[-1])),
    }


def meta_train_small(cfg: DemoConfig) -> dict:
    """PES meta-training of a fresh `mlp` on 10-d quadratics; its meta-loss curve and a held-out check."""
    from lopt.meta_train import HeldOutEval, MetaTrainer, meta_train

    out = os.path.join(cfg.out, "meta_train")
    if os.path.isdir(os.path.join(out, "checkpoints")):  # a rerun of the demo starts this part afresh
        import shutil

        shutil.rmtree(out)
    mcfg = MetaTrainConfig(
        family="quadratic",
        space='{"dims": [10]}',
        num_groups=1,
        num_particles=8,
        truncation_length=50,
        horizon=(200, 200),
        outer_lr=3e-3,
        warmup=20,
        num_steps=cfg.meta_steps,
        validate_every=0,
        objective="relative",
        loss_reference="zero",
        step_weights="uniform",
        shaping="none",
        drop_diverged=False,
        ckpt_every=0,
        ckpt_minutes=0,
        log_every=50,
        out=out,
        seed=cfg.seed,
    )
    t0 = time.perf_counter()
    state = meta_train(mcfg, console=Console(quiet=True), progress=False)  # its log: metrics.jsonl
    seconds = time.perf_counter() - t0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    losses = np.array([r["meta_loss"] for r in rows if "meta_loss" in r], np.float64)
    trainer = MetaTrainer.build(mcfg)
    evaluator = HeldOutEval(mcfg, trainer.learned, num_tasks=12, steps=200, seeds=1)
    init_theta = trainer.init(jax.random.key(mcfg.seed)).theta
    trained, untrained, adam = (
        evaluator.losses(state.theta),
        evaluator.losses(init_theta),
        evaluator.adam_losses(),
    )
    return {
        "config": dataclasses.asdict(mcfg),
        "seconds": seconds,
        "meta_loss": losses.tolist(),
        "fresh_tasks": len(trained),
        "trained_test_loss": float(np.median(trained)),
        "untrained_test_loss": float(np.median(untrained)),
        "adam_test_loss": float(np.median(adam)),
        "trained_beats_untrained": int(np.sum(trained < untrained)),
        "trained_beats_adam": int(np.sum(trained < adam)),
    }


def run(cfg: DemoConfig = DemoConfig(), console: Console | None = None) -> dict:
    """Run the demo; returns what ``results.json`` holds. Prints a short summary."""
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    os.makedirs(os.path.join(cfg.out, "figures"), exist_ok=True)
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    learned, theta = load_pretrained(cfg.pretrained)
    console.print(
        f"[bold]lopt demo[/]: {cfg.pretrained} (no hyperparameters) vs Adam tuned over "
        f"{len(cfg.learning_rates)} learning rates, {cfg.seeds} seeds, {cfg.steps} steps, on held-out tasks"
    )
    t0 = time.perf_counter()
    rows = []
    for task in heldout_tasks(cfg):
        row = compare_on_task(task, cfg, learned, theta)
        running = row["adam_seconds"] + row["pretrained_seconds"]
        console.print(
            f"  {row['task']}: {cfg.pretrained} test loss {row['pretrained_test_loss']:.4f}, tuned Adam "
            f"{row['adam_test_loss']:.4f} (lr {row['adam_best_lr']:g}) "
            f"({row['compile_seconds']:.0f} s compiling, {running:.0f} s running)"
        )
        rows.append(row)
    figures.curves_figure(
        os.path.join(cfg.out, "figures", "heldout_curves.png"), [r.pop("_panel") for r in rows]
    )
    meta = None
    if cfg.meta_steps:
        console.print(
            f"[bold]meta-training[/] a fresh mlp optimizer with PES for {cfg.meta_steps} outer steps"
        )
        meta = meta_train_small(cfg)
        figures.meta_loss_figure(
            os.path.join(cfg.out, "figures", "meta_loss.png"), {"PES, AdamW outer": meta["meta_loss"]}
        )
    results = {"heldout": rows, "meta_train": meta, "seconds": time.perf_counter() - t0}
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    blocks = report_blocks(cfg, results)
    with open(os.path.join(cfg.out, "report.md"), "w") as f:
        f.write(to_markdown(blocks))
    with open(os.path.join(cfg.out, "report.html"), "w") as f:
        f.write(to_html(blocks, "lopt demo"))
    console.print(summary_table(cfg, rows))
    if meta:
        console.print(
            f"meta-trained from scratch in {meta['seconds']:.0f} s: median test loss on {meta['fresh_tasks']} "
            f"fresh quadratics {meta['trained_test_loss']:.4g} (its init {meta['untrained_test_loss']:.4g}, "
            f"Adam 1e-3 {meta['adam_test_loss']:.4g})"
        )
    console.print(
        f"report: {cfg.out}/report.html; config: {cfg.out}/config.json (total {results['seconds']:.0f} s)"
    )
    return results


run_demo = run


def _winner(row: dict, name: str) -> str:
    mine, adam = row["pretrained_test_loss"], row["adam_test_loss"]
    if not np.isfinite(mine if mine is not None else np.nan):
        return "Adam (pretrained diverged)"
    return name if mine < adam else "tuned Adam"


def summary_table(cfg: DemoConfig, rows: list[dict]) -> Table:
    table = Table(
        title=f"held-out tasks: {cfg.pretrained} vs tuned Adam, median test loss over {cfg.seeds} seeds"
    )
    for col in (
        "task",
        "params",
        "Adam lr (tuned)",
        "Adam test loss",
        f"{cfg.pretrained} test loss",
        "better",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["task"],
            f"{r['params']:,}",
            f"{r['adam_best_lr']:g}",
            f"{r['adam_test_loss']:.4f}",
            f"{r['pretrained_test_loss']:.4f}",
            _winner(r, cfg.pretrained),
        )
    return table


def report_blocks(cfg: DemoConfig, results: dict) -> list[tuple]:
    """The demo's report: the held-out comparison, then the meta-training part if it ran."""
    blocks = _heldout_blocks(cfg, results["heldout"], results["seconds"])
    if results["meta_train"]:
        blocks += _meta_train_blocks(results["meta_train"])
    return blocks


def _heldout_blocks(cfg: DemoConfig, rows: list[dict], seconds: float) -> list[tuple]:
    wins = sum(_winner(r, cfg.pretrained) == cfg.pretrained for r in rows)
    header = ["task", "params", "Adam lr (tuned)", "Adam test loss", "Adam test acc"]
    header += [f"{cfg.pretrained} test loss", f"{cfg.pretrained} test acc", "better"]
    table = [
        [
            r["task"],
            f"{r['params']:,}",
            f"{r['adam_best_lr']:g}",
            _fmt(r["adam_test_loss"]),
            _fmt(r["adam_test_accuracy"]),
            _fmt(r["pretrained_test_loss"]),
            _fmt(r["pretrained_test_accuracy"]),
            _winner(r, cfg.pretrained),
        ]
        for r in rows
    ]
    return [
        ("h1", "lopt demo"),
        (
            "p",
            f"Held-out tasks (families never seen in meta-training), {cfg.steps} steps, {cfg.seeds} seeds: "
            f"the pretrained {cfg.pretrained} (no hyperparameters) against Adam with its learning rate chosen "
            f"from {list(cfg.learning_rates)} on the outer-valid split. Test split, median over seeds. "
            f"{cfg.pretrained} is better on {wins} of {len(rows)} tasks. Total wall time "
            f"{seconds:.0f} s. Command: `lopt demo`; resolved config: config.json.",
        ),
        ("table", header, table),
        ("img", "figures/heldout_curves.png", "training and test loss curves"),
    ]


def _meta_train_blocks(meta: dict) -> list[tuple]:
    return [
        ("h2", "Meta-training a learned optimizer from scratch"),
        (
            "p",
            f"PES ({meta['config']['num_particles']} tasks x 2 antithetic, truncation "
            f"{meta['config']['truncation_length']}, horizon 200) meta-trains a fresh `mlp` optimizer on 10-d "
            f"quadratics for {len(meta['meta_loss'])} outer steps ({meta['seconds']:.0f} s). On "
            f"{meta['fresh_tasks']} fresh quadratics (200 steps) it beats its own initialization on "
            f"{meta['trained_beats_untrained']} and Adam (lr 1e-3) on {meta['trained_beats_adam']}.",
        ),
        (
            "table",
            ["optimizer", "median test loss on fresh tasks"],
            [
                ["meta-trained mlp", _fmt(meta["trained_test_loss"])],
                ["its initialization", _fmt(meta["untrained_test_loss"])],
                ["Adam lr 1e-3", _fmt(meta["adam_test_loss"])],
            ],
        ),
        ("img", "figures/meta_loss.png", "meta-loss during meta-training"),
    ]


def _fmt(x) -> str:
    return "-" if x is None else ("diverged" if not np.isfinite(x) else f"{x:.4g}")
