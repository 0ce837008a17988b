"""The methods of `lopt tune` (`TUNERS`): each spends at most a budget of inner steps tuning one
task's hparams and returns its final theta and trajectory; the setting they share (`Setup`, the
`HParamSpace` parsed from the config). The driver is `lopt.hpo.tune`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.config import TuneConfig
from lopt.hpo.es import FixedTask, hparam_estimator
from lopt.hpo.implicit import check_ift_hparams, ift_hypergrad_task
from lopt.hpo.space import HParamSpace, kind
from lopt.hpo.truncated import online_tune
from lopt.hpo.unrolled import inner_init, inner_steps, unrolled_hypergrad
from lopt.tasks.base import Task, TaskConfig
from lopt.tasks.registry import get_family
from lopt.tuning import Search, failed, run_search, score
from lopt.validate import ConfigError

# Search ranges used when --ranges gives none: narrower than the valid ranges where those are
# absurdly wide for a search (lopt.tuning's Adam grid spans the same [1e-5, 1]).


# Search ranges used when --ranges gives none: narrower than the valid ranges where those are
# absurdly wide for a search (lopt.tuning's Adam grid spans the same [1e-5, 1]).
DEFAULT_RANGES = {"learning_rate": (1e-5, 1.0)}


def _pairs(text: str, field: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"--{field} entry {item!r} must be NAME=VALUE, e.g. learning_rate=1e-3.")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def parse_space(cfg: TuneConfig) -> HParamSpace:
    """The `HParamSpace` of the config's --optimizer / --hparams / --start / --ranges."""
    names = tuple(filter(None, (s.strip() for s in cfg.hparams.split(","))))
    try:
        start = {k: float(v) for k, v in _pairs(cfg.start, "start").items()}
        ranges = {}
        for k, v in _pairs(cfg.ranges, "ranges").items():
            lo, hi = v.split(":")
            ranges[k] = (float(lo), float(hi))
    except ValueError as e:
        raise ConfigError(
            f"--start/--ranges: {e} (write learning_rate=1e-3 and learning_rate=1e-5:1)."
        ) from None
    for name in names:
        if name in DEFAULT_RANGES and name not in ranges:
            ranges[name] = DEFAULT_RANGES[name]
    space = HParamSpace.build(cfg.optimizer, names, start=start, ranges=ranges)
    if cfg.method == "ift":
        check_ift_hparams(space)
    return space


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every method sees: the task (as a one-task family and as a `Task`) and the space."""

    family: FixedTask
    static: Any
    task: Task  # the same task, built from the unwrapped family (its name is the family's)
    space: HParamSpace
    cfg: TuneConfig

    @classmethod
    def build(cls, task_name: str, cfg: TuneConfig) -> Setup:
        space = parse_space(cfg)  # bad input fails before any data is loaded
        family = get_family(task_name)
        static = family.sample_static(jax.random.split(jax.random.key(cfg.task_seed))[0])
        fixed = FixedTask(family, cfg.task_seed)
        task = family.task(TaskConfig(static, fixed.sample_dynamic(None, static)))
        return cls(fixed, static, task, space, cfg)


@dataclasses.dataclass
class MethodResult:
    """A method's output: its final theta, its trajectory and the inner steps it spent tuning."""

    theta: dict
    trajectory: list[dict]  # one row per update / trial: inner_steps, hparams, meta_loss, ...
    inner_steps: int


def _row(setup: Setup, theta, inner_steps: int, **extra) -> dict:
    row = {"inner_steps": int(inner_steps), "hparams": setup.space.describe(theta)}
    row.update({k: (float(v) if np.isfinite(v) else None) for k, v in extra.items()})
    return row


def _clean(grad):
    return jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grad)


def _es_method(setup: Setup, budget: int, progress: Callable[[int], None]) -> MethodResult:
    cfg, space = setup.cfg, setup.space
    est = hparam_estimator(
        cfg.method,
        space,
        setup.family,
        setup.static,
        num_particles=cfg.num_particles,
        truncation_length=cfg.truncation,
        horizon=(cfg.num_steps, cfg.num_steps),
        step_weights=cfg.step_weights,
    )
    per = est.inner_steps_per_estimate()
    steps = max(1, budget // per)
    outer = optax.adam(cfg.outer_lr)
    hp = {"sigma": jnp.float32(cfg.sigma)}
    data = est.unroller.data()

    @jax.jit
    def update(key, theta, outer_state, est_state, data):
        grad, est_state, metrics = est.estimate(key, theta, est_state, hp, data=data)
        updates, outer_state = outer.update(_clean(grad), outer_state, theta)
        return (
            space.project(optax.apply_updates(theta, updates)),
            outer_state,
            est_state,
            metrics["meta_loss"],
        )

    k_init, k_run = jax.random.split(jax.random.key(cfg.seed))
    theta = space.init()
    outer_state, est_state = outer.init(theta), est.init(k_init, theta, hp)
    rows = [_row(setup, theta, 0)]
    for i, k in enumerate(jax.random.split(k_run, steps)):
        theta, outer_state, est_state, meta = update(k, theta, outer_state, est_state, data)
        rows.append(_row(setup, theta, (i + 1) * per, meta_loss=float(meta)))
        progress(per)
    return MethodResult(theta, rows, steps * per)


def _unrolled_method(setup: Setup, budget: int, progress) -> MethodResult:
    cfg, space, task = setup.cfg, setup.space, setup.task
    steps = max(1, budget // cfg.num_steps)
    outer = optax.adam(cfg.outer_lr)

    @jax.jit
    def update(key, task, theta, outer_state):
        loss, grad = unrolled_hypergrad(
            key, task, space, theta, cfg.num_steps, "outer_valid", cfg.eval_batches
        )
        updates, outer_state = outer.update(_clean(grad), outer_state, theta)
        return space.project(optax.apply_updates(theta, updates)), outer_state, loss

    theta = space.init()
    outer_state = outer.init(theta)
    rows = [_row(setup, theta, 0)]
    for i, k in enumerate(jax.random.split(jax.random.key(cfg.seed), steps)):
        theta, outer_state, loss = update(k, task, theta, outer_state)
        rows.append(_row(setup, theta, (i + 1) * cfg.num_steps, meta_loss=float(loss)))
        progress(cfg.num_steps)
    return MethodResult(theta, rows, steps * cfg.num_steps)


def _truncated_method(setup: Setup, budget: int, progress) -> MethodResult:
    cfg, space, task = setup.cfg, setup.space, setup.task
    k = cfg.truncation
    run_steps = cfg.num_steps // k * k
    runs = max(1, budget // run_steps)
    fn = jax.jit(
        lambda key, task, theta: online_tune(
            key,
            task,
            space,
            theta,
            num_steps=run_steps,
            truncation=k,
            outer_lr=cfg.outer_lr,
            num_batches=cfg.eval_batches,
        )
    )
    theta = space.init()
    rows = [_row(setup, theta, 0)]
    windows = run_steps // k
    for r, key in enumerate(jax.random.split(jax.random.key(cfg.seed), runs)):  # each run continues theta
        trace = fn(key, task, theta)
        after = jax.tree.map(lambda a, b: jnp.concatenate([a[1:], b[None]]), trace.theta, trace.final_theta)
        for j in range(windows):  # theta after window j's update
            th = jax.tree.map(lambda x, j=j: x[j], after)
            rows.append(_row(setup, th, r * run_steps + (j + 1) * k, meta_loss=float(trace.meta_loss[j])))
        theta = trace.final_theta
        progress(run_steps)
    return MethodResult(theta, rows, runs * run_steps)


def _ift_method(setup: Setup, budget: int, progress) -> MethodResult:
    cfg, space, task = setup.cfg, setup.space, setup.task
    warm = max(1, cfg.num_steps // 4)  # after the first run, each update re-converges from the last w
    updates_left = max(1, (budget - cfg.num_steps) // warm + 1)
    outer = optax.adam(cfg.outer_lr)

    train = jax.jit(
        lambda key, task, theta, state, n: inner_steps(key, task, space, theta, state, n)[0],
        static_argnums=(4,),
    )

    @jax.jit
    def update(key, task, theta, outer_state, params):
        loss, grad = ift_hypergrad_task(
            key,
            task,
            space,
            theta,
            params,
            num_batches=cfg.eval_batches,
            num_iters=cfg.ift_iters,
            damping=cfg.ift_damping,
        )
        upd, outer_state = outer.update(_clean(grad), outer_state, theta)
        return space.project(optax.apply_updates(theta, upd)), outer_state, loss

    k_init, k_run = jax.random.split(jax.random.key(cfg.seed))
    theta = space.init()
    outer_state, state = outer.init(theta), inner_init(k_init, task, space, theta)
    rows, spent = [_row(setup, theta, 0)], 0
    for i, key in enumerate(jax.random.split(k_run, updates_left)):
        k_train, k_grad = jax.random.split(key)
        n = cfg.num_steps if i == 0 else warm
        state = train(k_train, task, theta, state, n)
        theta, outer_state, loss = update(k_grad, task, theta, outer_state, state.params)
        spent += n
        rows.append(_row(setup, theta, spent, meta_loss=float(loss)))
        progress(n)
    return MethodResult(theta, rows, spent)


def search_points(space: HParamSpace, num: int, kind_: str, seed: int = 0) -> dict[str, np.ndarray]:
    """``num`` points of the space: a product grid, log-spaced (in u) with ⌊num^(1/d)⌋ values per
    hparam (``"grid"``; d = 1: ``num`` values), or log-uniform draws (``"random"``)."""
    bounds = space.bounds()
    if kind_ == "grid":
        per = max(1, math.floor(num ** (1.0 / len(space.names)) + 1e-9))
        axes = [np.linspace(*bounds[n], per) for n in space.names]
        mesh = np.meshgrid(*axes, indexing="ij")
        us = {n: m.ravel() for n, m in zip(space.names, mesh)}
    else:
        rng = np.random.default_rng(seed)
        us = {n: rng.uniform(*bounds[n], num) for n in space.names}
    values = space.values({n: jnp.asarray(u, jnp.float32) for n, u in us.items()})
    return {n: np.asarray(v, np.float32) for n, v in values.items()}


def run_trials(
    setup: Setup, values: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Full runs of every point (``num_seeds`` seeds, `lopt.tuning.run_search`: one compiled program):
    (outer-valid score (C,), test score (C,), failed (C,), seconds)."""
    cfg = setup.cfg
    num = len(next(iter(values.values())))
    trials = {**{k: np.full(num, v, np.float32) for k, v in setup.space.fixed}, **values}
    search = Search(f"{cfg.optimizer}/tune", _Make(cfg.optimizer), trials)
    t0 = time.perf_counter()
    res = run_search(
        setup.task,
        search,
        num_steps=cfg.num_steps,
        num_seeds=cfg.num_seeds,
        eval_every=cfg.num_steps,
        eval_batches=cfg.eval_batches,
        seed=cfg.seed,
    )
    return score(res, "outer_valid"), score(res, "test"), failed(res), time.perf_counter() - t0


@dataclasses.dataclass(frozen=True)
class _Make:
    """``make(hparams)`` of a baseline, hashable by name (shares compiled programs across calls)."""

    optimizer: str

    def __call__(self, hparams):
        from lopt.optimizers.baselines import get_baseline

        return get_baseline(self.optimizer).make(hparams)


def _search_method(setup: Setup, budget: int, progress) -> MethodResult:
    """grid / random: the budget in full runs, the best final outer-valid loss wins."""
    cfg = setup.cfg
    num = max(1, budget // (cfg.num_steps * cfg.num_seeds))
    values = search_points(setup.space, num, cfg.method, cfg.seed)
    num = len(next(iter(values.values())))
    valid, test, bad, _ = run_trials(setup, values)
    rows = []
    for i in range(num):
        th = {n: values[n][i] for n in setup.space.names}
        rows.append(
            {
                "inner_steps": (i + 1) * cfg.num_steps * cfg.num_seeds,
                "hparams": {n: float(v) for n, v in th.items()},
                "outer_valid": None if bad[i] else float(valid[i]),
                "test": None if bad[i] else float(test[i]),
                "diverged": bool(bad[i]),
            }
        )
    progress(num * cfg.num_steps * cfg.num_seeds)
    best = _best(valid, bad)
    theta = {n: jnp.float32(_to_u(n, values[n][best])) for n in setup.space.names}
    return MethodResult(theta, rows, num * cfg.num_steps * cfg.num_seeds)


def _to_u(name: str, value: float) -> float:
    return math.log(1.0 - value) if kind(name) == "decay" else math.log(value)


def _scores(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(outer-valid scores, failed) of trial rows (a failed trial's score is NaN)."""
    valid = np.asarray([np.nan if r["outer_valid"] is None else r["outer_valid"] for r in rows])
    return valid, np.asarray([r["diverged"] for r in rows])


def _best(valid: np.ndarray, bad: np.ndarray) -> int:
    """The trial with the lowest outer-valid score among those that did not fail (trial 0 if all did)."""
    masked = np.where(bad | ~np.isfinite(valid), np.inf, valid)
    return int(np.argmin(masked))


TUNERS: dict[str, Callable[[Setup, int, Callable[[int], None]], MethodResult]] = {
    "pes": _es_method,  # Persistent ES on truncations of full-length runs (unbiased)
    "es": _es_method,  # antithetic ES on whole runs
    "nres": _es_method,  # noise-reuse ES on truncations
    "unrolled": _unrolled_method,  # backprop through whole runs
    "truncated": _truncated_method,  # online: backprop through each window of K steps (short-horizon biased)
    "ift": _ift_method,  # implicit function theorem at the end of (warm-started) runs
    "grid": _search_method,  # log-spaced grid of full runs
    "random": _search_method,  # log-uniform random draws of full runs
}
