"""Frozen configuration dataclasses: one field = one CLI flag, each with a one-line comment.

    cfg = MetaTrainConfig(family="quadratic", space='{"dims": [10]}', num_steps=300)
    cfg = resolve(cfg, "run.json", explicit={"num_steps"})   # a config file under explicit flags

`lopt meta-train` is `tyro` over `MetaTrainConfig`; ``--config path.json`` reads a file of field
values (a flat JSON object, or the ``config.json`` a run writes), and flags given explicitly on
the command line override it (`lopt.config_files`: configs on disk, and an older run's config).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from lopt.config_files import (
    LEGACY,
    RETIRED,
    checkpoint_expectation,
    explicit_flags,
    read_config_file,
    resolve,
    upgrade_config,
)
from lopt.validate import ConfigError, check_choice, check_range, json_tuples

__all__ = [
    "DEFAULT_METHODS",
    "GROUP_SAMPLINGS",
    "OUTER_ADAMW",
    "RUN_CONTROL",
    "TUNE_METHODS",
    "EvalConfig",
    "MetaTrainConfig",
    "TuneConfig",
    # configs on disk (`lopt.config_files`), defined here before
    "LEGACY",
    "RETIRED",
    "checkpoint_expectation",
    "explicit_flags",
    "read_config_file",
    "resolve",
    "upgrade_config",
]

OUTER_ADAMW = "adamw"

# Fields that say where and how often to save: they do not change the trajectory of theta, so a
# resumed run may change them (every other field must match the checkpoint's config).
RUN_CONTROL = (
    "out",
    "resume",
    "ckpt_every",
    "ckpt_minutes",
    "keep",
    "log_every",
    "validate_every",
    "validation",
    "validate_long",
    "select_by",
)
# Where a distributed run's estimates are computed (`lopt.distributed`): with staleness 0 the
# trajectory is the same on any number of workers, or in one process.
RUN_CONTROL += ("ray", "workers")
GROUP_SAMPLINGS = ("stratified", "uniform")
SELECT_BY = ("score", "median")  # the validation metric (valid/<name>) that keeps best.safetensors


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """`lopt meta-train`: meta-train a learned optimizer with a gradient estimator over task groups."""

    # --- what is learned ------------------------------------------------------------------------
    learned: str = "mlp"  # learned optimizer to meta-train (mlp, hierarchical, adam_lr, sgdm)
    arch: str = ""  # JSON overrides of its architecture config, e.g. '{"log_step_mult": 10}' ("": defaults)
    # theta file (save_theta) to start from instead of a fresh init: fine-tuning ("": init)
    init_theta: str = ""
    # --- tasks ----------------------------------------------------------------------------------
    suite: str = "train_nn"  # meta-training task suite (lopt.tasks.suites); ignored with --family
    family: str = ""  # meta-train on this one task family instead of the suite ("": the suite)
    space: str = ""  # JSON kwargs restricting --family's sampling space, e.g. '{"dims": [10]}'
    num_groups: int = 4  # G: static task groups sampled at the start; compile time grows with distinct ones
    # log10 half-widths of tasks' random global and per-tensor weight scales (0 0: off)
    reparam: tuple[float, float] = (0.0, 0.0)
    # the groups' families: stratified (each family G/F times, +-1) or uniform draws
    group_sampling: str = "stratified"
    groups_per_step: int = 0  # S: groups estimated per outer step, drawn anew each step (0: all G)
    num_particles: int = 8  # P: tasks per group, vmapped (ES-type estimators run 2P unrolls); 8-32
    # --- estimator ------------------------------------------------------------------------------
    estimator: str = "pes"  # meta-gradient estimator: pes (default), nres, es (full unrolls), tbptt
    truncation_length: int = 50  # K: inner steps per outer step and particle; 20-100
    # inner training lengths, log-uniform, to 3x the evaluation T = 1000: beat 100-1000 on two seeds
    # (docs/ablations.md, Session 9)
    horizon: tuple[int, int] = (200, 3000)
    sigma: float = 0.01  # σ: std of the ES perturbations of theta; ~1% of theta's scale
    # global: σ for every coordinate; rms: σ x each theta leaf's RMS (floored at 0.01)
    sigma_scale: str = "global"
    valid_every: int = 10  # E: inner steps between inner-valid losses fed to the optimizer
    meta_split: str = "outer_valid"  # meta-loss split: outer_valid, or train (cheaper, rewards fitting)
    meta_clip: float = 3.0  # relative excess loss x clipped at c (log: log c); NaN/inf count as the clip
    # --- objective ------------------------------------------------------------------------------
    # per-step meta-loss of x = (L - L_ref)/|L0 - L_ref|: relative (x) or log (log x, v2); log was the
    # default until two seeds did not show it helps (docs/ablations.md, Session 9)
    objective: str = "relative"
    loss_reference: str = "adam"  # L_ref per task group: adam (tuned Adam's best, less a margin) or zero
    # weight of each inner step by its place in the episode: uniform, ramp (v2), final; ramp was the
    # default until two seeds did not show it helps (docs/ablations.md, Session 9)
    step_weights: str = "uniform"
    # ES fitness shaping of the antithetic differences: none, or zscore (per group, v2); zscore was the
    # default until two seeds did not show it helps (docs/ablations.md, Session 9)
    shaping: str = "none"
    drop_diverged: bool = True  # a pair with a non-finite loss stops contributing until its episode restarts
    # --- outer optimizer ------------------------------------------------------------------------
    outer_opt: str = OUTER_ADAMW  # adamw, or a learned optimizer name: theta is trained by that optimizer
    outer_theta: str = ""  # theta file (save_theta) of a learned --outer-opt ("": its untrained init)
    outer_lr: float = 3e-4  # AdamW peak learning rate (adamw only); 3e-4 beat 2e-3 in docs/ablations.md
    weight_decay: float = 0.0  # AdamW decoupled weight decay of theta (adamw only)
    warmup: int = 50  # outer steps of linear learning-rate warmup before the cosine decay (adamw only)
    clip: float = 1.0  # clip the meta-gradient to this global norm before the outer optimizer (0: off)
    num_steps: int = 1000  # total outer steps (a resumed run continues up to it)
    # --- validation ----------------------------------------------------------------------------
    # outer steps between validations of the unperturbed theta, and one at the end (0: none)
    validate_every: int = 100
    # validation suite (lopt.validation): fixed train_nn tasks with stored Adam references
    validation: str = "valid"
    validate_long: bool = False  # also run the suite's long subset (10 x T) at every validation
    # which validation number keeps best.safetensors: score (mean normalized loss over the suite's
    # tasks) or median (the typical task; robust to a task whose final loss is chaotic in theta)
    select_by: str = "score"
    # --- outputs --------------------------------------------------------------------------------
    out: str = "runs/meta"  # output directory: config.json, metrics.jsonl, checkpoints/, theta.safetensors
    log_every: int = 10  # outer steps between metric flushes (progress bar, metrics.jsonl, TensorBoard)
    ckpt_every: int = 100  # outer steps between checkpoints (0: not by steps)
    ckpt_minutes: float = 10.0  # minutes between checkpoints (0: not by time); the last step is always saved
    keep: int = 3  # checkpoints kept (the latest)
    seed: int = 0  # seed of task groups, theta's init and every random draw of the run
    resume: bool = False  # continue from the latest checkpoint in <out>/checkpoints (same config)
    # --- distributed (lopt.distributed; needs the ray extra) -------------------------------------
    ray: str = ""  # Ray cluster: auto (join this machine's, else start one) or HOST:PORT ("": one process)
    workers: int = 1  # N: Ray worker actors, each owning some task groups (at most the distinct groups)
    staleness: int = 0  # versions of theta an applied estimate may lag (0: synchronous, as one process)

    def __post_init__(self):
        self._check_tasks()
        self._check_estimator()
        self._check_outer()
        self._check_objective()
        self._check_run()

    def _check_tasks(self):
        from lopt.optimizers.learned.registry import LEARNED
        from lopt.tasks.registry import TASKS
        from lopt.tasks.suites import SUITES

        check_choice("learned", self.learned, LEARNED)
        self.build_learned()  # validates arch
        if self.family:
            check_choice("family", self.family, TASKS)
            self.family_space()  # validates the JSON
        else:
            check_choice("suite", self.suite, SUITES)
            if self.space:
                raise ConfigError("space is given without family: it restricts --family's sampling space.")
        check_range("num_groups", self.num_groups, 1, 1000)
        check_choice("group_sampling", self.group_sampling, GROUP_SAMPLINGS)
        check_range("reparam[0]", self.reparam[0], 0.0, 10.0)
        check_range("reparam[1]", self.reparam[1], 0.0, 10.0)
        check_range("groups_per_step", self.groups_per_step, 0, self.num_groups)

    def _check_estimator(self):
        from lopt.estimators.registry import ESTIMATORS

        check_range("num_particles", self.num_particles, 1, 1_000_000)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_range("truncation_length", self.truncation_length, 1, 1_000_000)
        check_range("sigma", self.sigma, 1e-12, 1e6)

    def _check_outer(self):
        from lopt.optimizers.learned.registry import LEARNED

        if self.init_theta and not os.path.isfile(self.init_theta):
            raise ConfigError(
                f"init_theta={self.init_theta!r} is not a file: give a theta file written by save_theta."
            )
        check_choice("outer_opt", self.outer_opt, (OUTER_ADAMW, *LEARNED))
        if self.outer_theta and self.outer_opt == OUTER_ADAMW:
            raise ConfigError(
                "outer_theta is given but outer_opt=adamw: name the learned optimizer it belongs to."
            )
        check_range("outer_lr", self.outer_lr, 0.0, 1e3)
        check_range("weight_decay", self.weight_decay, 0.0, 1e3)
        check_range("warmup", self.warmup, 0, 10_000_000)
        check_range("clip", self.clip, 0.0, 1e30)
        check_range("num_steps", self.num_steps, 1, 1_000_000_000)
        check_range("validate_every", self.validate_every, 0, 1_000_000_000)
        if self.validate_every:
            from lopt.validation import get_validation_suite

            get_validation_suite(self.validation)  # an unknown name lists the valid ones
        check_choice("select_by", self.select_by, SELECT_BY)

    def _check_objective(self):
        from lopt.estimators.base import SHAPINGS, SIGMA_SCALES
        from lopt.objective import REFERENCES
        from lopt.unroll import OBJECTIVES, STEP_WEIGHTS

        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("loss_reference", self.loss_reference, REFERENCES)
        check_choice("step_weights", self.step_weights, STEP_WEIGHTS)
        check_choice("shaping", self.shaping, SHAPINGS)
        check_choice("sigma_scale", self.sigma_scale, SIGMA_SCALES)
        if self.objective == "log" and self.meta_clip <= 1.0:
            raise ConfigError(
                f"meta_clip={self.meta_clip}: with objective=log it must exceed 1 (the clip is log c)."
            )

    def _check_run(self):
        check_range("log_every", self.log_every, 1, 1_000_000_000)
        check_range("ckpt_every", self.ckpt_every, 0, 1_000_000_000)
        check_range("ckpt_minutes", self.ckpt_minutes, 0.0, 1e9)
        check_range("keep", self.keep, 1, 1_000_000)
        check_range("workers", self.workers, 1, 100_000)
        check_range("staleness", self.staleness, 0, 1_000_000)
        if not self.ray and (self.workers != 1 or self.staleness):
            raise ConfigError("workers and staleness apply to distributed runs only: add --ray auto.")

    def build_learned(self):
        """The learned optimizer ``learned`` with the ``arch`` overrides of its architecture config."""
        from lopt.optimizers.learned.registry import build_learned

        try:
            arch = json.loads(self.arch) if self.arch else {}
        except ValueError as err:
            raise ConfigError(f"arch={self.arch!r} is not valid JSON: {err}") from None
        if not isinstance(arch, dict):
            raise ConfigError(
                f"arch={self.arch!r} must be a JSON object of {self.learned!r} architecture fields."
            )
        try:
            return build_learned(self.learned, arch)
        except ConfigError as err:
            raise ConfigError(f"arch={self.arch!r}: {err}") from None

    def family_space(self) -> dict[str, Any]:
        """``space`` parsed: keyword arguments of the family (JSON lists become tuples)."""
        if not self.space:
            return {}
        try:
            space = json.loads(self.space)
        except ValueError as err:
            raise ConfigError(f"space={self.space!r} is not valid JSON: {err}") from None
        if not isinstance(space, dict):
            raise ConfigError(f"space={self.space!r} must be a JSON object of keyword arguments.")
        return {k: json_tuples(v) for k, v in space.items()}

    def trajectory(self) -> dict[str, Any]:
        """The fields that determine theta's trajectory (all but `RUN_CONTROL`): what a checkpoint
        records and what a resumed run must match."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_CONTROL}


# --- lopt eval (lopt.report) ---------------------------------------------------------------------

# the methods `lopt eval` compares by default (names of lopt.tuning.METHODS)
DEFAULT_METHODS = (
    "adam-lr-global",
    "adam-lr-per-task",
    "adam-cosine-lr-per-task",
    "adam8p-per-task",
    "nadamw-list",
    "lookahead-adam-lr-per-task",
)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`lopt eval`: optimizers × suite tasks × seeds, tuned baselines, a report (defaults: ~15-20 min on 2 cores)."""

    name: str = "eval"  # report name: everything goes to <out>/<name>/
    out: str = "runs"  # parent directory of reports
    suite: str = "test"  # task suite: "test" (held out, for reports) or "train" (meta-training tasks)
    per_family: int = 1  # tasks per family of the suite (cost grows linearly)
    # per family, sample this many and keep the per_family cheapest (1: plain random sample)
    candidates: int = 3
    families: tuple[str, ...] = ()  # keep only these families of the suite (empty: all)
    # then keep only these tasks, by their names in that draw (as config.json lists them; empty: all)
    tasks: tuple[str, ...] = ()
    steps: int = 1000  # training steps per run; 1000-2000 is affordable on a laptop CPU
    seeds: int = 3  # seeds per setting, vmapped; selection and tables use their median
    eval_every: int = 100  # steps between inner-valid / outer-valid / test evaluations (divides steps)
    eval_batches: int = 4  # batches averaged per evaluation
    # methods: METHODS names, a baseline name, <baseline>-lr-per-task
    optimizers: tuple[str, ...] = DEFAULT_METHODS
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


# --- lopt tune (lopt.hpo.tune) -------------------------------------------------------------------

TUNE_METHODS = ("pes", "es", "nres", "unrolled", "truncated", "ift", "grid", "random")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Configuration of `lopt tune` (every field a flag: ``--num-steps 500``)."""

    optimizer: str = "adam"  # a baseline (lopt.optimizers.BASELINES) whose hparams are tuned
    hparams: str = "learning_rate"  # comma-separated hparams to tune, e.g. learning_rate,weight_decay
    method: str = "pes"  # pes | es | nres | unrolled | truncated | ift | grid | random
    start: str = ""  # start values, e.g. "learning_rate=1e-3" (default: the baseline's defaults)
    # search ranges, e.g. "learning_rate=1e-6:0.1" (default: DEFAULT_RANGES, else valid ranges)
    ranges: str = ""
    num_steps: int = 1000  # T: inner steps of one training run (what the tuned hparams are for)
    num_seeds: int = 3  # seeds of every full run (grid points, random draws, final evaluation)
    grid_size: int = 15  # G: the reference grid's points; the default budget is G * seeds * T / 3
    budget: int = 0  # inner steps the method may spend (tuning + final evaluation); 0: the default
    task_seed: int = 0  # the task: TASK's family sampled from this seed (static and dynamic values)
    seed: int = 0  # randomness of the method (batches, perturbations, draws)
    # es/pes/nres defaults measured in benchmarks/hpo.py (BENCHMARKS.md, issue 14): P = 2, K = 50, outer
    # lr 0.15, σ 0.3 reach a 15-point lr grid within 0.3% on 2 of 3 tasks at a third of its steps;
    # P = 8, K = 100 makes ~8 outer steps in the default budget and barely moves the rate.
    outer_lr: float = 0.15  # Adam's step on theta (log-hparams) per hypergradient; 0.15 ≈ x1.16 per step
    num_particles: int = 2  # es/pes/nres: P antithetic pairs per estimate
    truncation: int = 50  # pes/nres/truncated: K inner steps per estimate / online update
    sigma: float = 0.3  # es/pes/nres: σ of the perturbations of log-hparams (0.3: ±35%)
    step_weights: str = "final"  # es/pes/nres: which steps' losses count (lopt.unroll): final quarter
    ift_iters: int = 50  # ift: CG iterations of the inverse-Hessian-vector product
    ift_damping: float = 1e-3  # ift: δ added to the Hessian (a non-convex task's is not PD)
    eval_batches: int = 4  # batches per evaluation of a loss
    compare: bool = True  # also run a grid and a random search of equal compute
    out: str = "runs/tune"  # run folder: results.json, tune.png

    def __post_init__(self):
        check_choice("method", self.method, TUNE_METHODS)
        check_range("num_steps", self.num_steps, 1, 10_000_000)
        check_range("num_seeds", self.num_seeds, 1, 1000)
        check_range("grid_size", self.grid_size, 1, 10_000)
        check_range("budget", self.budget, 0, 10**13)
        check_range("outer_lr", self.outer_lr, 0.0, 100.0)
        check_range("num_particles", self.num_particles, 1, 100_000)
        check_range(
            "truncation",
            self.truncation,
            1,
            self.num_steps if self.method in ("pes", "nres", "truncated") else 10**9,
        )
        check_range("sigma", self.sigma, 1e-6, 10.0)

    def default_budget(self) -> int:
        return self.budget or self.grid_size * self.num_seeds * self.num_steps // 3
