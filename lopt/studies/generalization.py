"""Generalization study: a learned optimizer against tuned Adam when the task changes.

Metz et al. 2020 report that their learned optimizer keeps working when the batch size or the
width of the trained network changes, and for longer training than it was meta-trained for. For
each base task this module builds the variants

- ``base``: the task as sampled, trained for ``steps`` steps;
- ``batch x4`` / ``batch /4``: the same network, four times larger / smaller batches;
- ``width x4``: every hidden layer four times wider;
- ``horizon x10``: the base task trained 10x longer than the longest meta-training horizon,

and trains each with the learned optimizer (no tuning) and with Adam whose learning rate is
chosen per variant from 15 log-spaced rates (`lopt.tuning.lr_search`) on the outer-valid split,
so Adam is re-tuned under every change. Reported: final test loss (mean over seeds) of both, their
ratio, and the selected rate. Runs are cached like `lopt eval`'s.

    rows = run_study(tasks, learned, theta, steps=1000, longest_horizon=1000)

    python -m lopt.generalization --pretrained mlp-small-v1 --out runs/generalization

References: Metz et al. 2020, arXiv:2009.11243 (generalization to batch size, width and horizon).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax

from lopt.tasks.base import Task, TaskConfig
from lopt.tasks.mlp import MLP, MLPStatic
from lopt.tuning import ADAM_LR_GRID, failed, fixed_search, lr_search, run_search, score, select_per_task
from lopt.validate import ConfigError

BASE_TASKS = (  # small held-out MLPs on Fashion-MNIST (never seen in meta-training)
    MLPStatic("fashion_mnist", 8, (32,), "relu", 32),
    MLPStatic("fashion_mnist", 14, (32, 32), "tanh", 64),
)


def with_static(task: Task, **changes) -> Task:
    """``task`` with fields of its static structure replaced (same dynamic values)."""
    static = dataclasses.replace(task.static, **changes)
    return task.family.task(TaskConfig(static, task.dynamic))


def variants(task: Task, steps: int, longest_horizon: int) -> list[tuple[str, Task, int]]:
    """(label, task, training steps) of every variant of ``task`` (see the module docstring)."""
    static = task.static
    for field in ("batch_size", "hidden"):
        if not hasattr(static, field):
            raise ConfigError(f"{task.name}: the generalization study needs a static field {field!r}.")
    return [
        ("base", task, steps),
        ("batch x4", with_static(task, batch_size=static.batch_size * 4), steps),
        ("batch /4", with_static(task, batch_size=max(1, static.batch_size // 4)), steps),
        ("width x4", with_static(task, hidden=tuple(4 * w for w in static.hidden)), steps),
        ("horizon x10", task, 10 * longest_horizon),
    ]


def base_tasks(seed: int = 0) -> list[Task]:
    """The `BASE_TASKS`, with dynamic values (init scale) sampled from ``seed``."""
    family = MLP(datasets=("fashion_mnist",))
    keys = jax.random.split(jax.random.key(seed), len(BASE_TASKS))
    return [family.task(TaskConfig(s, family.sample_dynamic(k, s))) for s, k in zip(BASE_TASKS, keys)]


def run_study(
    tasks,
    learned,
    theta,
    *,
    steps: int,
    longest_horizon: int,
    seeds: int = 3,
    cache: str | None = None,
    name: str = "learned",
    seed: int = 0,
    grid=ADAM_LR_GRID,
    only: tuple[str, ...] = (),
) -> list[dict]:
    """One row per (task, variant): the learned optimizer vs per-variant-tuned Adam (learning rate
    from ``grid``), test split. ``only``: restrict to these variant labels."""
    adam = lr_search("adam", grid)
    mine = fixed_search(f"{name}({learned.name})", make=learned.transform, hparams=theta)
    rows = []
    for task in tasks:
        for label, variant, num_steps in variants(task, steps, longest_horizon):
            if only and label not in only:
                continue
            options = {
                "num_steps": num_steps,
                "num_seeds": seeds,
                "eval_every": num_steps // 10,
                "seed": seed,
                "cache": cache,
            }
            a, m = run_search(variant, adam, **options), run_search(variant, mine, **options)
            best = select_per_task(score(a), failed(a))
            adam_test = float(score(a, "test")[best]) if best >= 0 else float("nan")
            mine_test = float("nan") if failed(m)[0] else float(score(m, "test")[0])
            rows.append(
                {
                    "task": task.name,
                    "variant": label,
                    "variant_task": variant.name,
                    "steps": num_steps,
                    "params": variant.num_params(),
                    "adam_lr": float(adam.trials["learning_rate"][best]) if best >= 0 else None,
                    "adam_test_loss": adam_test,
                    "learned_test_loss": mine_test,
                    "ratio": mine_test / adam_test,
                    "learned_better": bool(mine_test < adam_test),
                }
            )
    return rows


def to_markdown(rows: list[dict], name: str) -> str:
    """The rows as a Markdown table (`lopt.report.render.table`)."""
    from lopt.report.render import table

    header = [
        "task",
        "variant",
        "params",
        "steps",
        "Adam lr (tuned)",
        "Adam test loss",
        f"{name} test loss",
        "ratio",
    ]
    body = [
        [
            r["task"],
            r["variant"],
            f"{r['params']:,}",
            f"{r['steps']:,}",
            "-" if r["adam_lr"] is None else f"{r['adam_lr']:.3g}",
            f"{r['adam_test_loss']:.4g}",
            f"{r['learned_test_loss']:.4g}",
            f"{r['ratio']:.3f}",
        ]
        for r in rows
    ]
    return table(header, body)


@dataclasses.dataclass(frozen=True)
class Config:
    """A shipped learned optimizer on variants of small held-out MLPs, Adam re-tuned per variant."""

    pretrained: str = "mlp-small-v1"  # shipped optimizer (lopt.PRETRAINED)
    steps: int = 1000  # training steps of the base variants
    longest_horizon: int = 1000  # longest meta-training horizon
    seeds: int = 3  # seeds per run
    num_tasks: int = len(BASE_TASKS)  # the first N of BASE_TASKS
    out: str = "runs/generalization"  # generalization.json and generalization.md


def run(cfg: Config) -> list[dict]:
    """Run the study on the first ``num_tasks`` base tasks; write and print the table."""
    from lopt.pretrained import load_pretrained
    from lopt.tuning import default_cache_dir

    learned, theta = load_pretrained(cfg.pretrained)
    rows = run_study(
        base_tasks()[: cfg.num_tasks],
        learned,
        theta,
        steps=cfg.steps,
        longest_horizon=cfg.longest_horizon,
        seeds=cfg.seeds,
        cache=default_cache_dir(),
        name=cfg.pretrained,
    )
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "generalization.json"), "w") as f:
        json.dump({"args": dataclasses.asdict(cfg), "rows": rows}, f, indent=2)
    table = to_markdown(rows, cfg.pretrained)
    with open(os.path.join(cfg.out, "generalization.md"), "w") as f:
        f.write(table)
    print(table)
    return rows
