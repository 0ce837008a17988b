"""Meta-train a learned optimizer by hand: the pieces `lopt meta-train` builds from its config, wired
in plain code, and a plain Python loop over the jitted outer step.

    task family -> a static task structure (one task group) -> learned optimizer -> PES estimator
    -> outer optimizer (clip + AdamW) -> MetaTrainer.create -> trainer.step in a loop -> save_theta

    python examples/meta_train_by_hand.py                 # 50 outer steps on 4-d quadratics, ~15 s on CPU
    python examples/meta_train_by_hand.py --steps 200 --out theta.safetensors

The saved theta loads with `lopt.optimizers.learned.load_theta`. `MetaTrainer.from_config` builds the
same trainer from a `MetaTrainConfig` (``tests/test_examples.py`` checks the thetas are bitwise equal).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import optax

from lopt.estimators.registry import get_estimator
from lopt.meta_train import MetaTrainer
from lopt.optimizers.learned import get_learned, save_theta
from lopt.tasks.registry import get_family


def main(argv: list[str] | None = None) -> dict:
    """Run the loop; returns ``{"trainer", "theta", "meta_losses" (one per step), "path"}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="outer steps")
    parser.add_argument("--particles", type=int, default=8, help="tasks per outer step (PES runs pairs)")
    parser.add_argument("--truncation", type=int, default=10, help="inner steps per outer step")
    parser.add_argument("--horizon", type=int, nargs=2, default=(20, 100), help="inner episode lengths")
    parser.add_argument("--lr", type=float, default=3e-3, help="outer AdamW peak learning rate")
    parser.add_argument("--warmup", type=int, default=5, help="outer steps of learning-rate warmup")
    parser.add_argument("--sigma", type=float, default=0.01, help="PES perturbation std of theta")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/by_hand/theta.safetensors", help="theta file to write")
    args = parser.parse_args(argv)

    key = jax.random.key(args.seed)
    family = get_family("quadratic", dims=(4,))  # 4-d quadratics with random curvature
    static = family.sample_static(jax.random.fold_in(key, 0))  # the task structure: one jit program
    learned = get_learned("mlp")()  # a per-parameter MLP optimizer; its theta is what we train
    estimator = get_estimator(
        "pes",
        learned=learned,
        family=family,
        static=static,
        num_particles=args.particles,
        truncation_length=args.truncation,
        horizon=tuple(args.horizon),
    )
    warmup = min(args.warmup, args.steps - 1)  # linear warmup, then cosine decay to 0 at the last step
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, args.steps)
    outer_opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
    trainer = MetaTrainer.create(learned, [estimator], outer_opt, sigma=args.sigma)

    state, data = trainer.init(key), trainer.data()  # OuterState: theta, outer/estimator states, key
    meta_losses = []
    for step in range(1, args.steps + 1):
        state, metrics = trainer.step(state, data, trainer.hparams)  # one jitted outer step
        meta_losses.append(float(metrics["meta_loss"]))
        if step % max(args.steps // 10, 1) == 0 or step == args.steps:
            print(f"step {step:4d}  meta-loss {meta_losses[-1]:.4f}  grad norm {metrics['grad_norm']:.3g}")

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_theta(path, learned, state.theta)
    print(f"theta saved to {path} (skipped updates: {int(state.num_skipped)})")
    return {"trainer": trainer, "theta": state.theta, "meta_losses": meta_losses, "path": path}


if __name__ == "__main__":
    main()
