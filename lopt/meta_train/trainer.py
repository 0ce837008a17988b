"""`MetaTrainer`: the static structure of a meta-training run (learned optimizer, one estimator per
task group, weights, outer optimizer) and its jitted outer step; built from a `MetaTrainConfig`
(`MetaTrainer.from_config`) or by hand (`MetaTrainer.create`)."""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.checkpoint import CheckpointError, list_checkpoints, read_config
from lopt.checkpoint import restore as restore_checkpoint
from lopt.config import OUTER_ADAMW, MetaTrainConfig, checkpoint_expectation
from lopt.estimators.base import GradientEstimator
from lopt.estimators.registry import get_estimator
from lopt.meta_train.outer import OuterState, outer_step
from lopt.objective import group_reference
from lopt.optimizers.learned import LearnedOptimizer, get_learned, load_theta
from lopt.tasks.augment import Reparametrized
from lopt.tasks.base import TaskFamily, host_rng
from lopt.tasks.registry import get_family
from lopt.tasks.suites import get_suite
from lopt.validate import ConfigError

# --- building from a config -----------------------------------------------------------------------


def sample_groups(key: jax.Array, cfg: MetaTrainConfig) -> list[tuple[TaskFamily, Any, int]]:
    """G (family, static) groups sampled on the host, merged by structure: [(family, static, count)].

    ``group_sampling="stratified"`` gives every family of the suite G // F or G // F + 1 groups (the
    families of the remainder drawn without replacement), so no family is missing or crowds the
    others out by chance; ``"uniform"`` draws each group's family independently (the former way).
    """
    families = (
        [get_family(cfg.family, **cfg.family_space())] if cfg.family else get_suite(cfg.suite).families()
    )
    if cfg.group_sampling == "stratified":
        rng = host_rng(jax.random.fold_in(key, 1))
        order = []
        while len(order) < cfg.num_groups:  # whole rounds over the families, each round shuffled
            order.extend(int(i) for i in rng.permutation(len(families)))
        picks = order[: cfg.num_groups]
    draws = []
    for i, k in enumerate(jax.random.split(key, cfg.num_groups)):
        k_family, k_static = jax.random.split(k)
        if cfg.group_sampling == "stratified":
            family = families[picks[i]]
        else:  # a family uniformly, then its static structure
            family = families[int(host_rng(k_family).integers(len(families)))]
        draws.append((family, family.sample_static(k_static)))
    counts = collections.Counter(draws)  # insertion-ordered: the order of first appearance
    return [(family, static, n) for (family, static), n in counts.items()]


def outer_optimizer(cfg: MetaTrainConfig) -> optax.GradientTransformationExtraArgs:
    """AdamW (clip, warmup, cosine decay), or a learned optimizer with a fixed theta (after clip)."""
    clip = [optax.clip_by_global_norm(cfg.clip)] if cfg.clip > 0 else []
    if cfg.outer_opt == OUTER_ADAMW:
        return optax.chain(*clip, optax.adamw(adamw_schedule(cfg), weight_decay=cfg.weight_decay))
    outer = get_learned(cfg.outer_opt)()
    if cfg.outer_theta:
        outer, theta = load_theta(cfg.outer_theta)
        if outer.name != cfg.outer_opt:
            raise ConfigError(
                f"outer_theta {cfg.outer_theta} holds a {outer.name!r} theta, not {cfg.outer_opt!r}."
            )
    else:  # its untrained init, from a key of its own
        theta = outer.init(jax.random.fold_in(jax.random.key(cfg.seed), 1))
    told = {"num_steps": cfg.num_steps} if outer.needs_num_steps else {}  # a horizon-aware one: T outer steps
    return optax.chain(*clip, optax.with_extra_args_support(outer.transform(theta, **told)))


def adamw_schedule(cfg: MetaTrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to ``outer_lr`` over ``warmup`` steps, then cosine decay to 0 at ``num_steps``."""
    warmup = min(cfg.warmup, cfg.num_steps - 1)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.outer_lr, warmup, max(cfg.num_steps, warmup + 1))


@dataclasses.dataclass(frozen=True)
class MetaTrainer:
    """The static structure of a meta-training run; `step` is its jitted outer step.

    Built from a config (`from_config`), or by hand (`create`) from a learned optimizer, estimators
    and an outer optax optimizer; the two agree field by field on the same pieces:

        est = get_estimator("pes", learned=learned, family=family, static=static, num_particles=8)
        trainer = MetaTrainer.create(learned, [est], optax.adam(1e-3), sigma=0.01)
        state, data = trainer.init(jax.random.key(0)), trainer.data()
        for _ in range(100):
            state, metrics = trainer.step(state, data, trainer.hparams)  # metrics["meta_loss"]
    """

    learned: LearnedOptimizer
    estimators: tuple[GradientEstimator, ...]  # one per distinct task group
    weights: tuple[float, ...]  # of each group in the average (its share of the particles)
    outer_opt: optax.GradientTransformationExtraArgs
    hparams: tuple[dict, ...]  # each estimator's numeric hyperparameters (σ), jit arguments
    per_step: int = 0  # S: groups estimated per outer step, drawn anew each step (0: all of them)
    theta0: Any = dataclasses.field(default=None, compare=False)  # starting theta (None: learned.init)
    step: Any = dataclasses.field(init=False, repr=False, compare=False)  # jitted outer_step
    _init_jit: Any = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        step = functools.partial(
            outer_step,
            estimators=self.estimators,
            weights=self.weights,
            outer_opt=self.outer_opt,
            per_step=self.per_step,
        )
        # ``step(state, data, hparams) -> (state, metrics)``. Not donating the state is deliberate:
        # measured, donation made large populations' steps 2-4x slower (copies around the scan's conds).
        object.__setattr__(self, "step", jax.jit(step))
        object.__setattr__(self, "_init_jit", jax.jit(self._init))  # one small program, not op by op

    @classmethod
    def from_config(cls, cfg: MetaTrainConfig, references: Sequence[float] | None = None) -> MetaTrainer:
        """Task groups sampled from ``cfg.seed``, one estimator per distinct group (with the group's
        L_ref, `lopt.objective.group_reference`: cached tuned-Adam runs, a few minutes the first time
        on a machine; or ``references``, one per distinct group, e.g. those a run recorded, so that a
        run resumed on another machine optimizes the same objective), the outer optimizer."""
        learned = cfg.build_learned()
        k_groups = jax.random.fold_in(jax.random.key(cfg.seed), 0)
        groups = sample_groups(k_groups, cfg)
        fields = {
            "truncation_length": cfg.truncation_length,
            "horizon": tuple(cfg.horizon),
            "valid_every": cfg.valid_every,
            "meta_split": cfg.meta_split,
            "meta_clip": cfg.meta_clip,
            "objective": cfg.objective,
            "step_weights": cfg.step_weights,
            "shaping": cfg.shaping,
            "drop_diverged": cfg.drop_diverged,
            "sigma_scale": cfg.sigma_scale,
        }
        if references is None:
            references = [
                group_reference(f, s, kind=cfg.loss_reference, steps=cfg.horizon[1]) for f, s, _ in groups
            ]
        elif len(references) != len(groups):
            raise ConfigError(
                f"{len(references)} loss references for {len(groups)} task groups: one per distinct group. "
                "A resumed run's references.json was recorded for other task groups (another --seed, "
                "--num-groups, --suite or --family draws other groups); move it away to recompute them."
            )
        if any(cfg.reparam):  # the same groups, their tasks' weights rescaled; L_ref stays the base task's
            groups = [(Reparametrized(f, *cfg.reparam), s, n) for f, s, n in groups]
        estimators = tuple(
            get_estimator(
                cfg.estimator,
                learned=learned,
                family=f,
                static=s,
                num_particles=n * cfg.num_particles,
                loss_reference=ref,
                **fields,
            )
            for (f, s, n), ref in zip(groups, references)
        )
        hparams = []
        for est in estimators:
            h = est.default_hparams()
            hparams.append({**h, "sigma": jnp.float32(cfg.sigma)} if "sigma" in h else h)
        weights = tuple(n / cfg.num_groups for _, _, n in groups)
        theta0 = load_theta(cfg.init_theta, learned)[1] if cfg.init_theta else None  # checks the architecture
        return cls(
            learned, estimators, weights, outer_optimizer(cfg), tuple(hparams), cfg.groups_per_step, theta0
        )

    build = from_config  # the former name

    @classmethod
    def create(
        cls,
        learned: LearnedOptimizer,
        estimators: Sequence[GradientEstimator],
        outer_opt: optax.GradientTransformationExtraArgs,
        *,
        weights: Sequence[float] | None = None,
        sigma: float | None = None,
        per_step: int = 0,
        theta0: Any = None,
    ) -> MetaTrainer:
        """A trainer wired by hand: one estimator per task group, each with its default hparams.

        ``weights``: of each group in the average (None: proportional to its ``num_particles``, as
        `from_config` weighs its groups); ``sigma``: overrides the default σ of every estimator that
        has one; ``per_step``: groups estimated per outer step (0: all); ``theta0``: starting theta
        (None: ``learned.init``).
        """
        estimators = tuple(estimators)
        if weights is None:
            total = sum(est.num_particles for est in estimators)
            weights = tuple(est.num_particles / total for est in estimators)
        if len(weights) != len(estimators):
            raise ConfigError(f"{len(weights)} weights for {len(estimators)} estimators: one per estimator.")
        hparams = []
        for est in estimators:
            h = est.default_hparams()
            hparams.append({**h, "sigma": jnp.float32(sigma)} if sigma is not None and "sigma" in h else h)
        return cls(learned, estimators, tuple(weights), outer_opt, tuple(hparams), per_step, theta0)

    def data(self) -> tuple:
        """Each group's device-resident arrays: pass them to `step` (never baked in as constants)."""
        return tuple(est.unroller.data() for est in self.estimators)

    def init(self, key: jax.Array) -> OuterState:
        """The state at step 0: theta from ``fold_in(key, 2)`` (or ``theta0``), the run's key for
        everything after."""
        self.data()  # load (and let families cache) the datasets outside the trace, never inside it
        return self._init_jit(key)

    def compile(self, key: jax.Array) -> tuple[OuterState, Any]:
        """(`init(key)`, the compiled `step`): the two programs compile side by side in two threads
        (XLA compiles without the GIL), which takes a second off the time to the first outer step."""
        data = self.data()
        shapes = jax.eval_shape(self._init, key)  # the state's shapes, without running anything
        with ThreadPoolExecutor(1) as pool:
            step = pool.submit(lambda: self.step.trace(shapes, data, self.hparams).lower().compile())
            state = self._init_jit(key)
            return state, step.result()

    def _init(self, key: jax.Array) -> OuterState:
        k_theta, k_est, k_run = jax.random.split(jax.random.fold_in(key, 2), 3)
        theta = self.learned.init(k_theta) if self.theta0 is None else self.theta0
        keys = jax.random.split(k_est, len(self.estimators))
        states = tuple(est.init(k, theta, h) for est, k, h in zip(self.estimators, keys, self.hparams))
        zero = jnp.zeros([], jnp.int32)
        return OuterState(theta, self.outer_opt.init(theta), states, zero, k_run, zero)

    def inner_steps_per_outer_step(self) -> float:
        """Inner steps of one outer step (with ``per_step`` groups drawn: its expected value)."""
        total = sum(est.inner_steps_per_estimate() for est in self.estimators)
        num = len(self.estimators)
        return total * self.per_step / num if 0 < self.per_step < num else total

    def describe(self) -> list[str]:
        return [
            f"{est.family.name}({est.family.describe(est.static)}) x{est.num_particles}"
            + (f" L_ref={est.loss_reference:.6g}" if est.loss_reference else "")
            for est in self.estimators
        ]


def load_run(path: str | Path) -> tuple[MetaTrainer, OuterState, MetaTrainConfig, int]:
    """(trainer, outer state, config, step) of a meta-training checkpoint file, or of the latest
    checkpoint of a run directory (``<out>`` or ``<out>/checkpoints``): the trainer is rebuilt from
    the config the checkpoint records (task groups sampled again from its seed, nothing compiled)."""
    path = Path(path)
    if path.is_dir():
        directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = list_checkpoints(directory)
        if not found:
            raise ConfigError(f"{directory} holds no checkpoint (ckpt_*.safetensors).")
        path = found[-1]
    saved = read_config(path)
    try:
        cfg = MetaTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    except TypeError as err:
        raise CheckpointError(path, f"its config does not fit this lopt's MetaTrainConfig ({err})") from None
    trainer = MetaTrainer.from_config(cfg)
    template = jax.eval_shape(trainer._init, jax.random.key(cfg.seed))
    state, _, step = restore_checkpoint(path, template, expect_config=checkpoint_expectation(cfg, saved))
    return trainer, state, cfg, step
