"""A learned optimizer training a learned optimizer (Metz et al. 2020, "using them to train themselves").

Two meta-training runs with the same budget, seed, task family and estimator meta-train a fresh
`mlp` learned optimizer from the same initialization; they differ only in the outer optimizer:

- ``AdamW``: lopt's default (global-norm clipping, warmup, cosine decay, tuned peak rate);
- the shipped pretrained optimizer (no hyperparameters), applied to theta after the same clipping.

The meta-loss curves are drawn side by side, and both final thetas are tested on fresh tasks of
the family beside Adam (lr 1e-3). Metz et al. found their learned optimizer tracked Adam as the
outer optimizer for a long time and then fell behind, which they attributed to the short inner
horizons of its own meta-training; outer training is much longer than any horizon it saw.

    python -m lopt.self_training --pretrained hierarchical-small-v1 --steps 200 --out runs/self_training

References: Metz et al. 2020, arXiv:2009.11243, Sec. "Learned optimizers training themselves".
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lopt.config import MetaTrainConfig
from lopt.report import figures

FAMILY = ("mlp", '{"datasets": ["digits"], "depths": [1], "widths": [32], "batch_sizes": [128]}')


def configs(pretrained: str, steps: int, out: str, seed: int = 0) -> dict[str, MetaTrainConfig]:
    """The two runs: identical but for the outer optimizer."""
    from lopt.pretrained import PRETRAINED, load_pretrained

    base = MetaTrainConfig(
        family=FAMILY[0],
        space=FAMILY[1],
        num_groups=1,
        num_particles=8,
        truncation_length=50,
        horizon=(100, 500),
        outer_lr=3e-3,
        num_steps=steps,
        validate_every=0,
        objective="relative",
        loss_reference="zero",
        step_weights="uniform",
        shaping="none",
        drop_diverged=False,
        ckpt_every=0,
        ckpt_minutes=5,
        log_every=25,
        seed=seed,
    )
    outer_name = load_pretrained(pretrained)[0].name  # its architecture: mlp, hierarchical
    learned_outer = dataclasses.replace(
        base,
        outer_opt=outer_name,
        outer_theta=PRETRAINED[pretrained].weights_path,
        out=os.path.join(out, pretrained),
    )
    return {"AdamW": dataclasses.replace(base, out=os.path.join(out, "adamw")), pretrained: learned_outer}


def run_both(
    pretrained: str = "hierarchical-small-v1", steps: int = 500, out: str = "runs/self_training"
) -> dict:
    """Run both meta-trainings (each resumes if its directory has checkpoints); write the figure
    ``<out>/self_training.png`` and ``<out>/self_training.json``; return the summary."""
    from lopt.meta_train import HeldOutEval, meta_train

    summary = {}
    curves = {}
    for name, cfg in configs(pretrained, steps, out).items():
        resume = os.path.isdir(os.path.join(cfg.out, "checkpoints"))
        state = meta_train(dataclasses.replace(cfg, resume=resume), progress=False)
        with open(os.path.join(cfg.out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        curves[f"outer: {name}"] = [r["meta_loss"] for r in rows if "meta_loss" in r]
        evaluator = HeldOutEval(cfg, cfg.build_learned(), num_tasks=6, steps=500, seeds=2)
        mine, adam = evaluator.losses(state.theta), evaluator.adam_losses()
        summary[name] = {
            "final_meta_loss_last50": float(np.mean(curves[f"outer: {name}"][-50:])),
            "fresh_test_loss": mine.tolist(),
            "adam_test_loss": adam.tolist(),
            "wins_vs_adam": int(np.sum(mine < adam)),
            "num_skipped": int(state.num_skipped),
        }
    figures.meta_loss_figure(os.path.join(out, "self_training.png"), curves)
    with open(os.path.join(out, "self_training.json"), "w") as f:
        json.dump({"family": FAMILY, "steps": steps, "runs": summary, "curves": curves}, f, indent=2)
    return summary


@dataclasses.dataclass(frozen=True)
class Config:
    """A learned optimizer as the outer optimizer of meta-training, against AdamW."""

    pretrained: str = "hierarchical-small-v1"  # the learned outer optimizer (lopt.PRETRAINED)
    steps: int = 500  # outer steps of each run
    out: str = "runs/self_training"  # the two runs, self_training.png and self_training.json


def run(cfg: Config) -> dict:
    """Both meta-trainings (`run_both`); prints one line per run."""
    summary = run_both(cfg.pretrained, cfg.steps, cfg.out)
    for name, s in summary.items():
        print(
            f"{name:>16}: meta-loss (last 50 steps) {s['final_meta_loss_last50']:.4f}; beats Adam 1e-3 on "
            f"{s['wins_vs_adam']}/{len(s['fresh_test_loss'])} fresh tasks"
        )
    return summary
