"""Meta-training: the outer state, the jitted outer step, and the loop around it.

    trainer = MetaTrainer.from_config(cfg)             # task groups, estimators, outer optimizer
    state = trainer.init(jax.random.key(cfg.seed))     # OuterState
    state, step = trainer.compile(jax.random.key(cfg.seed))   # the same, with `step` compiled alongside
    state, metrics = trainer.step(state, trainer.data(), trainer.hparams)   # one jitted program
    state = meta_train(cfg)                            # the loop: logs, evaluations, checkpoints

`MetaTrainer.create` wires a trainer by hand instead (``examples/meta_train_by_hand.py``). The
modules: `outer` (the pure outer step and its math), `trainer` (`MetaTrainer`), `loop`
(`meta_train`), `heldout` (`HeldOutEval`), `metrics_log` (`MetricsLog`).

Scale-out seam: `estimate_groups` is a pure function of (key, theta, estimator states), so a
worker can compute it for its own groups and a learner can average and call `apply_outer`.
"""

from lopt.meta_train.heldout import HeldOutEval
from lopt.meta_train.loop import meta_train
from lopt.meta_train.metrics_log import MetricsLog
from lopt.meta_train.outer import OuterState, apply_outer, estimate_groups, outer_step
from lopt.meta_train.trainer import MetaTrainer, adamw_schedule, load_run, outer_optimizer, sample_groups

__all__ = [
    "HeldOutEval",
    "MetaTrainer",
    "MetricsLog",
    "OuterState",
    "adamw_schedule",
    "apply_outer",
    "estimate_groups",
    "load_run",
    "meta_train",
    "outer_optimizer",
    "outer_step",
    "sample_groups",
]
