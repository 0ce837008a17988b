"""Frozen configuration dataclasses: one field = one CLI flag, each with a one-line comment.

    cfg = MetaTrainConfig(family="quadratic", space='{"dims": [10]}', num_steps=300)
    cfg = resolve(cfg, "run.json", explicit={"num_steps"})   # a config file under explicit flags

`lopt meta-train` is `tyro` over `MetaTrainConfig`; ``--config path.json`` reads a file of field
values (a flat JSON object, or the ``config.json`` a run writes), and flags given explicitly on
the command line override it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from lopt.validate import ConfigError, check_choice, check_range, json_tuples

OUTER_ADAMW = "adamw"

# Fields that say where and how often to save: they do not change the trajectory of theta, so a
# resumed run may change them (every other field must match the checkpoint's config).
RUN_CONTROL = ("out", "resume", "ckpt_every", "ckpt_minutes", "keep", "log_every", "validate_every", "validation",
               "validate_long")  # fmt: skip
# Fields of older lopt versions that no longer exist (the held-out evaluation during meta-training,
# replaced by the validation protocol): ignored when an old run's config is read.
RETIRED = ("eval_every", "eval_suite", "eval_tasks", "eval_steps", "eval_seeds")
# Fields added with a default that changes the trajectory, and the value an older run (whose
# config lacks them) was trained with.
LEGACY = {"objective": "relative", "loss_reference": "zero", "step_weights": "uniform", "shaping": "none",
          "drop_diverged": False, "group_sampling": "uniform"}  # fmt: skip
GROUP_SAMPLINGS = ("stratified", "uniform")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """`lopt meta-train`: meta-train a learned optimizer with a gradient estimator over task groups."""

    # --- what is learned ------------------------------------------------------------------------
    learned: str = "mlp"  # learned optimizer to meta-train (mlp, hierarchical, adam_lr, sgdm)
    arch: str = ""  # JSON overrides of its architecture config, e.g. '{"log_step_mult": 10}' ("": defaults)
    init_theta: str = ""  # theta file (save_theta) to start from instead of a fresh init: fine-tuning ("": init)
    # --- tasks ----------------------------------------------------------------------------------
    suite: str = "train_nn"  # meta-training task suite (lopt.tasks.suites); ignored with --family
    family: str = ""  # meta-train on this one task family instead of the suite ("": the suite)
    space: str = ""  # JSON kwargs restricting --family's sampling space, e.g. '{"dims": [10]}'
    num_groups: int = 4  # G: static task groups sampled at the start; compile time grows with distinct ones
    reparam: tuple[float, float] = (0.0, 0.0)  # log10 half-widths of tasks' random global and per-tensor weight scales (0 0: off)
    group_sampling: str = "stratified"  # the groups' families: stratified (each family G/F times, +-1) or uniform draws
    groups_per_step: int = 0  # S: groups estimated per outer step, drawn anew each step (0: all G)
    num_particles: int = 8  # P: tasks per group, vmapped (ES-type estimators run 2P unrolls); 8-32
    # --- estimator ------------------------------------------------------------------------------
    estimator: str = "pes"  # meta-gradient estimator: pes (default), nres, es (full unrolls), tbptt
    truncation_length: int = 50  # K: inner steps per outer step and particle; 20-100
    horizon: tuple[int, int] = (200, 2000)  # inner training lengths, log-uniform; covers the evaluation T = 1000
    sigma: float = 0.01  # σ: std of the ES perturbations of theta; ~1% of theta's scale
    sigma_scale: str = "global"  # global: σ for every coordinate; rms: σ x each theta leaf's RMS (floored at 0.01)
    valid_every: int = 10  # E: inner steps between inner-valid losses fed to the optimizer
    meta_split: str = "outer_valid"  # meta-loss split: outer_valid, or train (cheaper, rewards fitting)
    meta_clip: float = 3.0  # relative excess loss x clipped at c (log: log c); NaN/inf count as the clip
    # --- objective ------------------------------------------------------------------------------
    objective: str = "log"  # per-step meta-loss of x = (L - L_ref)/|L0 - L_ref|: log (log x) or relative (x)
    loss_reference: str = "adam"  # L_ref per task group: adam (tuned Adam's best, less a margin) or zero
    step_weights: str = "ramp"  # weight of each inner step by its place in the episode: ramp, final, uniform
    shaping: str = "zscore"  # ES fitness shaping of the antithetic differences: zscore (per group) or none
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
    validate_every: int = 100  # outer steps between validations of the unperturbed theta, and one at the end (0: none)
    validation: str = "valid"  # validation suite (lopt.validation): fixed train_nn tasks with stored Adam references
    validate_long: bool = False  # also run the suite's long subset (10 x T) at every validation
    # --- outputs --------------------------------------------------------------------------------
    out: str = "runs/meta"  # output directory: config.json, metrics.jsonl, checkpoints/, theta.safetensors
    log_every: int = 10  # outer steps between metric flushes (progress bar, metrics.jsonl, TensorBoard)
    ckpt_every: int = 100  # outer steps between checkpoints (0: not by steps)
    ckpt_minutes: float = 10.0  # minutes between checkpoints (0: not by time); the last step is always saved
    keep: int = 3  # checkpoints kept (the latest)
    seed: int = 0  # seed of task groups, theta's init and every random draw of the run
    resume: bool = False  # continue from the latest checkpoint in <out>/checkpoints (same config)

    def __post_init__(self):
        from lopt.estimators.registry import ESTIMATORS
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
        check_range("num_particles", self.num_particles, 1, 1_000_000)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_range("truncation_length", self.truncation_length, 1, 1_000_000)
        check_range("sigma", self.sigma, 1e-12, 1e6)
        if self.init_theta and not os.path.isfile(self.init_theta):
            raise ConfigError(f"init_theta={self.init_theta!r} is not a file: give a theta file written by save_theta.")
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
        from lopt.estimators.base import SHAPINGS, SIGMA_SCALES
        from lopt.objective import REFERENCES
        from lopt.unroll import OBJECTIVES, STEP_WEIGHTS

        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("loss_reference", self.loss_reference, REFERENCES)
        check_choice("step_weights", self.step_weights, STEP_WEIGHTS)
        check_choice("shaping", self.shaping, SHAPINGS)
        check_choice("sigma_scale", self.sigma_scale, SIGMA_SCALES)
        if self.objective == "log" and self.meta_clip <= 1.0:
            raise ConfigError(f"meta_clip={self.meta_clip}: with objective=log it must exceed 1 (the clip is log c).")
        check_range("log_every", self.log_every, 1, 1_000_000_000)
        check_range("ckpt_every", self.ckpt_every, 0, 1_000_000_000)
        check_range("ckpt_minutes", self.ckpt_minutes, 0.0, 1e9)
        check_range("keep", self.keep, 1, 1_000_000)

    def build_learned(self):
        """The learned optimizer ``learned`` with the ``arch`` overrides of its architecture config."""
        from lopt.optimizers.learned.registry import build_learned

        try:
            arch = json.loads(self.arch) if self.arch else {}
        except ValueError as err:
            raise ConfigError(f"arch={self.arch!r} is not valid JSON: {err}") from None
        if not isinstance(arch, dict):
            raise ConfigError(f"arch={self.arch!r} must be a JSON object of {self.learned!r} architecture fields.")
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


def checkpoint_expectation(cfg: MetaTrainConfig, saved: dict[str, Any] | None) -> dict[str, Any]:
    """What a checkpoint's recorded config must equal for ``cfg`` to resume from it: ``cfg.trajectory()``
    without the fields the checkpoint predates (absent from ``saved``) that hold their default -- a
    field added to lopt later, whose default reproduces the old behaviour, does not block a resume."""
    defaults = MetaTrainConfig()
    if saved is None:
        return cfg.trajectory()
    out = {}
    for k, v in cfg.trajectory().items():
        if k in saved:
            out[k] = v
        elif k in LEGACY:  # the old run was trained with the legacy value: any other value is a mismatch
            if v != LEGACY[k]:
                out[k] = v
        elif v != getattr(defaults, k):
            out[k] = v
    out.update({k: saved[k] for k in RETIRED if k in saved})  # old fields: whatever the checkpoint has
    return out


def upgrade_config(saved: dict[str, Any]) -> dict[str, Any]:
    """An older run's recorded config as `MetaTrainConfig` fields: retired fields dropped, fields it
    predates set to the values it was trained with (`LEGACY`)."""
    out = {k: v for k, v in saved.items() if k not in RETIRED}
    out.update({k: v for k, v in LEGACY.items() if k not in out})
    return out


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Field values from a JSON file: a flat object, or a run's ``config.json`` (``{"config": {...}}``)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except ValueError as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
        raw = upgrade_config(raw["config"])  # a run's config.json, maybe of an older lopt
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of MetaTrainConfig fields.")
    known = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config file {path} has unknown fields {unknown}; valid fields: {sorted(known)}.")
    return {k: json_tuples(v) for k, v in raw.items()}


def resolve(cfg: MetaTrainConfig, config_file: str = "", explicit: set[str] = frozenset()) -> MetaTrainConfig:
    """``cfg`` (parsed flags) on top of ``config_file``: a flag wins when it was given explicitly
    (named in ``explicit``) or differs from its default; otherwise the file's value is used."""
    if not config_file:
        return cfg
    defaults = MetaTrainConfig()
    values = read_config_file(config_file)
    for f in dataclasses.fields(MetaTrainConfig):
        mine = getattr(cfg, f.name)
        if f.name in explicit or mine != getattr(defaults, f.name):
            values[f.name] = mine
    return MetaTrainConfig(**values)


def explicit_flags(argv: list[str]) -> set[str]:
    """Field names of the ``--flag`` / ``--flag=value`` / ``--no-flag`` tokens in ``argv``."""
    names = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    found = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        if name in names:
            found.add(name)
        elif name.startswith("no_") and name[3:] in names:
            found.add(name[3:])
    return found
