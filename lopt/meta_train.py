r"""Meta-training: the outer state, the jitted outer step, and the loop around it.

    trainer = MetaTrainer.build(cfg)                   # task groups, estimators, outer optimizer
    state = trainer.init(jax.random.key(cfg.seed))     # OuterState
    state, step = trainer.compile(jax.random.key(cfg.seed))   # the same, with `step` compiled alongside
    state, metrics = trainer.step(state, trainer.data(), trainer.hparams)   # one jitted program
    state = meta_train(cfg)                            # the loop: logs, evaluations, checkpoints

An outer step estimates the meta-gradient on every task group (a group is one static task
structure whose P particles the estimator vmaps; groups that share structure are merged into one
with more particles), averages the groups' estimates with weights proportional to their particle
counts (each group's meta-loss is already normalized per task), and applies the outer optimizer:

.. math::
    g = \sum_i w_i\, \hat g_i(\theta), \qquad (u, s) = \text{opt.update}(g, s, \theta,\
    \text{loss}=\textstyle\sum_i w_i J_i), \qquad \theta \leftarrow \theta + u

The outer optimizer is an optax transformation -- by default AdamW after global-norm clipping,
with linear warmup and cosine decay -- or a learned optimizer's ``transform(theta_outer)`` with
theta as its params (a learned optimizer training a learned optimizer). If g or the new theta has
a NaN or an infinity the update is skipped (theta and the outer optimizer state are kept; the
estimator states advance) and counted: theta never holds a non-finite value.

Everything random comes from the state's key, so two runs of one config give bitwise identical
thetas, and a run resumed from a checkpoint continues exactly (`lopt.checkpoint`).

Scale-out seam: `estimate_groups` is a pure function of (key, theta, estimator states), so a
worker can compute it for its own groups and a learner can average and call `apply_outer`.

References: Metz et al. 2020, "Tasks, stability, architecture, and compute: training more
effective learned optimizers, and using them to train themselves", arXiv:2009.11243.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.console import Console
from tensorboardX import SummaryWriter
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lopt.checkpoint import CheckpointError, CheckpointManager, latest, list_checkpoints, read_config
from lopt.checkpoint import restore as restore_checkpoint
from lopt.config import OUTER_ADAMW, MetaTrainConfig, checkpoint_expectation
from lopt.estimators.base import GradientEstimator
from lopt.estimators.registry import get_estimator
from lopt.evaluate import evaluate, evaluate_hparams
from lopt.optimizers.learned import LearnedOptimizer, get_learned, load_theta, save_theta
from lopt.tasks.base import TaskFamily, host_rng
from lopt.tasks.registry import get_family
from lopt.tasks.suites import get_suite
from lopt.validate import ConfigError

PyTree = Any


class OuterState(NamedTuple):
    """The whole state of meta-training (a checkpoint holds exactly this)."""

    theta: PyTree  # the learned optimizer's meta-parameters
    opt_state: PyTree  # the outer optimizer's state
    estimator_states: tuple  # one estimator state per task group
    step: jax.Array  # int32: outer steps taken
    key: jax.Array  # the run's PRNG key, split at every step
    num_skipped: jax.Array  # int32: outer updates skipped for a non-finite meta-gradient or theta


# --- the outer step (pure) ------------------------------------------------------------------------


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.isfinite(jnp.concatenate(leaves))) if leaves else jnp.bool_(True)  # one op, not one per leaf


def _tree_where(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def estimate_groups(
    key: jax.Array,
    theta: PyTree,
    states: tuple,
    data: tuple,
    hparams: tuple,
    estimators: tuple,
    weights: tuple,
    per_step: int = 0,
) -> tuple[PyTree, tuple, dict[str, jax.Array]]:
    """(weighted mean meta-gradient, new estimator states, metrics) over the task groups.

    ``per_step`` = S in (0, G): only S groups, drawn uniformly without replacement from ``key``,
    are estimated (one `lax.switch` per slot, so a step costs S groups, not G); the others' states
    wait unchanged. Their estimates are weighted (G/S)·w_i, which keeps the mean unbiased for
    Σ_i w_i ĝ_i; ``meta_loss_groups`` is NaN for the groups not drawn. 0 (or >= G): every group.
    """
    num = len(estimators)
    if 0 < per_step < num:
        return _estimate_sampled(key, theta, states, data, hparams, estimators, weights, per_step)
    keys = jax.random.split(key, num)
    grads, new_states, group = [], [], []
    for est, k, s, d, h in zip(estimators, keys, states, data, hparams):
        g, s, m = est.estimate(k, theta, s, h, data=d)
        grads.append(g)
        new_states.append(s)
        group.append(m)
    grad = jax.tree.map(lambda *gs: sum(w * g for w, g in zip(weights, gs)), *grads)  # Σ_i w_i ĝ_i
    losses = jnp.stack([m["meta_loss"] for m in group])  # (G,)
    metrics = {
        "meta_loss": jnp.sum(jnp.asarray(weights, jnp.float32) * losses),
        "meta_loss_groups": losses,
        **{name: sum(m[name] for m in group) for name in _SUMMED},
    }
    return grad, tuple(new_states), metrics


_SUMMED = ("inner_steps", "num_nonfinite", "num_zeroed", "num_resets")


def _estimate_sampled(key, theta, states, data, hparams, estimators, weights, per_step):
    """`estimate_groups` on S groups drawn without replacement: Σ_{i∈S} (G/S) w_i ĝ_i."""
    num = len(estimators)
    k_pick, k_est = jax.random.split(key)
    picks = jax.random.choice(k_pick, num, (per_step,), replace=False)  # (S,) distinct group indices
    scale = jnp.asarray(weights, jnp.float32) * (num / per_step)  # (G,)

    def branch(i):
        def run(k, states):
            g, s, m = estimators[i].estimate(k, theta, states[i], hparams[i], data=data[i])
            return g, states[:i] + (s,) + states[i + 1 :], m

        return run

    branches = [branch(i) for i in range(num)]

    def slot(carry, pick_key):
        # one lax.switch inside a scan over the S slots: each group's program is compiled once, not S times
        grad, states, losses, meta_loss, summed = carry
        i, k = pick_key
        g, states, m = jax.lax.switch(i, branches, k, states)
        grad = jax.tree.map(lambda acc, x: acc + scale[i] * x, grad, g)
        losses = losses.at[i].set(m["meta_loss"])
        meta_loss = meta_loss + scale[i] * m["meta_loss"]
        summed = {name: summed[name] + m[name] for name in _SUMMED}
        return (grad, states, losses, meta_loss, summed), None

    init = (
        jax.tree.map(jnp.zeros_like, theta),
        states,
        jnp.full((num,), jnp.nan, jnp.float32),
        jnp.float32(0.0),
        {name: jnp.int32(0) for name in _SUMMED},
    )
    carry, _ = jax.lax.scan(slot, init, (picks, jax.random.split(k_est, per_step)))
    grad, states, losses, meta_loss, summed = carry
    return grad, states, {"meta_loss": meta_loss, "meta_loss_groups": losses, **summed}


def apply_outer(
    state: OuterState, grad: PyTree, meta_loss: jax.Array, outer_opt: optax.GradientTransformationExtraArgs
) -> tuple[PyTree, PyTree, jax.Array, dict[str, jax.Array]]:
    """(theta, outer optimizer state, skipped, metrics) after one update; skipped (bool) when the
    gradient or the updated theta is not finite, and then theta and the state are the old ones."""
    grad_ok = _all_finite(grad)
    safe = _tree_where(grad_ok, grad, jax.tree.map(jnp.zeros_like, grad))
    updates, opt_state = outer_opt.update(safe, state.opt_state, state.theta, loss=meta_loss)
    theta = optax.apply_updates(state.theta, updates)
    ok = grad_ok & _all_finite(theta) & _all_finite(opt_state)
    metrics = {"grad_norm": optax.tree.norm(grad), "update_norm": optax.tree.norm(updates)}
    return _tree_where(ok, theta, state.theta), _tree_where(ok, opt_state, state.opt_state), ~ok, metrics


def outer_step(
    state: OuterState,
    data: tuple,
    hparams: tuple,
    *,
    estimators: tuple,
    weights: tuple,
    outer_opt,
    per_step: int = 0,
) -> tuple[OuterState, dict[str, jax.Array]]:
    """One outer step: estimate on every group, average, update theta (skipping non-finite updates)."""
    key, k_est = jax.random.split(state.key)
    grad, est_states, metrics = estimate_groups(
        k_est, state.theta, state.estimator_states, data, hparams, estimators, weights, per_step
    )
    theta, opt_state, skipped, outer_metrics = apply_outer(state, grad, metrics["meta_loss"], outer_opt)
    num_skipped = state.num_skipped + skipped.astype(jnp.int32)
    new = OuterState(theta, opt_state, est_states, state.step + 1, key, num_skipped)
    metrics = {**metrics, **outer_metrics, "skipped": skipped.astype(jnp.int32), "num_skipped": num_skipped}
    return new, metrics


# --- building from a config -----------------------------------------------------------------------


def sample_groups(key: jax.Array, cfg: MetaTrainConfig) -> list[tuple[TaskFamily, Any, int]]:
    """G (family, static) groups sampled on the host, merged by structure: [(family, static, count)]."""
    families = (
        [get_family(cfg.family, **cfg.family_space())] if cfg.family else get_suite(cfg.suite).families()
    )
    draws = []
    for k in jax.random.split(key, cfg.num_groups):  # a family uniformly, then its static structure
        k_family, k_static = jax.random.split(k)
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
    return optax.chain(*clip, optax.with_extra_args_support(outer.transform(theta)))


def adamw_schedule(cfg: MetaTrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to ``outer_lr`` over ``warmup`` steps, then cosine decay to 0 at ``num_steps``."""
    warmup = min(cfg.warmup, cfg.num_steps - 1)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.outer_lr, warmup, max(cfg.num_steps, warmup + 1))


@dataclasses.dataclass(frozen=True)
class MetaTrainer:
    """The static structure of a meta-training run; `step` is its jitted outer step."""

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
    def build(cls, cfg: MetaTrainConfig) -> MetaTrainer:
        """Task groups sampled from ``cfg.seed``, one estimator per distinct group, the outer optimizer."""
        learned = cfg.build_learned()
        k_groups = jax.random.fold_in(jax.random.key(cfg.seed), 0)
        groups = sample_groups(k_groups, cfg)
        fields = {
            "truncation_length": cfg.truncation_length,
            "horizon": tuple(cfg.horizon),
            "valid_every": cfg.valid_every,
            "meta_split": cfg.meta_split,
            "meta_clip": cfg.meta_clip,
        }
        estimators = tuple(
            get_estimator(cfg.estimator, learned=learned, family=f, static=s, num_particles=n * cfg.num_particles,
                          **fields)
            for f, s, n in groups
        )  # fmt: skip
        hparams = []
        for est in estimators:
            h = est.default_hparams()
            hparams.append({**h, "sigma": jnp.float32(cfg.sigma)} if "sigma" in h else h)
        weights = tuple(n / cfg.num_groups for _, _, n in groups)
        theta0 = load_theta(cfg.init_theta, learned)[1] if cfg.init_theta else None  # checks the architecture
        return cls(learned, estimators, weights, outer_optimizer(cfg), tuple(hparams), cfg.groups_per_step, theta0)

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
    trainer = MetaTrainer.build(cfg)
    template = jax.eval_shape(trainer._init, jax.random.key(cfg.seed))
    state, _, step = restore_checkpoint(path, template, expect_config=checkpoint_expectation(cfg, saved))
    return trainer, state, cfg, step


# --- evaluation on held-out tasks -----------------------------------------------------------------


class HeldOutEval:
    """Final test loss of a theta's optimizer on a few held-out tasks, beside Adam at lr 1e-3 on the
    same tasks, seeds and batches (Adam is run once and cached).

    ``eval_suite="same"`` draws fresh tasks from the training distribution instead (its own key).
    """

    def __init__(self, cfg: MetaTrainConfig, learned: LearnedOptimizer):
        self.make = _transform_of(learned)  # one object per architecture: evaluations compile once
        self.steps, self.seeds = cfg.eval_steps, cfg.eval_seeds
        self.key = jax.random.fold_in(jax.random.key(cfg.seed), 3)  # not the run's key: evals change nothing
        if cfg.eval_suite == "same":
            keys = jax.random.split(jax.random.fold_in(self.key, 0), cfg.eval_tasks)
            if cfg.family:
                family = get_family(cfg.family, **cfg.family_space())
                self.tasks = [family.task(family.sample(k)) for k in keys]
            else:
                self.tasks = [f.task(c) for f, c in (get_suite(cfg.suite).sample(k) for k in keys)]
        else:  # one task per family of the suite, the smallest ones (evaluation is not free)
            tasks = get_suite(cfg.eval_suite).tasks(per_family=1, seed=cfg.seed)
            self.tasks = sorted(tasks, key=lambda t: t.num_params())[: cfg.eval_tasks]
        self.names = [t.name for t in self.tasks]
        self._adam_losses: np.ndarray | None = None

    def _options(self) -> dict:
        return {
            "num_steps": self.steps,
            "num_seeds": self.seeds,
            "eval_every": self.steps,
            "eval_splits": ("test",),
        }

    def losses(self, theta: PyTree) -> np.ndarray:
        """(tasks,) final test loss with ``theta``, mean over seeds (NaN where training diverged)."""
        theta1 = jax.tree.map(lambda x: x[None], theta)  # one hparam setting: `make` stays static
        curves = [
            evaluate_hparams(self.key, t, theta1, make=self.make, **self._options()) for t in self.tasks
        ]
        return np.array([np.mean(np.asarray(c.eval["test"]["loss"])[0, :, -1]) for c in curves])

    def adam_losses(self) -> np.ndarray:
        """(tasks,) the same for Adam at learning rate 1e-3."""
        if self._adam_losses is None:
            curves = [evaluate(self.key, t, _ADAM, **self._options()) for t in self.tasks]
            self._adam_losses = np.array([np.mean(np.asarray(c.eval["test"]["loss"])[:, -1]) for c in curves])
        return self._adam_losses

    def __call__(self, theta: PyTree) -> dict[str, Any]:
        """The ``eval/*`` metrics: per-task test losses of theta and of Adam, the fraction of tasks
        where theta wins, and the mean log ratio of the losses (negative: theta is better)."""
        mine, adam = self.losses(theta), self.adam_losses()
        return {
            "eval/test_loss": mine,
            "eval/adam_test_loss": adam,
            "eval/win_frac": float(np.mean(mine < adam)),  # NaN (diverged) never wins
            "eval/log_ratio_vs_adam": float(np.mean(np.log(mine / adam))),
        }


_ADAM = optax.adam(1e-3)


@functools.cache
def _transform_of(learned: LearnedOptimizer):
    """``learned.transform``, the same object for equal architectures (a jit static argument)."""
    return learned.transform


# --- logging --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Host arrays and floats as JSON values; NaN and inf become None."""
    array = np.asarray(value)
    if array.ndim:
        return [_jsonable(v) for v in array]
    item = array.item()
    return None if isinstance(item, float) and not math.isfinite(item) else item


class MetricsLog:
    """Metric rows to ``metrics.jsonl`` (one JSON object per line, with its ``step``) and to
    TensorBoard event files under ``tb/`` (scalars only: per-group vectors stay in the JSON)."""

    def __init__(self, out: Path, start_step: int):
        self.path = out / "metrics.jsonl"
        kept = []
        if start_step > 0 and self.path.exists():  # resumed: drop rows after the checkpoint
            kept = [line for line in self.path.read_text().splitlines() if _row_step(line) <= start_step]
        self.file = open(self.path, "w")  # noqa: SIM115  (open for the whole run; `close` closes it)
        self.file.writelines(line + "\n" for line in kept)
        self.file.flush()
        self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        for name, value in row.items():
            if name != "step" and isinstance(value, int | float):
                self.tb.add_scalar(name, value, step)

    def flush(self) -> None:
        self.file.flush()
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut by a kill: drop it


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("meta-train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[outer]:.2f} outer/s  {task.fields[inner]:,.0f} inner steps/s"),
        TextColumn("meta-loss {task.fields[loss]:.4f}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


# --- the loop -------------------------------------------------------------------------------------


def meta_train(
    config: MetaTrainConfig, *, console: Console | None = None, progress: bool = True
) -> OuterState:
    """Meta-train ``config.learned`` for ``config.num_steps`` outer steps; returns the final state.

    Writes to ``config.out``: ``config.json`` (the resolved config and the task groups),
    ``metrics.jsonl`` (every outer step; ``eval/*`` rows at evaluations), ``tb/`` (TensorBoard, if
    scalars), ``checkpoints/`` (atomic, every ``ckpt_every`` steps or
    ``ckpt_minutes`` minutes and at the end) and ``theta.safetensors`` (`save_theta`). With
    ``config.resume`` it continues from the latest checkpoint, whose config must match (all fields
    but `lopt.config.RUN_CONTROL`); the result is bitwise the same as an uninterrupted run.
    """
    cfg, console = config, console or Console()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_first = time.perf_counter()
    trainer = MetaTrainer.build(cfg)
    state, step_fn = trainer.compile(jax.random.key(cfg.seed))
    data = trainer.data()
    manager = CheckpointManager(
        out / "checkpoints",
        every_steps=cfg.ckpt_every or None,
        every_minutes=cfg.ckpt_minutes or None,
        keep=cfg.keep,
    )
    start = 0
    if cfg.resume:
        newest = latest(manager.directory)
        expect = checkpoint_expectation(cfg, read_config(newest) if newest else None)
        restored = manager.restore_latest(state, expect_config=expect)
        if restored is None:
            console.print(f"[yellow]--resume: no checkpoint in {manager.directory}, starting from step 0.[/]")
        else:
            state, _, start = restored
            console.print(f"resuming from step {start} ({list_checkpoints(manager.directory)[-1]})")
    elif list_checkpoints(manager.directory):
        raise ConfigError(
            f"{manager.directory} already holds checkpoints: pass --resume to continue that run, "
            "or choose another --out."
        )
    resolved = dataclasses.asdict(cfg)
    (out / "config.json").write_text(
        json.dumps({"config": resolved, "groups": trainer.describe()}, indent=2) + "\n"
    )
    console.print({"config": resolved, "groups": trainer.describe()})
    inner_per_step = trainer.inner_steps_per_outer_step()
    log = MetricsLog(out, start)
    evaluator = HeldOutEval(cfg, trainer.learned) if cfg.eval_every else None
    pending: list[tuple[int, dict]] = []
    t_mark, step_mark = None, start
    try:
        with _progress(console, progress) as bar:
            task = bar.add_task(
                "meta-train", total=cfg.num_steps, completed=start, outer=0.0, inner=0.0, loss=math.nan
            )
            for step in range(start + 1, cfg.num_steps + 1):
                state, metrics = step_fn(state, data, trainer.hparams)
                pending.append((step, metrics))
                last = step == cfg.num_steps
                evaluate_now = evaluator is not None and (step % cfg.eval_every == 0 or last)
                save_now = manager.should_save(step) or last
                first = t_mark is None
                if step % cfg.log_every and not (first or last or evaluate_now or save_now):
                    continue
                rows = jax.device_get(pending)
                pending = []
                now = time.perf_counter()
                if first:  # the first step includes compilation: report it, time from here
                    console.print(f"first outer step (build, compile, run): {now - t_first:.1f} s")
                    t_mark, step_mark = now, step
                rate = (step - step_mark) / (now - t_mark) if step > step_mark else 0.0
                for s, m in rows:
                    log.write(s, {**m, "outer_steps_per_s": rate, "inner_steps_per_s": rate * inner_per_step})
                t_mark, step_mark = now, step
                if evaluate_now:
                    results = evaluator(state.theta)
                    log.write(step, results)
                    console.print(
                        f"step {step}: test loss {_fmt(results['eval/test_loss'])} "
                        f"vs Adam 1e-3 {_fmt(results['eval/adam_test_loss'])} (tasks: {', '.join(evaluator.names)})"
                    )
                    t_mark = time.perf_counter()  # evaluation time is not meta-training time
                log.flush()
                if save_now:
                    manager.save(step, state, cfg.trajectory())
                loss = rows[-1][1]["meta_loss"]
                bar.update(task, completed=step, outer=rate, inner=rate * inner_per_step, loss=float(loss))
    finally:
        log.close()
    save_theta(out / "theta.safetensors", trainer.learned, state.theta)
    console.print(f"theta saved to {out / 'theta.safetensors'} (skipped updates: {int(state.num_skipped)})")
    return state


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
